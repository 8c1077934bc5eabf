"""A loaded model, the object of the public Python API: `miniberts.load(path)` -> a Model that embeds, predicts and
saves.

The shape is sentence-transformers' (`SentenceTransformer(path).encode(texts)`): one object, a few verbs, and the
directory says how it pools. Settings are the CLI's: `Model.embed` and `Model.predict` take the fields of
`inference.config.EmbedConfig` / `PredictConfig`, checked by miniberts/settings.py before any file is read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_classifier, load_encoder, resolve, save_hf
from ..config import BertConfig, check_length
from ..device import autocast, pick_device, resolve_dtype
from ..errors import MinibertsError
from ..hub import local_path
from ..model import BertForSequenceClassification, BertModel
from ..model_card import CardInfo
from ..sbert import SentenceLayout, read_layout, write_layout
from ..tokenizer import WordPieceTokenizer
from . import backends
from .backends.auto import BATCH_ONE
from .backends.base import EngineClassifier, EngineEncoder
from .backends.pytorch import MaskFreeTrace
from .batching import check_finite, embed_step, run_encoded
from .config import EmbedConfig, PredictConfig, settings_of
from .packing import packed_arrays, pool_packed
from .predict import checked_logits, classify_step, has_task_head, no_head, results


class Model:
    """A loaded model: `module` (a BertModel, or a BertForSequenceClassification when the directory holds a
    fine-tuned head), its `tokenizer`, and `layout`, what a sentence-transformers directory says about pooling."""

    def __init__(self, module: nn.Module, tokenizer: WordPieceTokenizer, source: str,
                 layout: SentenceLayout | None = None, device: torch.device | None = None):
        self.device = device or pick_device()
        self.module = module.eval().to(self.device)
        self.tokenizer = tokenizer
        self.source = source
        self.layout = layout
        self._runners: dict[tuple, tuple[nn.Module, torch.dtype]] = {}  # backends made ready once, reused per call
        self._picked: dict[tuple, str] = {}  # (backend asked for, precision, single) -> the backend that runs

    @property
    def config(self) -> BertConfig:
        return self.module.cfg

    @property
    def encoder(self) -> BertModel:
        """The BERT encoder itself (inside the classifier, when there is one)."""
        return self.module.bert if isinstance(self.module, BertForSequenceClassification) else self.module

    def __repr__(self) -> str:
        cfg = self.config
        return (f"Model({self.source!r}, {type(self.module).__name__}, L{cfg.num_layers}/H{cfg.hidden_size}, "
                f"pooling={self.layout.pooling if self.layout else 'mean'!r})")

    def embed(self, texts: list[str] | str, pooling: str = "auto", normalize: bool | None = None,
              batch_size: int = 32, max_length: int | None = None, dtype: str = "auto", backend: str = "auto",
              int8: bool = False, progress: bool = False) -> np.ndarray:
        """Sentence embeddings: float32 [len(texts), hidden], one row per text in order ([hidden] for one string).

        pooling: "auto" (a sentence-transformers directory's own pooling, else "mean"), "cls" (the raw [CLS] hidden
        state), "pooler" (BERT's tanh pooled output) or "mean" (the average over real tokens). normalize: L2-normalise
        the rows; None = as the directory says (its Normalize module) under "auto", else no. max_length: tokens per
        text with [CLS]/[SEP]; None = the directory's max_seq_length, else the model's positions. dtype: "fp32" for
        exact numbers, "auto" for bf16 where the hardware has it natively. backend: what runs the encoder: "auto" (the
        fastest installed backend measured for this precision, size and batch shape; fp32 within 1e-5 of torch),
        "torch" (the reference), "onnxruntime", "openvino" or "ctranslate2" (miniberts/inference/backends); int8: int8 weights.
        """
        cfg = settings_of(EmbedConfig, pooling=pooling, normalize=normalize, batch_size=batch_size,
                          max_length=max_length, dtype=dtype, backend=backend, int8=int8)
        one = isinstance(texts, str)
        texts = _texts([texts] if one else texts)
        pooling, normalize, length = self.embedding_settings(cfg)
        check_length(length, self.config, self.source)
        if not texts:
            return np.zeros((0, self.config.hidden_size), dtype=np.float32)
        vectors = self.embed_tokens(*self.embedding_tokens(texts, length), cfg, progress)
        return vectors[0] if one else vectors

    def embedding_tokens(self, texts: list[str], max_length: int, direction: str = "right",
                         prompt_name: str | None = None) -> tuple[list[list[int]], list[list[int]]]:
        """(token ids, token type ids) per text as `embed` runs them: after `prompt(prompt_name)`, truncated to
        `max_length` (at the end, or at the beginning with `direction` "left")."""
        prompt = self.prompt(prompt_name)
        if prompt:
            texts = [prompt + t for t in texts]
        if self.layout and self.layout.lowercase:  # as sentence-transformers does before tokenizing
            texts = [t.lower() for t in texts]
        return self.tokenizer.encode(texts, None, max_length, direction=direction)

    def prompt(self, name: str | None = None) -> str:
        """The text put before each input to embed, as `SentenceTransformer.encode(prompt_name=name)` puts it: the
        sentence-transformers directory's prompt `name`, or without a name its default prompt (none unless
        config_sentence_transformers.json names one)."""
        prompts = self.layout.prompts if self.layout else {}
        if name is None:
            return prompts[self.layout.default_prompt_name] if self.layout and self.layout.default_prompt_name else ""
        if name not in prompts:
            known = ", ".join(map(repr, prompts)) or "none (config_sentence_transformers.json names none)"
            raise MinibertsError(f"prompt {name!r} is not one of {self.source}'s prompts: {known}")
        return prompts[name]

    def embed_tokens(self, ids: list[list[int]], type_ids: list[list[int]], cfg: EmbedConfig,
                     progress: bool = False, forwards: list[tuple[list[int], int]] | None = None) -> np.ndarray:
        """`embed` on texts already tokenized by `embedding_tokens`, with the settings of `cfg`: the entry point of a
        server that tokenizes off its model thread and batches requests itself. `forwards`: its own split of the
        rows into batches, (row indices, padded width) each, instead of length-sorted batches of cfg.batch_size."""
        pooling, normalize, _ = self.embedding_settings(cfg)
        runner, run_dtype = self._runner(False, cfg.backend, resolve_dtype(cfg.dtype, self.device), cfg.int8,
                                         min(cfg.batch_size, len(ids)))
        step = embed_step(runner, pooling, normalize)  # refuses an unknown pooling
        if len(ids) == 1 and isinstance(runner, EngineEncoder):  # one text on an engine: numpy only, no torch
            vectors = runner.embed_one(ids[0], type_ids[0], pooling, normalize)
        else:
            vectors = run_encoded(self.tokenizer, ids, type_ids, cfg.batch_size, step, self.device, run_dtype,
                                  "embed" if progress else "", forwards).numpy()
        check_finite(vectors, self.source)
        return vectors

    def embed_packed(self, ids: list[list[int]], type_ids: list[list[int]], cfg: EmbedConfig,
                     rows: list[list[int]], width: int) -> np.ndarray:
        """`embed_tokens` in one forward of packed rows: `rows` (packing.pack_rows of these inputs' lengths) of at
        most `width` tokens, on cfg's backend where it runs them (`packs`: a server's pass of short inputs)."""
        pooling, normalize, _ = self.embedding_settings(cfg)
        packed, hidden = self._run_packed(ids, type_ids, cfg, rows, width)
        with torch.no_grad():
            if pooling == "pooler":
                vectors = self._pooler(pool_packed(hidden, packed, "cls"))
            else:
                vectors = torch.from_numpy(pool_packed(hidden, packed, pooling))
            vectors = (F.normalize(vectors, dim=-1) if normalize else vectors).cpu().numpy()
        check_finite(vectors, self.source)
        return vectors

    def predict_packed(self, ids: list[list[int]], type_ids: list[list[int]], cfg: PredictConfig,
                       rows: list[list[int]], width: int) -> torch.Tensor:
        """`predict_tokens` in one forward of packed rows, as `embed_packed`; the pooler and the head run in torch."""
        if not isinstance(self.module, BertForSequenceClassification):
            raise no_head(self.source)
        packed, hidden = self._run_packed(ids, type_ids, cfg, rows, width)
        with torch.no_grad():
            logits = self.module.classifier(self._pooler(pool_packed(hidden, packed, "cls"))).float().cpu()
        check_finite(logits, self.source)
        return logits

    def packs(self, cfg: EmbedConfig | PredictConfig) -> bool:
        """Whether `embed_packed` / `predict_packed` run with these settings: on torch, or on an engine with a packed
        graph (OpenVINO's; not ONNX Runtime's or CTranslate2's)."""
        return self._packed_forward(cfg) is not None

    def _packed_forward(self, cfg: EmbedConfig | PredictConfig) -> Callable[..., np.ndarray] | None:
        """What runs a forward of packed rows with these settings (`BertModel.packed_hidden`'s arguments, int64
        numpy -> float32 numpy hidden states): the engine's packed graph, or the torch encoder itself under the
        settings' autocast; None where neither runs them."""
        runner, run_dtype = self._runner(False, cfg.backend, resolve_dtype(cfg.dtype, self.device), cfg.int8,
                                         cfg.batch_size)
        if isinstance(runner, EngineEncoder):
            return runner.run_packed if runner.packs() else None
        encoder = runner.model if isinstance(runner, MaskFreeTrace) else runner  # its trace is of padded batches
        return functools.partial(self._torch_packed, encoder, run_dtype) if isinstance(encoder, BertModel) else None

    def _torch_packed(self, encoder: BertModel, dtype: torch.dtype, *arrays: np.ndarray) -> np.ndarray:
        """One eager forward of packed rows: a few dozen ops however many inputs the rows hold (the padded path
        splits a pass into several forwards, each with its own host work), so fewer launches on a GPU."""
        with torch.no_grad(), autocast(self.device, dtype):
            hidden = encoder.packed_hidden(*(torch.from_numpy(a).to(self.device) for a in arrays))
        return hidden.float().cpu().numpy()

    def _run_packed(self, ids, type_ids, cfg, rows, width):
        forward = self._packed_forward(cfg)
        if forward is None:
            raise MinibertsError(f"packed rows need torch or an engine that runs them (openvino), not {cfg.backend}")
        packed = packed_arrays(ids, type_ids, rows, width)
        return packed, forward(packed.input_ids, packed.token_type_ids, packed.position_ids, packed.segment_ids)

    def _pooler(self, cls: np.ndarray) -> torch.Tensor:
        """BERT's pooled output (tanh of the pooler on [CLS]) of float32 [N, H] [CLS] states, in fp32, on the
        model's device."""
        return torch.tanh(self.encoder.pooler(torch.from_numpy(cls).to(self.device)))

    def embedding_settings(self, cfg: EmbedConfig) -> tuple[str, bool, int]:
        """(pooling, normalize, max_length) that `cfg` means for this model: "auto" and the None defaults come from
        the sentence-transformers directory, else mean pooling, no normalisation and the model's positions."""
        st = self.layout
        auto = cfg.pooling == "auto"
        pooling = (st.pooling if st else "mean") if auto else cfg.pooling
        normalize = cfg.normalize if cfg.normalize is not None else bool(auto and st and st.normalize)
        length = cfg.max_length or (st.max_length if st else None) or self.config.max_position_embeddings
        return pooling, normalize, length

    def predict(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64, max_length: int = 128,
                dtype: str = "auto", backend: str = "auto", int8: bool = False, progress: bool = False) -> list:
        """A fine-tuned classifier's {"label": name, "probabilities": {name: p}} per text (or text pair), or a
        regressor's float score per text, in order. `pairs`: the second texts of sentence-pair tasks. `backend`,
        `int8`: as in `embed`."""
        cfg = settings_of(PredictConfig, max_length=max_length, batch_size=batch_size, dtype=dtype, backend=backend,
                          int8=int8)
        if not isinstance(self.module, BertForSequenceClassification):
            raise no_head(self.source)
        texts = _texts(texts)
        if pairs is not None and len(_texts(pairs)) != len(texts):
            raise MinibertsError(f"predict: {len(texts)} texts but {len(pairs)} pairs (one second text per text)")
        if not texts:
            return []
        runner, run_dtype = self._runner(True, cfg.backend, resolve_dtype(cfg.dtype, self.device), cfg.int8,
                                         min(cfg.batch_size, len(texts)))
        logits = checked_logits(self.module, self.tokenizer, texts, pairs, cfg, self.device, run_dtype, self.source,
                                "predict" if progress else "", runner)
        return results(logits, self.config.id2label, self.config.regression)

    def predict_tokens(self, ids: list[list[int]], type_ids: list[list[int]], cfg: PredictConfig,
                       forwards: list[tuple[list[int], int]] | None = None) -> torch.Tensor:
        """The classifier's float32 logits [N, labels] for texts (or pairs) already tokenized (`tokenizer.encode`):
        `predict` for a server that batches requests itself; `predict.results` turns them into labels. `forwards`:
        as in `embed_tokens`."""
        if not isinstance(self.module, BertForSequenceClassification):
            raise no_head(self.source)
        runner, run_dtype = self._runner(True, cfg.backend, resolve_dtype(cfg.dtype, self.device), cfg.int8,
                                         min(cfg.batch_size, len(ids)))
        logits = run_encoded(self.tokenizer, ids, type_ids, cfg.batch_size, classify_step(runner), self.device,
                             run_dtype, forwards=forwards)
        check_finite(logits, self.source)
        return logits

    def _runner(self, head: bool, backend: str, dtype: torch.dtype, int8: bool, batch_size: int
                ) -> tuple[nn.Module, torch.dtype]:
        """What runs the encoder (`head`: with the classifier head) and the autocast dtype to run it under, made once
        per setting. torch bf16 autocasts the fp32 weights rather than casting them in place (backends' one-shot
        path), so the same Model still runs exact fp32 afterwards."""
        module = self.module if head else self.encoder
        precision = backends.precision_of(dtype, int8)
        setting = (backend, precision, batch_size <= BATCH_ONE)
        if setting not in self._picked:  # auto's pick looks up every engine's modules: once per setting, not per call
            self._picked[setting] = backends.resolve(backend, self.config, precision, batch_size, self.device)
        name = self._picked[setting]  # auto's pick, or `backend`
        if name == "torch" and precision == "bf16":
            return module, dtype
        key = (head, name, precision)
        if key not in self._runners:
            if head and name != "torch":  # the head on the encoder's engine: one exported graph and runtime, not two
                engine, run_dtype = self._runner(False, name, dtype, int8, batch_size)
                self._runners[key] = EngineClassifier(engine, self.module), run_dtype
            else:
                make = backends.for_classifier if head else backends.for_encoder
                self._runners[key] = make(module, name, precision, batch_size, self.device, tokenizer=self.tokenizer)
        return self._runners[key]

    def save(self, out_dir: str | Path) -> Path:
        """Write the Hugging Face layout (config.json, model.safetensors, vocab and tokenizer files) that
        `transformers` and `miniberts.load` read; a model loaded from a sentence-transformers directory also gets
        that directory's pooling files, so the copy embeds the same."""
        out = save_hf(self.module, self.tokenizer, out_dir, CardInfo(base_models=[self.source]))
        if self.layout:
            write_layout(self.layout, out, self.config.hidden_size)
        return out


def load(path_or_preset: str | Path, device: str | torch.device | None = None) -> Model:
    """A model directory (Hugging Face, Google TF or sentence-transformers layout), a Hugging Face Hub id
    ("org/name[@revision]", "released:tiny": miniberts/hub.py) or a preset name ("tiny", "4-256", ...: random
    initialisation). A directory with a fine-tuned head loads as a classifier/regressor, which can
    both `predict` and `embed`; any other as an encoder. `device`: "cpu", "cuda", ... (default: CUDA when present)."""
    path = local_path(path_or_preset)
    layout = read_layout(path) if path.is_dir() else None
    ckpt = resolve(layout.model_dir if layout else path_or_preset)
    module, tokenizer = load_classifier(ckpt) if has_task_head(ckpt) else load_encoder(ckpt)
    return Model(module, tokenizer, str(path_or_preset), layout, torch.device(device) if device else None)


def _texts(texts) -> list[str]:
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise MinibertsError(f"texts must be a list of strings, got {type(texts).__name__}"
                             + (" with other items" if isinstance(texts, (list, tuple)) else ""))
    return list(texts)
