"""Exported artifacts, built once and reused: one folder per (weights fingerprint, engine, variant).

The fingerprint is a hash of the encoder's tensors and configuration, not of a path, so the same weights share one
export wherever they are loaded from (a model directory, a converted copy, a TF release), and changed weights never
reuse a stale graph. The root is $MINIBERTS_CACHE, else ~/.cache/miniberts; each artifact is built in a temporary
folder beside its final place and renamed into it, so a reader never sees half an export and two processes that
export at once both end with a complete one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from torch import nn

from ...fileio import build_dir

log = logging.getLogger(__name__)

FORMAT = 1  # bump when an exporter changes what it writes: old artifacts are then ignored


def root() -> Path:
    return Path(os.environ.get("MINIBERTS_CACHE") or Path.home() / ".cache" / "miniberts")


def fingerprint(model: nn.Module) -> str:
    """blake2b of the configuration and every tensor (name, shape, dtype, bytes), 16 hex digits."""
    h = hashlib.blake2b(digest_size=8)
    cfg = getattr(model, "cfg", None)
    h.update(json.dumps(cfg.to_hf_dict([]) if cfg is not None else {}, sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().float().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(t.numpy())  # the array's buffer itself: no copy of the weights' bytes (tens of MB) per process
    return h.hexdigest()


def artifact(model: nn.Module, engine: str, variant: str, build: Callable[[Path], None]) -> Path:
    """The folder of `engine`'s `variant` export of `model`; `build(folder)` writes it when it is not cached."""
    final = root() / fingerprint(model) / f"{engine}-{variant}-v{FORMAT}"
    start = time.perf_counter()
    if build_dir(final, build):
        log.info("exported %s %s to %s (%.1f s, once for these weights)", engine, variant, final, time.perf_counter() - start)
    return final
