"""Checkpoints: read the Hugging Face layout and Google's original TF release; write the Hugging Face layout.

One declarative table, `KEY_MAP`, says where each of our tensors lives in both foreign formats (litgpt's approach).
Every foreign tensor is either mapped, known to be redundant (tied weights, optimizer slots, step counters), or an
error naming it: nothing is silently ignored. Google's `kernel`s are [in, out] and are transposed; our fused QKV
projection is the concatenation of the three foreign ones.

References: google-research/bert modeling.py, run_pretraining.py, run_classifier.py (TF names);
transformers/models/bert/modeling_bert.py (HF names).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import BertConfig, check_length, find_preset
from .errors import CheckpointError
from .fileio import atomic_path, atomic_write_text, check_folder, output_folder
from .hub import local_path
from .model_card import CardInfo, write_card
from .model import BertForPreTraining, BertForSequenceClassification, BertModel
from .tokenizer import BUILTIN_VOCAB, FILES as TOKENIZER_FILES, WordPieceTokenizer, open_vocab

Q, K, V = "query", "key", "value"

# (ours, Hugging Face, Google TF). "{i}" stands for the layer index; a tuple of foreign names is concatenated along
# dim 0 into our tensor (and split back on save).
KEY_MAP: list[tuple[str, str | tuple[str, ...], str | tuple[str, ...]]] = [
    ("bert.embeddings.word.weight", "bert.embeddings.word_embeddings.weight", "bert/embeddings/word_embeddings"),
    ("bert.embeddings.position.weight", "bert.embeddings.position_embeddings.weight", "bert/embeddings/position_embeddings"),
    ("bert.embeddings.token_type.weight", "bert.embeddings.token_type_embeddings.weight", "bert/embeddings/token_type_embeddings"),
    ("bert.embeddings.norm.weight", "bert.embeddings.LayerNorm.weight", "bert/embeddings/LayerNorm/gamma"),
    ("bert.embeddings.norm.bias", "bert.embeddings.LayerNorm.bias", "bert/embeddings/LayerNorm/beta"),
    ("bert.layers.{i}.attn.qkv.weight",
     tuple(f"bert.encoder.layer.{{i}}.attention.self.{p}.weight" for p in (Q, K, V)),
     tuple(f"bert/encoder/layer_{{i}}/attention/self/{p}/kernel" for p in (Q, K, V))),
    ("bert.layers.{i}.attn.qkv.bias",
     tuple(f"bert.encoder.layer.{{i}}.attention.self.{p}.bias" for p in (Q, K, V)),
     tuple(f"bert/encoder/layer_{{i}}/attention/self/{p}/bias" for p in (Q, K, V))),
    ("bert.layers.{i}.attn.out.weight", "bert.encoder.layer.{i}.attention.output.dense.weight", "bert/encoder/layer_{i}/attention/output/dense/kernel"),
    ("bert.layers.{i}.attn.out.bias", "bert.encoder.layer.{i}.attention.output.dense.bias", "bert/encoder/layer_{i}/attention/output/dense/bias"),
    ("bert.layers.{i}.norm1.weight", "bert.encoder.layer.{i}.attention.output.LayerNorm.weight", "bert/encoder/layer_{i}/attention/output/LayerNorm/gamma"),
    ("bert.layers.{i}.norm1.bias", "bert.encoder.layer.{i}.attention.output.LayerNorm.bias", "bert/encoder/layer_{i}/attention/output/LayerNorm/beta"),
    ("bert.layers.{i}.fc.weight", "bert.encoder.layer.{i}.intermediate.dense.weight", "bert/encoder/layer_{i}/intermediate/dense/kernel"),
    ("bert.layers.{i}.fc.bias", "bert.encoder.layer.{i}.intermediate.dense.bias", "bert/encoder/layer_{i}/intermediate/dense/bias"),
    ("bert.layers.{i}.proj.weight", "bert.encoder.layer.{i}.output.dense.weight", "bert/encoder/layer_{i}/output/dense/kernel"),
    ("bert.layers.{i}.proj.bias", "bert.encoder.layer.{i}.output.dense.bias", "bert/encoder/layer_{i}/output/dense/bias"),
    ("bert.layers.{i}.norm2.weight", "bert.encoder.layer.{i}.output.LayerNorm.weight", "bert/encoder/layer_{i}/output/LayerNorm/gamma"),
    ("bert.layers.{i}.norm2.bias", "bert.encoder.layer.{i}.output.LayerNorm.bias", "bert/encoder/layer_{i}/output/LayerNorm/beta"),
    ("bert.pooler.weight", "bert.pooler.dense.weight", "bert/pooler/dense/kernel"),
    ("bert.pooler.bias", "bert.pooler.dense.bias", "bert/pooler/dense/bias"),
    ("mlm.dense.weight", "cls.predictions.transform.dense.weight", "cls/predictions/transform/dense/kernel"),
    ("mlm.dense.bias", "cls.predictions.transform.dense.bias", "cls/predictions/transform/dense/bias"),
    ("mlm.norm.weight", "cls.predictions.transform.LayerNorm.weight", "cls/predictions/transform/LayerNorm/gamma"),
    ("mlm.norm.bias", "cls.predictions.transform.LayerNorm.bias", "cls/predictions/transform/LayerNorm/beta"),
    ("mlm.bias", "cls.predictions.bias", "cls/predictions/output_bias"),
    ("nsp.weight", "cls.seq_relationship.weight", "cls/seq_relationship/output_weights"),
    ("nsp.bias", "cls.seq_relationship.bias", "cls/seq_relationship/output_bias"),
    ("classifier.weight", "classifier.weight", "output_weights"),  # run_classifier.py's names
    ("classifier.bias", "classifier.bias", "output_bias"),
]

# Foreign tensors that carry no information of their own.
REDUNDANT = {
    "hf": re.compile(r"^(bert\.)?embeddings\.position_ids$|^cls\.predictions\.decoder\.(weight|bias)$"),  # buffer; tied
    "tf": re.compile(r"(^|/)global_step$|/adam_[mv]$|^bad_steps$|^loss_scale$|^good_steps$"),  # step; Adam slots
}
HEAD_PREFIXES = ("mlm.", "nsp.", "classifier.")
LEGACY_HF = re.compile(r"\.(gamma|beta)$")

log = logging.getLogger("miniberts")


@dataclass
class Checkpoint:
    """Weights under our names, the config, and the vocabulary, whatever layout they came from."""

    config: BertConfig
    state: dict[str, torch.Tensor]
    vocab_dir: Path  # holds vocab.txt (and maybe tokenizer_config.json)
    source: str

    def has_head(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self.state)


def _expand(name: str | tuple[str, ...], layer: int) -> tuple[str, ...]:
    names = (name,) if isinstance(name, str) else name
    return tuple(n.format(i=layer) for n in names)


def _entries(num_layers: int):
    """(ours, hf names, tf names) for every concrete tensor of a model with `num_layers` layers."""
    for ours, hf, tf in KEY_MAP:
        for i in range(num_layers) if "{i}" in ours else [0]:
            yield ours.format(i=i), _expand(hf, i), _expand(tf, i)


def from_foreign(foreign: dict[str, torch.Tensor], fmt: str, num_layers: int, where: str) -> dict[str, torch.Tensor]:
    """Map a foreign state dict ("hf" or "tf") to our names. Leftover foreign tensors are an error."""
    if fmt == "hf":
        # Older HF checkpoints (bert-base-uncased's pytorch_model.bin) name LayerNorm parameters gamma/beta, as
        # Google's TF did; transformers renames them on load (PreTrainedModel._fix_state_dict_key_on_load).
        foreign = {LEGACY_HF.sub(lambda m: ".weight" if m.group(1) == "gamma" else ".bias", k): v
                   for k, v in foreign.items()}
    if fmt == "hf" and not any(k.startswith("bert.") for k in foreign):  # a bare BertModel checkpoint
        foreign = {(k if k.startswith(("cls.", "classifier.")) else "bert." + k): v for k, v in foreign.items()}
    used, state = set(), {}
    for ours, hf, tf in _entries(num_layers):
        names = hf if fmt == "hf" else tf
        present = [n for n in names if n in foreign]
        if not present:
            continue
        if len(present) != len(names):
            raise CheckpointError(f"{where}: {ours} needs {list(names)} but only {present} are present")
        parts = [foreign[n].t() if n.endswith("/kernel") else foreign[n] for n in names]
        if len({tuple(p.shape) for p in parts}) > 1:  # else torch.cat raises a stack trace, or hides which part is wrong
            shapes = {n: tuple(foreign[n].shape) for n in names}
            raise CheckpointError(f"{where}: {ours} is joined from tensors that must share one shape, got {shapes}")
        state[ours] = torch.cat(parts, 0) if len(parts) > 1 else parts[0]
        used.update(names)
    leftover = sorted(k for k in foreign if k not in used and not REDUNDANT[fmt].search(k))
    if leftover:
        more = f" (and {len(leftover) - 5} more)" if len(leftover) > 5 else ""
        raise CheckpointError(f"{where}: unknown variables {leftover[:5]}{more} (wrong number of layers in the config?)")
    return state


def to_hf(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Our names -> Hugging Face names (encoder-only models lose the `bert.` prefix, as BertModel saves)."""
    out = {}
    for ours, hf, _ in _entries(num_layers):
        if ours not in state:
            continue
        for name, part in zip(hf, state[ours].chunk(len(hf), 0)):
            out[name] = part.contiguous()
    if not any(k.startswith(HEAD_PREFIXES) for k in state):
        out = {k.removeprefix("bert."): v for k, v in out.items()}
    return out


