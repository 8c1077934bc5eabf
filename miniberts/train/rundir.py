"""Run directories: what a run was made with (its identity), and one process at a time (a lock).

A run directory (fine-tuning, distillation, pre-training, a GLUE sweep, an experiment and each of its cells) holds
RUN/identity.json: the settings that define its results, with every input file replaced by a digest of its bytes
(so moving a data folder changes nothing, editing a file does). Progress and logging flags, the output path and
`--fresh`/`--resume` themselves are not part of it. Rerunning into the directory then means:

- same identity: continue (resume, restart an unfinished run, or skip a finished one; the recipe decides);
- another identity: one line naming what changed, e.g.
  `RUN: was made with --model tiny, now --model 2-256; use --fresh to start afresh or another --out`;
- `fresh=True`: the old contents are removed first (those named in `keep`, e.g. a token cache, stay).

While a run is open it holds an exclusive `fcntl.flock` on RUN/.lock, so a second process (a second `finetune`,
a second `pretrain --resume`) gets `RUN: in use by another miniberts process (pid N)` instead of mixing its outputs
with the first one's. The kernel drops the lock when the holder dies, even by kill -9: a stale lock never blocks.
The holder's pid stays in RUN/.lock until the run closes, so the next holder names a process that died holding it
("pid N died while it held this run ...; taking it over"). What kept a lock held after its command was killed was
the command's own children (an experiment's workers): they now die with their parent (`lifetime`).

Use (a recipe, an experiment's top directory or each of its cells alike; `claim_run` is `open_run` whose refusal
leaves the folder as it was found, without a lock file):

    ident = identity(cfg, inputs={"train": [cfg.train], "model": [cfg.model]})
    with claim_run(cfg.out, ident, fresh=cfg.fresh) as run:
        if run.finished:          # RUN/metrics.json exists and came from these settings
            return run.finished_metrics()
        ...                       # train, write outputs (atomically), metrics.json last
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import MinibertsError
from ..fileio import (OutputError, as_found_on_refusal, atomic_write_text, make_folder, remove_created,
                      visible)
from ..hub import resolved_name

log = logging.getLogger("miniberts")

IDENTITY = "identity.json"
LOCK = ".lock"
# Where the results go and how a run shows its progress: none of them changes a number of the results.
NOT_IDENTITY = frozenset({"out", "fresh", "resume", "progress", "log_every", "cache_dir"})
# Inputs that name a model: a path, a preset, or a Hub id (only these are looked up on the Hub).
MODEL_INPUTS = frozenset({"model", "teacher", "general_teacher", "student", "students"})


class RunInUse(MinibertsError):
    """Another process holds the run directory's lock."""


class RunMismatch(MinibertsError):
    """The run directory was made with other settings or other input files."""


