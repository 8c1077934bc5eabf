"""Atomic file writes: write a temporary file beside the target, then rename it over the target.

A reader (or a resumed run) never sees a half-written checkpoint, result table or data shard: `os.replace` is atomic
on POSIX within one file system.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path next to `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private (0600); give the final file the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def build_dir(final: Path, build, done: str = "DONE") -> bool:
    """Make the folder `final` by `build(tmp)` in a temporary folder beside it, then rename it into place, with the
    file `done` written last. Returns False when `final` was already complete (nothing built). When two processes
    build it at once, the first rename wins and the other one's copy is discarded."""
    final = Path(final)
    if (final / done).is_file():
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a cache may be shared
    try:
        build(tmp)
        (tmp / done).write_text("")
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first: keep theirs
            if not (final / done).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True