# --- reading --------------------------------------------------------------------------------------------------

def read_checkpoint(src: str | Path) -> Checkpoint:
    """A Hugging Face directory (config.json + model.safetensors | pytorch_model.bin) or a Google TF release
    directory (bert_config.json + bert_model.ckpt.index/.data-*), given as a path or a Hub id (`miniberts.hub`)."""
    src = local_path(src)
    if not src.is_dir():
        raise CheckpointError(f"{src}: not a directory (expected a Hugging Face or Google TF model directory)")
    if (src / "config.json").is_file():
        return _read_hf(src)
    if (src / "bert_config.json").is_file():
        return _read_tf(src)
    raise CheckpointError(f"{src}: no config.json (Hugging Face layout) or bert_config.json (Google TF layout) found")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def check_finite_weights(tensors: dict, where: str | Path) -> None:
    """Refuse weights holding NaN or infinite values (a corrupted download, a diverged run): they would load and
    run, and every output would be NaN."""
    for name, tensor in tensors.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.numel() and not all(
                torch.isfinite(x) for x in torch.aminmax(tensor)):  # NaN propagates: one pass, no [N] bool copy
            raise CheckpointError(f"{where}: tensor {name} holds NaN or infinite values (a corrupted file or a "
                                  "diverged run); refused")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of one weights file, safetensors or a weights-only PyTorch pickle. Whatever the damage (a
    truncated download, a zero-byte file, garbage), one line: `FILE: corrupt or truncated (...)`. A pickle that
    asks to build arbitrary objects is refused as such (nothing is executed: weights_only=True); so are weights
    with NaN or infinite values."""
    try:
        tensors = load_file(path) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu",
                                                                                    weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only" in str(e):
            raise CheckpointError(f"{path}: not a weights-only PyTorch file (it asks to unpickle arbitrary objects; "
                                  "refused, nothing was executed)") from None
        raise CheckpointError(f"{path}: corrupt or truncated ({_first_line(e)})") from None
    except Exception as e:  # safetensors and torch raise several types (SafetensorError, RuntimeError, EOFError, ...)
        raise CheckpointError(f"{path}: corrupt or truncated ({_first_line(e)})") from None
    if isinstance(tensors, dict):
        check_finite_weights(tensors, path)
    return tensors


def _read_hf(src: Path) -> Checkpoint:
    cfg = BertConfig.from_hf_json(src / "config.json")
    path = next((src / n for n in ("model.safetensors", "pytorch_model.bin") if (src / n).is_file()), None)
    if path is None:
        raise CheckpointError(f"{src}: neither model.safetensors nor pytorch_model.bin found")
    foreign = read_weights(path)
    if not isinstance(foreign, dict) or not all(isinstance(v, torch.Tensor) for v in foreign.values()):
        raise CheckpointError(f"{path}: not a state dict (expected a mapping of names to tensors)")
    state = from_foreign(foreign, "hf", cfg.num_layers, str(path))
    return Checkpoint(cfg, state, src, str(src))


def _read_tf(src: Path) -> Checkpoint:
    from .tf_checkpoint import read_tf_checkpoint

    cfg = BertConfig.from_google_json(src / "bert_config.json")
    indexes = sorted(src.glob("*.ckpt*.index"))
    if not indexes:
        raise CheckpointError(f"{src}: no TF checkpoint (*.ckpt.index) next to bert_config.json")
    prefix = indexes[-1].with_suffix("")  # e.g. bert_model.ckpt (the latest of model.ckpt-N when several)
    foreign = {k: torch.from_numpy(v.copy()) for k, v in read_tf_checkpoint(prefix).items()}
    check_finite_weights(foreign, prefix)
    state = from_foreign(foreign, "tf", cfg.num_layers, str(prefix))
    if "classifier.weight" in state:  # run_classifier.py's output layer: its width is the number of labels
        cfg = cfg.with_task([str(i) for i in range(state["classifier.weight"].shape[0])], regression=False)
    return Checkpoint(cfg, state, src, str(src))


# --- building models ------------------------------------------------------------------------------------------

def load_state(model: nn.Module, state: dict[str, torch.Tensor], where: str, allow_new: tuple[str, ...] = ()) -> list[str]:
    """Copy `state` (our names) into `model`; names starting with `allow_new` may be missing (a new head).
    Returns the names that were newly initialised. Wrong shapes and leftovers are errors."""
    if isinstance(model, BertModel):
        state = {k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")}
    expected = model.state_dict()
    for name, tensor in state.items():
        if name not in expected:
            raise CheckpointError(f"{where}: tensor {name} has no place in the model")
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{where}: tensor {name} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[name].shape)}"
            )
    missing = [k for k in expected if k not in state]
    not_allowed = [k for k in missing if not k.startswith(allow_new)]
    if not_allowed:
        raise CheckpointError(f"{where}: missing tensors {not_allowed[:5]}")
    model.load_state_dict(state, strict=False)
    return missing


def resolve(model: str | Path) -> Checkpoint:
    """A model directory, a Hub id (`org/name[@revision]`, `released:tiny`: see miniberts/hub.py), or a preset name
    (random initialisation with the built-in uncased vocab)."""
    path = local_path(model)
    if path.exists():
        return read_checkpoint(path)
    preset = find_preset(str(model))
    if preset is None:
        raise CheckpointError(f"{model}: neither a model directory nor a preset (try `miniberts models`)")
    return Checkpoint(preset.config(), {}, BUILTIN_VOCAB.parent, f"preset {preset.name}")


def read_config(model: str | Path) -> tuple[BertConfig, str]:
    """(config, where it came from) of a model directory or preset, without reading any weights: settings that
    depend on the model (`--max-length` against its positions) are checked before a data file is opened."""
    path = local_path(model)
    if not path.exists():
        preset = resolve(model)  # a preset holds no weights to read (or the one-line "neither ... nor" error)
        return preset.config, preset.source
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (expected a Hugging Face or Google TF model directory)")
    if (path / "config.json").is_file():
        return BertConfig.from_hf_json(path / "config.json"), str(path / "config.json")
    if (path / "bert_config.json").is_file():
        return BertConfig.from_google_json(path / "bert_config.json"), str(path / "bert_config.json")
    return read_checkpoint(path).config, str(path)  # raises the reader's one-line error for what is missing


def check_max_length(model: str | Path, max_length: int) -> None:
    """A sequence length the model's learned positions can hold, checked from its config alone (before any data
    file is opened); the one-line error names the model's config file."""
    config, source = read_config(model)
    check_length(max_length, config, f"the model {model} ({source})")


