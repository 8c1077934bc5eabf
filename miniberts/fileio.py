"""The one output writer: write a temporary file beside the target, then rename it over the target.

A reader (or a resumed run) never sees a half-written checkpoint, result table or data shard: `os.replace` is atomic
on POSIX within one file system. Whatever goes wrong (the target is a folder or a device, the folder cannot be
created or written, the disk fills up mid-write) is one `OutputError` line naming the target, and nothing is left:
no file under the final name (an older file there stays as it was) and no temporary file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import MinibertsError


class OutputError(MinibertsError):
    """An output file cannot be written where it was asked for."""


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def check_output_path(path: Path) -> None:
    """A target that a file can be renamed onto: not a folder, and not a device or pipe (never replaced)."""
    if path.is_dir():
        raise OutputError(f"{path}: is a directory, expected a file name to write")
    if path.exists() and not path.is_file():
        raise OutputError(f"{path}: not a regular file, expected a file name to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        folder = next((p for p in path.parents if p.exists()), path.parent)  # the part of the path in the way
        raise OutputError(f"{folder}: cannot create the folder ({_reason(e)})") from None


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path next to `path`; on success it replaces `path`, on error it is removed.

    An OSError while the caller writes the temporary file (a full disk) becomes an OutputError naming `path`."""
    path = Path(path)
    check_output_path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({_reason(e)})") from None
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private (0600); give the final file the usual mode
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({_reason(e)})") from None
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
