"""Inference backends: the same encoder run by PyTorch or by an engine that runs an exported graph of it.

Every backend is an `nn.Module` with the encoder's own signature, `forward(input_ids, attention_mask,
token_type_ids) -> (hidden [B, S, H], pooled [B, H])` on torch tensors (float32 out), so the batching and pooling
code (inference/batching.py, inference/predict.py) runs any of them unchanged; the engines' `run(...)` takes and returns numpy arrays.

| backend | precisions | artifact (exported once per weights fingerprint, cache.py) | extra |
|---|---|---|---|
| torch | fp32 (batches without padding: a frozen trace, pytorch.py), bf16 (autocast, weights cast once), int8 (dynamic, fast_paths.quantize_int8) | none | (core) |
| onnxruntime | fp32 (graph fused by onnxruntime.transformers.optimizer), int8 (smoothquant.py: calibrated on real text) | model.onnx (int8: per weights and calibration) | onnx |
| openvino | fp32 (INFERENCE_PRECISION_HINT f32), bf16 (hint bf16; OpenVINO runs f32 where the CPU lacks it), int8 (ov_int8.py: NNCF static int8 calibrated on real text) | model.xml (int8: per weights and calibration) | engines |
| ctranslate2 | fp32 (float32), int8 (int8 weights, VNNI GEMMs) | model.bin | engines |

`auto` picks one from auto.py's table by model size, batch shape and precision, among the installed engines.
`export_engine` writes an engine's artifact to a folder of the user's (`miniberts export --engine`).
A backend asked for by name but not installed is a one-line error naming the extra to install.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from torch import nn

from ...checkpoint import load_encoder
from ...errors import MinibertsError
from ...fileio import OutputError, build_into, check_folder
from ...model import BertForSequenceClassification, BertModel
from ...tokenizer import WordPieceTokenizer
from .auto import choose
from .base import EngineClassifier, EngineEncoder
from .pytorch import MaskFreeTrace
from .ov_int8 import nncf_installed
from .smoothquant import calibration_ids, calibration_installed

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino", "ctranslate2")
ENGINES = BACKENDS[2:]
PRECISIONS = ("fp32", "bf16", "int8")
EXTRAS = {"onnxruntime": "pip install 'miniberts[onnx]'", "openvino": "pip install 'miniberts[engines]'",
          "ctranslate2": "pip install 'miniberts[engines]'"}
# What each engine needs importable: the runtime itself and what builds its artifact (ONNX export; the CTranslate2
# converter reads a Hugging Face directory through transformers).
REQUIRES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx"),
            "ctranslate2": ("ctranslate2", "transformers")}


def missing_module(backend: str) -> str | None:
    """The first module `backend` needs that is not installed, or None. Looked up without importing it: `auto` asks
    about every engine on each process's first call, and importing them all (onnx, openvino, transformers) cost
    `miniberts embed` seconds of start-up for engines it then did not run."""
    return next((m for m in REQUIRES.get(backend, ()) if importlib.util.find_spec(m) is None), None)


def installed() -> list[str]:
    return ["torch"] + [b for b in ENGINES if missing_module(b) is None]


def calibrated_int8_ready(backend: str) -> bool:
    """Whether `backend`'s calibrated int8 can be built here: its calibration text, and NNCF for OpenVINO."""
    return calibration_installed() and (backend != "openvino" or nncf_installed())


def available(precision: str) -> list[str]:
    """The installed backends that can run `precision` here: the calibrated int8 of ONNX Runtime and OpenVINO also
    needs what builds it (calibrated_int8_ready)."""
    return [b for b in installed()
            if not (b in ("onnxruntime", "openvino") and precision == "int8" and not calibrated_int8_ready(b))]


def require(backend: str, flag: str = "--backend") -> None:
    """A one-line error naming the extra when `backend` cannot run here (`flag`: the option that chose it)."""
    if backend not in BACKENDS:
        raise MinibertsError(f"{flag} must be one of {', '.join(BACKENDS)}, got {backend!r}")
    module = missing_module(backend)
    if module is not None:
        raise MinibertsError(f"{flag} {backend} needs {module}, which is not installed: {EXTRAS[backend]}")


def precision_of(dtype: torch.dtype, int8: bool) -> str:
    if int8:
        return "int8"
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def resolve(backend: str, cfg, precision: str, batch_size: int, device: torch.device) -> str:
    """The backend that will run: `backend` itself (checked to be installed), or auto's choice."""
    if backend != "auto":
        require(backend)
        if backend != "torch" and device.type != "cpu":
            raise MinibertsError(f"--backend {backend} runs on the CPU here; use --backend torch (or auto) on {device.type}")
        return backend
    if device.type != "cpu":
        return "torch"
    return choose(cfg.num_layers, cfg.hidden_size, batch_size, precision, available(precision))