def load_tokenizer(ckpt: Checkpoint, vocab: str | Path = "", cased: bool = False) -> WordPieceTokenizer:
    """The checkpoint's own tokenizer, or `vocab` (`--vocab`: a vocab.txt or a directory holding one) with the
    casing `cased` asks for. A checkpoint with weights must agree with the vocabulary's size."""
    own = "" if ckpt.vocab_dir == BUILTIN_VOCAB.parent else ckpt.vocab_dir
    tokenizer = open_vocab(vocab or own, cased)
    if ckpt.state and len(tokenizer) != ckpt.config.vocab_size:  # the word embeddings have vocab_size rows
        raise CheckpointError(f"{tokenizer.vocab_path}: {len(tokenizer)} tokens, but the model's vocab_size is "
                              f"{ckpt.config.vocab_size}")
    return tokenizer


def _model_and_tokenizer(model: "str | Path | Checkpoint", vocab: str | Path, cased: bool
                         ) -> tuple[Checkpoint, WordPieceTokenizer]:
    """The checkpoint (read here unless given already read) and its tokenizer; a preset (random weights) takes the
    size of the vocabulary it is given."""
    ckpt = model if isinstance(model, Checkpoint) else resolve(model)
    tokenizer = load_tokenizer(ckpt, vocab, cased)
    if not ckpt.state:
        ckpt = dataclasses.replace(ckpt, config=dataclasses.replace(ckpt.config, vocab_size=len(tokenizer)))
    return ckpt, tokenizer


