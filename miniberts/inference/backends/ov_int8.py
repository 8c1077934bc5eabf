"""Accurate int8 for OpenVINO: static int8 by NNCF (post-training quantization calibrated on real text), with
SmoothQuant's scale migration and the FFN output projection kept in fp32.

What NNCF writes: FakeQuantize nodes with ranges calibrated on the calibration texts before every quantizable
MatMul (int8 weights per output channel, asymmetric uint8 activations per tensor, MIXED preset; the attention's own
matmuls too, `ModelType.TRANSFORMER`), which OpenVINO's CPU plugin runs as int8 GEMMs (VNNI where the CPU has it).
Unlike ONNX Runtime's dynamic int8 (smoothquant.py), no activation is quantized at run time: the scales are
constants, so there is no per-call quantization pass to pay.

Why these settings (benchmarks/int8_accuracy.py on the real MiniLM-L6, docs/inference.md has the reading):
SmoothQuant alpha 0.5 (NNCF's own migration, folded into the graph) keeps the LayerNorm-fed `qkv` and `fc` inputs
accurate under one static range per tensor. The FFN output `proj` (its input is the GELU output) is the hard one:
every variant that quantized it in every layer, at any alpha, lost cosine 0.99 on short sentences, and so did
every variant that kept only one layer's `proj` in fp32. What holds: `proj` stays fp32 in the layers where its
calibrated input has an outlier channel (the largest per-channel max |x| above OUTLIER_RATIO times the 99th
percentile of the per-channel maxima: MiniLM-L6's layers 0-3, ratios 3.7-5.1) and is int8 in the others (layers 4
and 5, ratios 1.5 and 1.7), which leaves a third fewer fp32 FLOPs than keeping every `proj` in fp32.

Calibration: smoothquant.calibration_ids (by default 256 built-in BBC News sentences), one text per sample (no
padding rows in the ranges); the artifact is cached per weights fingerprint and per calibration token ids.
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
from .smoothquant import input_maxima

ALPHA = 0.5  # NNCF's SmoothQuant alpha for MatMuls
FP32 = ("proj",)  # layer Linears kept in fp32 where their input has an outlier channel: the FFN output
OUTLIER_RATIO = 3.0
INSTALL_HINT = "pip install 'miniberts[engines]'"


def nncf_installed() -> bool:
    return importlib.util.find_spec("nncf") is not None


def require_nncf() -> None:
    if not nncf_installed():
        raise MinibertsError(f"OpenVINO int8 is quantized by NNCF, which is not installed: {INSTALL_HINT}")


def samples(ids: list[list[int]]) -> list[dict[str, np.ndarray]]:
    """One calibration text per sample, as the OpenVINO model's inputs."""
    return [{"input_ids": np.array([x], np.int64), "attention_mask": np.ones((1, len(x)), np.int64),
             "token_type_ids": np.zeros((1, len(x)), np.int64)} for x in ids]


def outlier_matmuls(encoder: BertModel, ids: list[list[int]], roles: tuple[str, ...] = FP32) -> list[str]:
    """The MatMuls of the layer Linears in `roles` whose input, over the calibration texts, has an outlier channel:
    max over channels of max |x_j| > OUTLIER_RATIO x the 99th percentile of the per-channel maxima."""
    maxima = input_maxima(encoder, ids, roles)
    return [name for name, m in maxima.items() if m.max() > OUTLIER_RATIO * np.percentile(m, 99)]


def quantize(model, ids: list[list[int]], fp32: list[str], alpha: float = ALPHA):
    """The NNCF int8 of the OpenVINO model `model` (our fp32 export), calibrated on `ids`, with SmoothQuant at
    `alpha` (< 0: none) and the MatMuls named in `fp32` left in fp32. NNCF's log lines and progress bars go to
    stderr: stdout may be the command's output."""
    with contextlib.redirect_stdout(sys.stderr):
        import nncf
        from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                           AdvancedSmoothQuantParameters)

        nncf.set_log_level(logging.ERROR)
        return nncf.quantize(
            model, nncf.Dataset(samples(ids)), preset=nncf.QuantizationPreset.MIXED,
            model_type=nncf.ModelType.TRANSFORMER, subset_size=len(ids),
            ignored_scope=nncf.IgnoredScope(names=fp32),
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha)))


def build(encoder: BertModel, ids: list[list[int]]):
    """The writer of the int8 artifact folder (model.xml + model.bin)."""
    def write(folder: Path) -> None:
        import openvino as ov

        raw = export_onnx(encoder, folder / "raw.onnx")
        model = quantize(ov.convert_model(str(raw)), ids, outlier_matmuls(encoder, ids))
        ov.save_model(model, str(folder / "model.xml"))
        raw.unlink()

    return write