# --- identity -------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file's bytes; cached per (path, size, mtime) so a sweep reads each input once per process."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def file_digest(path: str | Path) -> str:
    st = os.stat(path)
    return _digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def fingerprint(value: str | Path):
    """An input as identity: a file -> its digest; a directory (a model) -> {file name: digest} of its visible
    top-level files (the weights, config, vocabulary; hidden files such as .lock and temporaries are not content);
    anything else (a preset name, "") is kept as the string it is."""
    path = Path(value)
    if value and path.is_file():
        return file_digest(path)
    if value and path.is_dir():
        return {p.name: file_digest(p) for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")}
    return str(value)


def model_fingerprint(value: str | Path):
    """A model as identity: a Hugging Face Hub id -> `org/name@<the commit it resolved to>` (so a moved branch is a
    new identity), else as `fingerprint`."""
    return (resolved_name(value) if value else None) or fingerprint(value)


def settings(cfg, skip: Sequence[str] = ()) -> dict:
    """The fields of a run's config dataclass that define its results: all but NOT_IDENTITY and `skip`."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in NOT_IDENTITY
            and f.name not in skip}


def identity(cfg, inputs: Mapping[str, Sequence[str | Path] | str | Path] = (), skip: Sequence[str] = ()) -> dict:
    """The identity of a run configured by the dataclass `cfg`: every field but NOT_IDENTITY and `skip`; the fields
    named in `inputs` (a path or a list of paths each) are replaced by the fingerprints of those paths."""
    inputs = dict(inputs)
    out = settings(cfg, skip)
    for name, paths in inputs.items():
        fp = model_fingerprint if name in MODEL_INPUTS else fingerprint
        out[name] = [fp(p) for p in paths] if isinstance(paths, (list, tuple)) else fp(paths)
    return json.loads(json.dumps(out))  # what identity.json will hold: tuples as lists, floats as written


def _is_content(value) -> bool:
    """A fingerprint of files (a digest, a {name: digest} dict, or a list of them), not a plain setting."""
    if isinstance(value, str):
        return value.startswith("sha256:")
    if isinstance(value, list):
        return any(_is_content(v) for v in value)
    return isinstance(value, dict)


def _describe(name: str, value) -> str:
    """A setting as the flag that gives it: `--epochs 3`, `--nsp`, `--tasks RTE CoLA`, `--model (a directory)`."""
    flag = "--" + name.replace("_", "-")
    if value is _MISSING:
        return f"(no {flag})"
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    if _is_content(value):
        return f"{flag} (a directory)" if isinstance(value, dict) else f"{flag} (files)"
    if isinstance(value, list):
        return f"{flag} {' '.join(map(str, value)) or '(none)'}"
    return f"{flag} {value if value != '' else '(none)'}"


_MISSING = object()


def differences(old: dict, new: dict) -> str:
    """One phrase naming every setting whose value changed and every input whose files changed."""
    was, now, changed = [], [], []
    for key in [*new, *(k for k in old if k not in new)]:
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        if a == b:
            continue
        if _is_content(a) and _is_content(b):
            changed.append("--" + key.replace("_", "-"))
        else:
            was.append(_describe(key, a))
            now.append(_describe(key, b))
    parts = []
    if was:
        parts.append(f"was made with {' '.join(was)}, now {' '.join(now)}")
    if changed:
        parts.append(f"the files of {', '.join(changed)} differ from those it was made with")
    return "; ".join(parts)


# --- the lock and the directory -------------------------------------------------------------------------------

@dataclass
class RunDir:
    path: Path
    identity: dict
    existed: bool  # identity.json was there already, with this identity: an earlier attempt of this very run
    done: str = "metrics.json"

    @property
    def finished(self) -> bool:
        return self.existed and (self.path / self.done).is_file()

    def finished_metrics(self) -> dict:
        """The results of the earlier, finished attempt, which a recipe returns instead of training again."""
        log.info("%s: finished before with these settings; kept as it is (--fresh to run it again)", self.path)
        return json.loads((self.path / self.done).read_text(encoding="utf-8"))


def read_identity(path: str | Path) -> dict | None:
    """RUN/identity.json's identity, or None when there is none (or it cannot be read: a foreign file)."""
    file = Path(path) / IDENTITY
    try:
        return json.loads(file.read_text(encoding="utf-8"))["identity"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def finished(path: str | Path, ident: dict, done: str = "metrics.json") -> bool:
    """Whether RUN holds a finished run made with `ident` (a look without the lock, e.g. to skip it in a sweep)."""
    return read_identity(path) == ident and (Path(path) / done).is_file()


def _acquire(path: Path) -> int:
    """The lock, with this process' pid in it. The pid is removed when the run closes, so a pid found there by the
    next holder is that of a process that died holding the run (kill -9, the OOM killer): named, then taken over."""
    try:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise RunInUse(f"{path}: in use by another miniberts process (pid {holder})") from None
    dead = os.read(fd, 32).decode("ascii", "replace").strip()
    if dead and dead != str(os.getpid()):
        log.warning("%s: pid %s died while it held this run (killed, or out of memory); taking it over", path, dead)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _release(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)  # closed in order: no pid for the next holder to report
    finally:
        os.close(fd)  # releases the flock


def _clear(path: Path, keep: Sequence[str]) -> None:
    for entry in path.iterdir():
        if entry.name in (LOCK, *keep):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


@contextmanager
def open_run(out: str | Path, ident: dict, fresh: bool = False, keep: Sequence[str] = (),
             done: str = "metrics.json") -> Iterator[RunDir]:
    """Lock RUN = `out` for the whole `with` block and check (or record) its identity; see the module docstring.

    A directory that holds files but no identity.json is not taken over (it may be the user's own, or a run from
    before identities): one line says so. A run rejected inside the block before it wrote anything leaves the
    directory as it found it. Stale temporary files of atomic writes cut short by a kill are removed.
    """
    path = Path(out)
    created = make_folder(path)
    fd = _acquire(path)
    wrote_identity = False
    try:
        old = read_identity(path)
        if old is None and [name for name in visible(path) if name not in keep]:  # `keep` (a cache) may precede
            raise RunMismatch(f"{path}: holds files but no {IDENTITY} (not a miniberts run directory, or one made "
                              "before run identities); choose another --out or empty it")
        if old is not None and old != ident and not fresh:
            raise RunMismatch(f"{path}: {differences(old, ident)}; use --fresh to start afresh or another --out")
        if fresh and old is not None:
            log.info("%s: --fresh: removing the earlier run%s", path, f" (keeping {', '.join(keep)})" if keep else "")
            _clear(path, keep)
        for stale in path.glob(".*.tmp"):  # fileio.atomic_path's temporaries; the lock says nobody is writing
            stale.unlink(missing_ok=True)
        existed = old == ident and not fresh
        if not existed:
            atomic_write_text(path / IDENTITY, json.dumps({"identity": ident}, indent=2) + "\n")
            wrote_identity = True
        yield RunDir(path, ident, existed, done)
    except BaseException:
        if wrote_identity and visible(path) == [IDENTITY]:  # rejected before any output: leave no trace
            (path / IDENTITY).unlink(missing_ok=True)
            if created:
                (path / LOCK).unlink(missing_ok=True)
                remove_created(created)
        raise
    finally:
        _release(fd)


@contextmanager
def locked(out: str | Path) -> Iterator[Path]:
    """RUN's lock alone, for work on a finished run that changes none of its results (re-measuring its timings)."""
    fd = _acquire(Path(out))
    try:
        yield Path(out)
    finally:
        _release(fd)


@contextmanager
def claim_run(out: str | Path, ident: dict, fresh: bool = False, keep: Sequence[str] = (),
              done: str = "metrics.json") -> Iterator[RunDir]:
    """`open_run` as a command uses it: when the run is refused (another identity, a folder that is not a run), the
    folder is left as it was found, without the lock file or the folders the refused run made."""
    with as_found_on_refusal(Path(out), unless=(RunInUse,)) as accept:
        with open_run(out, ident, fresh, keep, done) as run:
            accept()
            yield run
