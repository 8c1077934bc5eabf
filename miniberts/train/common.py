"""Training mechanics shared by every recipe (pretrain, finetune, distill), written once.

- AdamW as BERT uses it: no weight decay on LayerNorm weights and biases (google-research/bert optimization.py),
  linear warmup then linear decay to zero.
- Checkpoints for resuming: one file per step, written atomically, the last K kept; model, optimizer, RNG states
  and whatever the recipe adds (data position, metrics). Loaded with `weights_only=True`.
- torchrun/DDP set-up (gloo on CPU, NCCL on GPU), logging on rank 0, JSONL logs, learning-curve plots.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..errors import CheckpointError, MinibertsError
from ..figures import pyplot, save_figure
from ..fileio import atomic_path, atomic_write_text
from ..lifetime import die_with_parent

log = logging.getLogger("miniberts")


# --- optimisation ---------------------------------------------------------------------------------------------

def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices and embeddings; none on biases and LayerNorm parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 else decay).append(p)  # 1-D tensors are exactly the biases and LayerNorm params
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.01) -> torch.optim.AdamW:
    # fused: one kernel for the whole update (CPU and CUDA), 3x faster than the per-tensor loop on Tiny
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.999), eps=1e-6, fused=True)


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup over `warmup` steps to `peak`, then linear decay to 0 at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


def check_finite(step: int, loss: float, grad_norm: float = 0.0) -> None:
    """Stop a diverged run at once, before a NaN model is saved under a final name (every recipe, one wording)."""
    if not math.isfinite(loss):
        raise MinibertsError(f"training diverged at step {step} (loss {loss}); try a lower --lr")
    if not math.isfinite(grad_norm):
        raise MinibertsError(f"training diverged at step {step} (gradient norm {grad_norm}); try a lower --lr")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# --- randomness -----------------------------------------------------------------------------------------------

def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG a recipe touches, in a form `torch.load(weights_only=True)` accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- checkpoints for resuming ---------------------------------------------------------------------------------

CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.pt$")


class Checkpoints:
    """RUN/checkpoints/step-NNNNNNNN.pt, atomically written; only complete files match the name pattern."""

    def __init__(self, run_dir: Path, keep: int = 3):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep = keep

    def steps(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := CHECKPOINT_NAME.match(p.name)))

    def save(self, step: int, state: dict) -> Path:
        path = self.dir / f"step-{step:08d}.pt"
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        for old in self.steps()[: -self.keep]:
            (self.dir / f"step-{old:08d}.pt").unlink(missing_ok=True)
        return path

    def load_latest(self) -> dict | None:
        steps = self.steps()
        if not steps:
            return None
        path = self.dir / f"step-{steps[-1]:08d}.pt"
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated zip, a bad pickle opcode, ...: all mean the same to the user
            raise CheckpointError(f"{path}: corrupt checkpoint ({type(e).__name__}); delete it to resume from the one before") from None


# --- distributed ----------------------------------------------------------------------------------------------

def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun: one process per rank, gloo on CPU, NCCL on GPU."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    die_with_parent(os.getppid())  # a rank whose torchrun agent was killed stops instead of waiting on its peers
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


# --- logs and plots -------------------------------------------------------------------------------------------

class JsonlLog:
    """Append-only JSONL (one object per line), on rank 0 only; also mirrored to TensorBoard if installed."""

    def __init__(self, path: Path, tensorboard: bool = True):
        self.path = Path(path)
        self.enabled = is_main()
        self.tb = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self.tb = SummaryWriter(str(self.path.parent / "tensorboard"))
                except ImportError:
                    self.tb = None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None and "step" in record:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "time"):
                    self.tb.add_scalar(f"{record.get('split', 'train')}/{key}", value, record["step"])
            self.tb.flush()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_curves(series: dict[str, tuple[list[float], list[float]]], out: Path, xlabel: str, ylabel: str, title: str) -> Path:
    """One line per name: {name: (xs, ys)} -> PNG, written atomically."""
    fig, ax = pyplot().subplots(figsize=(7, 4.2))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, label=name, marker="o" if len(xs) < 30 else None, markersize=3)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return save_figure(fig, out)


def write_json(path: Path, obj) -> None:
    atomic_write_text(Path(path), json.dumps(obj, indent=2, default=str))
