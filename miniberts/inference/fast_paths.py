"""The inference switches beyond the model's own fast path: weights cast once to bf16, int8 dynamic quantization,
and `torch.compile` with a fallback. Each has a parity test against the plain fp32 path (tests/test_fast_paths.py).

The model itself always skips padding (`BertModel.unpad`, see miniberts/model.py); length-sorted batching is batching.py's
`length_batches`; bf16 autocast is miniberts/device.py's `autocast`. What this module adds:

- `for_inference`: under bf16 autocast, cast the nn.Linear weights to bf16 once. Autocast otherwise casts every
  weight on every call: its weight cache is off inside `torch.inference_mode()` (it only caches leaves that require
  grad, outside inference mode), so each batch re-reads the fp32 weights and writes bf16 copies, ~17% of a Small
  forward on a 2-core Zen 5. Casting once also halves the memory the weights take.
- `quantize_int8`: `torch.ao.quantization.quantize_dynamic` on every nn.Linear (int8 weights with a scale per output
  channel, activations quantized per batch), for CPUs without native bf16. Per-channel scales matter: on MiniLM-L6
  the mean-pooled embeddings keep cosine >= 0.95 to fp32 with them, down to 0.90 with one scale per tensor.
- `maybe_compile`: `torch.compile` where it works, the eager module where it does not; the compile time is logged.
"""

from __future__ import annotations

import logging
import time
import warnings

import torch
from torch import nn

log = logging.getLogger(__name__)


def for_inference(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """eval() the model and, for bf16, cast its nn.Linear weights and biases to bf16 in place. Embeddings and
    LayerNorms stay fp32. The model must then run under `device.autocast(device, dtype)`; it cannot be trained."""
    model.eval()
    if dtype != torch.float32:
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.to(dtype)
    return model


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of the (fp32, CPU) model with int8 dynamically-quantized nn.Linear layers; run it without autocast.
    The tied MLM decoder is a functional matmul on the embedding table and stays fp32."""
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not a dependency; the eager API still
        # works in torch 2.13 and is what this switch needs.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        return torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear: qconfig}, dtype=torch.qint8, inplace=False)


def maybe_compile(model: nn.Module, enabled: bool, example: tuple | None = None) -> nn.Module:
    """`torch.compile(model, dynamic=True)` when enabled and it works, else the eager model (with the reason logged).
    With `example` inputs the compilation runs now, so its time is logged and a failure falls back here rather than
    at the first real batch."""
    if not enabled:
        return model
    start = time.perf_counter()
    try:
        compiled = torch.compile(model, dynamic=True)
        if example is not None:
            with torch.no_grad():
                compiled(*example)
    except Exception as e:  # inductor raises many types (missing compiler, unsupported op, ...): fall back to eager
        log.warning("torch.compile failed (%s: %s); running eager", type(e).__name__, str(e).splitlines()[0][:200])
        return model
    log.info("torch.compile: %.1f s%s", time.perf_counter() - start, "" if example is not None else " (lazy: compiles on first call)")
    return compiled