def load_encoder(model: "str | Path | Checkpoint", vocab: str | Path = "", cased: bool = False
                 ) -> tuple[BertModel, WordPieceTokenizer]:
    """An encoder (BertModel) from a directory, a preset name, or a Checkpoint already read."""
    ckpt, tokenizer = _model_and_tokenizer(model, vocab, cased)
    encoder = BertModel(ckpt.config)
    if ckpt.state:
        new = load_state(encoder, ckpt.state, ckpt.source, allow_new=("pooler.",))
        if new:
            log.warning("%s has no pooler (a masked-LM checkpoint): the pooled output is untrained", ckpt.source)
    return encoder, tokenizer


def load_pretraining(model: str | Path, nsp: bool = False, vocab: str | Path = "", cased: bool = False
                     ) -> tuple[BertForPreTraining, WordPieceTokenizer]:
    """For pre-training: the MLM (and NSP) heads are new when the checkpoint has none."""
    ckpt, tokenizer = _model_and_tokenizer(model, vocab, cased)
    net = BertForPreTraining(ckpt.config, nsp=nsp)
    if ckpt.state:
        state = {k: v for k, v in ckpt.state.items() if not k.startswith("classifier.") and (nsp or not k.startswith("nsp."))}
        load_state(net, state, ckpt.source, allow_new=("mlm.", "nsp.", "bert.pooler."))
    return net, tokenizer


