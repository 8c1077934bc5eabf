"""The one output writer: write a temporary file beside the target, then rename it over the target; and the one rule
for a command that writes into a folder (`output_folder`).

A reader (or a resumed run) never sees a half-written checkpoint, result table or data shard: `os.replace` is atomic
on POSIX within one file system. Whatever goes wrong (the target is a folder or a device, the folder cannot be
created or written, the disk fills up mid-write) is one `OutputError` line naming the target, and nothing is left:
no file under the final name (an older file there stays as it was) and no temporary file.

The folder rule (`data fetch`, `vocab`, `convert`, `export --engine`, `download --out`, `bench --out`, built-in
data in a cache):
FOLDER/.miniberts-made.json records the files miniberts wrote there. A file it did not write is never replaced, not
even with --force; a folder holding files it did not write is refused in one line unless --force, which writes
beside them and leaves them as they are: only miniberts' own files are ever replaced.
Run directories follow the same rule through their own record, RUN/identity.json (`train/rundir.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
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
    make_folder(path.parent)


def make_folder(path: Path) -> list[Path]:
    """Create the folder `path` and its missing parents; return those it created, `path` first. A file in the way or
    a folder that cannot be written is one OutputError line."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: cannot create the folder (a file of that name is in the way)")
    created = missing_folders(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        folder = next((p for p in path.parents if p.exists()), path.parent)  # the part of the path in the way
        raise OutputError(f"{folder}: cannot create the folder ({_reason(e)})") from None
    return created


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


def missing_folders(path: Path) -> list[Path]:
    """`path` and its parents that do not exist yet, `path` first: what creating it would create."""
    return [d for d in (path, *path.parents) if not d.exists()]


def remove_created(created: list[Path]) -> None:
    """Remove the folders `make_folder` created (deepest first), as far as they are empty."""
    for d in created:
        try:
            d.rmdir()
        except OSError:
            break


# --- the folder rule --------------------------------------------------------------------------------------------

MADE = ".miniberts-made.json"


def made_here(folder: Path) -> set[str]:
    """The names of the files miniberts wrote into `folder` (its MADE record); none when there is no record."""
    try:
        return set(json.loads((Path(folder) / MADE).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def visible(folder: Path) -> list[str]:
    """What a folder holds besides hidden files (records, temporaries, a .gitkeep)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def check_folder(folder: Path, names: Iterable[str] = (), force: bool = False, flag: str = "--force") -> None:
    """The folder rule, checked before anything is written: `folder` may receive the files `names` (one line if not)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: is a file, expected a folder")
    nearest = next(p for p in (folder, *folder.parents) if p.exists())  # where the first write or mkdir happens
    if not nearest.is_dir():
        raise OutputError(f"{nearest}: cannot create the folder (Not a directory)")
    if not os.access(nearest, os.W_OK | os.X_OK):  # mode bits and read-only mounts
        raise OutputError(f"{nearest}: cannot write (Permission denied)")
    ours = made_here(folder)
    foreign = [name for name in visible(folder) if name not in ours]
    clash = [name for name in names if name in foreign]
    if clash:
        raise OutputError(f"{folder / clash[0]}: not written by miniberts, so never replaced; move it or choose "
                          "another folder")
    if foreign and not force:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(f"{folder}: holds files miniberts did not write ({shown}); choose another folder, or "
                          f"{flag} to write beside them")


@contextmanager
def output_folder(folder: Path, names: Iterable[str], force: bool = False, flag: str = "--force") -> Iterator[Path]:
    """Claim `folder` for writing the files `names` under the folder rule (module docstring), then yield it. The
    record is written first, so a folder that cannot be written fails here, and a write cut short by a kill still
    counts as miniberts'. A failure inside the block in a folder it created, before any file, leaves no folder."""
    folder, names = Path(folder), sorted(set(names))
    check_folder(folder, names, force, flag)
    created = make_folder(folder)
    try:
        atomic_write_text(folder / MADE, json.dumps({"files": sorted(made_here(folder) | set(names))}, indent=1) + "\n")
        yield folder
    except BaseException:
        if created and not visible(folder):
            (folder / MADE).unlink(missing_ok=True)
            remove_created(created)
        raise


@contextmanager
def as_found_on_refusal(folder: Path, unless: tuple[type[BaseException], ...] = ()) -> Iterator[Callable[[], None]]:
    """A command's checks run inside the block: a MinibertsError before the yielded `accept()` is called removes
    what the block created under `folder` (files, folders, `folder` itself and the parents it needed; a lock, a
    cache, an identity) and re-raises, so a refused command leaves the folder as it found it and its corrected rerun
    is not refused by the refused one's traces. After `accept()` (the work has begun) nothing is removed: a failure
    then keeps what a rerun resumes from. `unless`: errors that mean another process works there (nothing is ours)."""
    folder = Path(folder)
    created = missing_folders(folder)
    before = set(folder.rglob("*")) if folder.is_dir() else set()
    accepted: list[bool] = []
    try:
        yield lambda: accepted.append(True)
    except MinibertsError as e:
        if not accepted and not isinstance(e, unless):
            new = set(folder.rglob("*")) - before if folder.is_dir() else set()
            for path in sorted(new, key=lambda p: len(p.parts), reverse=True):  # contents before their folders
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            remove_created(created)
        raise


def build_into(folder: Path, build, force: bool = False) -> list[str]:
    """`build(tmp)` writes files into a temporary folder beside `folder`; they are then moved into `folder` under the
    folder rule (names known only once built, e.g. an engine's export). Returns their names."""
    folder = Path(folder)
    check_folder(folder, (), force)
    make_folder(folder.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        build(tmp)
        names = sorted(os.listdir(tmp))
        with output_folder(folder, names, force):
            for name in names:
                os.replace(tmp / name, folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return names
