"""Figures: matplotlib without a display, and PNGs written atomically (a reader never sees half a file)."""

from __future__ import annotations

from pathlib import Path

from .fileio import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: the CLI starts without it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    """Write `fig` as a PNG at `path` atomically, then close it."""
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(fig)
    return Path(path)