def load_classifier(model: "str | Path | Checkpoint", id2label: list[str] | None = None, regression: bool | None = None,
                    vocab: str | Path = "", cased: bool = False) -> tuple[BertForSequenceClassification, WordPieceTokenizer]:
    """A classifier; its head is new unless the checkpoint has one with the same labels."""
    ckpt, tokenizer = _model_and_tokenizer(model, vocab, cased)
    cfg = ckpt.config
    if id2label is not None or regression is not None:
        cfg = cfg.with_task(id2label or [], bool(regression))
    net = BertForSequenceClassification(cfg)
    state = {k: v for k, v in ckpt.state.items() if not k.startswith(("mlm.", "nsp."))}
    same_head = ckpt.has_head("classifier.") and (ckpt.config.id2label, ckpt.config.regression) == (cfg.id2label, cfg.regression)
    if not same_head:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    if state:
        load_state(net, state, ckpt.source, allow_new=("classifier.", "bert.pooler."))
    return net, tokenizer


# --- writing --------------------------------------------------------------------------------------------------

ARCHITECTURES = {BertModel: "BertModel", BertForPreTraining: "BertForPreTraining", BertForSequenceClassification: "BertForSequenceClassification"}


def save_hf(model: nn.Module, tokenizer: WordPieceTokenizer, out_dir: str | Path, card: CardInfo | None = None) -> Path:
    """Write the Hugging Face layout: config.json, model.safetensors, vocab + tokenizer files, and the model card
    README.md (`card`: what the caller knows of the model's origin). Each file is written atomically;
    `transformers.*.from_pretrained(out_dir)` loads it unchanged."""
    out_dir = Path(out_dir)
    model = getattr(model, "module", model)  # unwrap DDP
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    cfg = model.cfg
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    if isinstance(model, BertModel):
        state = {"bert." + k: v for k, v in state.items()}
    arch = ARCHITECTURES[type(model)]
    if arch == "BertForPreTraining" and model.nsp is None:
        # Masked LM alone never trains the pooler, and HF's BertForMaskedLM has none: leave it out.
        arch = "BertForMaskedLM"
        state = {k: v for k, v in state.items() if not k.startswith("bert.pooler.")}
    tensors = to_hf(state, cfg.num_layers)
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    atomic_write_text(out_dir / "config.json", json.dumps(cfg.to_hf_dict([arch]), indent=2))
    tokenizer.save(out_dir)
    write_card(out_dir, card)
    return out_dir


HF_FILES = ("config.json", "model.safetensors", "README.md", *TOKENIZER_FILES)  # what `save_hf` writes


def convert(src: str | Path, out: str | Path, force: bool = False) -> Path:
    """Any layout we read -> Hugging Face layout, keeping whatever heads the source has. `out` follows the folder
    rule (fileio.output_folder; `force` writes beside files miniberts did not write, never over them)."""
    check_folder(Path(out), HF_FILES, force)  # before the weights are read
    ckpt = read_checkpoint(src)
    if ckpt.has_head("classifier."):
        model: nn.Module = BertForSequenceClassification(ckpt.config)
    elif ckpt.has_head("mlm."):
        model = BertForPreTraining(ckpt.config, nsp=ckpt.has_head("nsp."))
    else:
        model = BertModel(ckpt.config)
    load_state(model, ckpt.state, ckpt.source, allow_new=("bert.pooler.",))
    with output_folder(Path(out), HF_FILES, force):
        return save_hf(model, load_tokenizer(ckpt), out, CardInfo("convert", [str(src)]))
