"""Where and in what precision to run: CUDA when present, else CPU; bf16 where the hardware computes it natively.

bf16 autocast keeps fp32 master weights (the optimizer state and the parameters stay fp32); matmuls run in bf16.
On CPU that pays only with native bf16 instructions (AVX-512 BF16 or AMX), which oneDNN reports.
"""

from __future__ import annotations

import contextlib
import functools

import torch

DTYPES = ("auto", "fp32", "bf16")


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@functools.cache  # asked on every Model.embed call; the hardware does not change
def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' -> bf16 where the device has it natively, else fp32."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return torch.bfloat16 if dtype == "bf16" else torch.float32


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision when dtype is bf16; a no-op context for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