def engine(name: str, encoder: BertModel, precision: str, threads: int | None = None,
           tokenizer: WordPieceTokenizer | None = None, calibration: list[str] | None = None) -> EngineEncoder:
    """An engine backend for this encoder (its artifact exported now, or read from the cache). ONNX Runtime and
    OpenVINO int8 calibrate on `calibration` (texts; default: the built-in text, smoothquant.py) tokenized by
    `tokenizer`."""
    if name == "onnxruntime":
        from .ort import OrtEncoder as cls
    elif name == "openvino":
        from .ov import OpenVinoEncoder as cls
    elif name == "ctranslate2":
        from .ct2 import Ct2Encoder as cls
    else:
        raise MinibertsError(f"no engine named {name!r} (engines: {', '.join(ENGINES)})")
    if name != "ctranslate2":  # the engines whose int8 is calibrated on text
        return cls(encoder, precision, threads or torch.get_num_threads(), tokenizer, calibration)
    return cls(encoder, precision, threads or torch.get_num_threads())


def prepare(model: nn.Module, encoder: BertModel, backend: str, precision: str, batch_size: int, device: torch.device,
            threads: int | None, tokenizer: WordPieceTokenizer | None, wrap) -> tuple[nn.Module, torch.dtype]:
    """(module with `model`'s forward, the autocast dtype to run it under). torch: `model` itself, cast once to bf16,
    quantized to int8, or in fp32 with its mask-free calls traced (pytorch.py); an engine: `wrap(engine)`, where the
    engine runs `encoder`'s exported graph in its own precision (the autocast dtype is then fp32, a no-op)."""
    from ..fast_paths import for_inference, quantize_int8

    if precision not in PRECISIONS:
        raise MinibertsError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    name = resolve(backend, encoder.cfg, precision, batch_size, device)
    log.info("backend: %s (%s)%s", name, precision, " (auto)" if backend == "auto" else "")
    if name != "torch":
        return wrap(engine(name, encoder, precision, threads, tokenizer)), torch.float32
    if precision == "int8":
        if device.type != "cpu":
            raise MinibertsError("int8 (dynamic quantization) runs on the CPU only; use bf16 on a GPU")
        return quantize_int8(model.float()), torch.float32
    if precision == "bf16":
        return for_inference(model.to(device), torch.bfloat16), torch.bfloat16
    return MaskFreeTrace(model.to(device).eval()), torch.float32


def export_engine(model_dir: str | Path, engine: str, out: str | Path, quantize: str | None = None,
                  force: bool = False) -> Path:
    """The artifact an engine backend runs, written to the new folder `out`: onnxruntime -> model.onnx (fused fp32,
    or the calibrated int8 of smoothquant.py), openvino -> model.xml + model.bin (fp32, or the NNCF int8 of
    ov_int8.py), ctranslate2 -> model.bin (+ config; int8 is chosen when loading).
    The encoder only (with pooler): a classifier's head is one Linear that the backends run in torch. These are the
    files cache.py keeps per weights fingerprint; `--backend` finds its own, this is for other programs."""
    if quantize not in (None, "int8"):
        raise MinibertsError(f"--quantize must be int8, got {quantize!r}")
    require(engine, "--engine")
    if engine == "openvino" and quantize:
        from .ov_int8 import require_nncf
        require_nncf()
    out = Path(out)
    check_folder(out, (), force)  # the folder rule (fileio): never over a file miniberts did not write
    if not force and out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise OutputError(f"{out}: exists and is not empty (an export writes a new folder; --force replaces an "
                          "earlier export's files)")
    encoder, tokenizer = load_encoder(model_dir)
    encoder = encoder.float().eval()
    if engine == "onnxruntime":
        from .ort import build
        writer = build(encoder, quantize or "fp32", calibration_ids(tokenizer) if quantize else None)
    elif engine == "openvino" and quantize:
        from .ov_int8 import build
        writer = build(encoder, calibration_ids(tokenizer))
    elif engine == "openvino":
        from .ov import build
        writer = build(encoder)
    else:
        from .ct2 import build
        writer = build(encoder)
    build_into(out, writer, force)
    return out


def for_encoder(encoder: BertModel, backend: str = "torch", precision: str = "fp32", batch_size: int = 32,
                device: torch.device = torch.device("cpu"), threads: int | None = None,
                tokenizer: WordPieceTokenizer | None = None) -> tuple[nn.Module, torch.dtype]:
    """An encoder's runner: forward(input_ids, attention_mask, token_type_ids) -> (hidden, pooled). `tokenizer`:
    the model's, which ONNX Runtime int8 needs to tokenize its calibration text."""
    return prepare(encoder, encoder, backend, precision, batch_size, device, threads, tokenizer, lambda e: e)


def for_classifier(model: BertForSequenceClassification, backend: str = "torch", precision: str = "fp32",
                   batch_size: int = 32, device: torch.device = torch.device("cpu"), threads: int | None = None,
                   tokenizer: WordPieceTokenizer | None = None) -> tuple[nn.Module, torch.dtype]:
    """A classifier's runner (-> logits): an engine runs the encoder, the head (one Linear) stays in torch fp32."""
    return prepare(model, model.bert, backend, precision, batch_size, device, threads, tokenizer,
                   lambda e: EngineClassifier(e, model))


__all__ = ["BACKENDS", "ENGINES", "PRECISIONS", "EXTRAS", "installed", "available", "require", "resolve",
           "precision_of", "prepare", "for_encoder", "for_classifier", "engine", "export_engine"]
