"""Accurate int8 for OpenVINO: static int8 by NNCF (post-training quantization calibrated on real text), with
SmoothQuant's scale migration, activation ranges that cover every calibration text, and the FFN output and attention
output projections kept in fp32.

What NNCF writes: FakeQuantize nodes with ranges calibrated on the calibration texts before every quantizable
MatMul (int8 weights per output channel, asymmetric uint8 activations per tensor, MIXED preset; the attention's own
matmuls too, `ModelType.TRANSFORMER`), which OpenVINO's CPU plugin runs as int8 GEMMs (VNNI where the CPU has it).
Unlike ONNX Runtime's dynamic int8 (smoothquant.py), no activation is quantized at run time: the scales are
constants, so there is no per-call quantization pass to pay.

Why these settings (benchmarks/int8_accuracy.py on the real MiniLM-L6, docs/inference.md has the table; the worst
texts are the shortest, "Sure.", "Thanks", "Eh.", where [CLS] and [SEP] are half of the mean):
- RANGES "minmax": each activation range is the min and max over all calibration texts. NNCF's default for
  per-tensor activations averages each text's min and max instead, which clips the activations of texts whose
  extremes lie beyond the average: 0.958-0.960 on "Sure." against 0.983-0.986 with the full range.
- FP32 = the FFN output `proj` (its input is the GELU output, 1,536 wide with outlier channels) and the attention
  output `out`, in every layer: quantizing `out` alone (everything else fp32) cost "Sure." 0.992; `proj` int8 in
  any layer lost 0.99 on short texts. The int8 MatMuls are `qkv`, `fc` and the attention's two matmuls, 7 of a
  layer's 12 H^2 of weight FLOPs.
- SmoothQuant alpha 0.5 (NNCF's own migration, folded into the graph) keeps the LayerNorm-fed `qkv` and `fc`
  inputs accurate under one static range per tensor.

Calibration: smoothquant.calibration_ids (by default 256 built-in BBC News sentences), one text per sample (no
padding rows in the ranges); the artifact is cached per weights fingerprint, per settings() and per calibration
token ids.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
from pathlib import Path

import numpy as np

from ...errors import MinibertsError
from ...model import BertModel
from ..export import export_onnx
from .smoothquant import layer_matmuls

ALPHA = 0.5  # NNCF's SmoothQuant alpha for MatMuls
FP32 = ("proj", "out")  # layer Linears kept in fp32 in every layer: the FFN output and the attention output
RANGES = "minmax"  # activation ranges: "minmax" (over every calibration text) or "mean_minmax" (NNCF's default)
INSTALL_HINT = "pip install 'miniberts[engines]'"


def nncf_installed() -> bool:
    return importlib.util.find_spec("nncf") is not None


def require_nncf() -> None:
    if not nncf_installed():
        raise MinibertsError(f"OpenVINO int8 is quantized by NNCF, which is not installed: {INSTALL_HINT}")


def settings() -> str:
    """The quantization settings, as part of the artifact's cache key: other settings build another artifact."""
    return f"a{ALPHA}-{RANGES}-fp32-{'+'.join(FP32)}"


def samples(ids: list[list[int]]) -> list[dict[str, np.ndarray]]:
    """One calibration text per sample, as the OpenVINO model's inputs."""
    return [{"input_ids": np.array([x], np.int64), "attention_mask": np.ones((1, len(x)), np.int64),
             "token_type_ids": np.zeros((1, len(x)), np.int64)} for x in ids]


def quantize(model, ids: list[list[int]], fp32: list[str], alpha: float = ALPHA, ranges: str = RANGES):
    """The NNCF int8 of the OpenVINO model `model` (our fp32 export), calibrated on `ids`, with SmoothQuant at
    `alpha` (< 0: none), activation ranges by `ranges` and the MatMuls named in `fp32` left in fp32. NNCF's log
    lines and progress bars go to stderr: stdout may be the command's output."""
    with contextlib.redirect_stdout(sys.stderr):
        import nncf
        from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                           AdvancedSmoothQuantParameters)
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        nncf.set_log_level(logging.ERROR)
        return nncf.quantize(
            model, nncf.Dataset(samples(ids)), preset=nncf.QuantizationPreset.MIXED,
            model_type=nncf.ModelType.TRANSFORMER, subset_size=len(ids),
            ignored_scope=nncf.IgnoredScope(names=fp32),
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha),
                activations_range_estimator_params=getattr(RangeEstimatorParametersSet, ranges.upper())))


def build(encoder: BertModel, ids: list[list[int]]):
    """The writer of the int8 artifact folder (model.xml + model.bin)."""
    def write(folder: Path) -> None:
        import openvino as ov

        raw = export_onnx(encoder, folder / "raw.onnx")
        model = quantize(ov.convert_model(str(raw)), ids, layer_matmuls(raw, FP32))
        ov.save_model(model, str(folder / "model.xml"))
        raw.unlink()

    return write
