"""Models by Hugging Face Hub id: `org/name[@revision]`, or `released:NAME` (the pinned release of a preset), turned
into a snapshot directory of the standard Hugging Face cache, the one `transformers` reads, so nothing is fetched
twice.

`huggingface_hub` does the fetching (an optional extra: `pip install 'miniberts[hub]'`, imported only when an id is
used), so its cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub), HF_TOKEN, HF_ENDPOINT,
HF_HUB_OFFLINE, HF_HUB_DOWNLOAD_TIMEOUT and progress bars work as they do for transformers. Only what our loaders
read is fetched: the configs, vocabulary and tokenizer files, the sentence-transformers module files, then
model.safetensors, else pytorch_model.bin, else a Google TF checkpoint; never Flax weights. `snapshot_download` may
return a partial snapshot without a word (a download cut off, an offline cache), so the files are checked here.
An existing local path always wins over an id; a preset name (`tiny`, `2/128`) is never an id.
References: huggingface_hub/_snapshot_download.py (the cache layout, offline resolution through refs/<revision>).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .config import find_preset
from .errors import MinibertsError
from .fileio import atomic_path, atomic_write_text, output_folder

RELEASED = "released:"  # `released:tiny`: a colon never appears in a preset name or a Hub id
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
ETAG_TIMEOUT = 10  # seconds to wait for the Hub's answer about a revision before trying the cache
INSTALL = "pip install 'miniberts[hub]'"

# What our readers open (checkpoint.py, tokenizer.py, sbert.py); `*/` reaches a sentence-transformers module's folder.
SMALL_FILES = ["config.json", "*/config.json", "bert_config.json", "vocab.txt", "*/vocab.txt", "tokenizer.json",
               "*/tokenizer.json", "tokenizer_config.json", "*/tokenizer_config.json", "special_tokens_map.json",
               "modules.json", "sentence_bert_config.json", "*/sentence_bert_config.json"]
CONFIGS = [("config.json",), ("bert_config.json",)]
# The weights, best first: the first kind the repo has is the only one fetched.
WEIGHTS = [("model.safetensors",), ("pytorch_model.bin",), ("bert_model.ckpt.index", "bert_model.ckpt.data-*")]


class HubError(MinibertsError):
    """A model id that cannot be resolved to a complete local snapshot."""


@dataclass(frozen=True)
class HubRef:
    repo_id: str  # org/name
    revision: str | None  # a branch, tag or commit; None: main

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


def parse(name: str | Path) -> HubRef | None:
    """The Hub reference `name` stands for, or None when it is not one (a path, a preset name)."""
    text = str(name)
    if text.startswith(RELEASED):
        preset = find_preset(text[len(RELEASED):])
        if preset is None:
            raise HubError(f"{text}: {RELEASED}NAME takes a preset name (tiny, 4-256, 12/768, ...: `miniberts models`)")
        return HubRef(preset.repo_id, preset.revision)
    repo, at, revision = text.partition("@")
    if not REPO_ID.match(repo) or (at and not revision) or find_preset(text) is not None:
        return None
    return HubRef(repo, revision or None)


def local_path(model: str | Path) -> Path:
    """Where `model` is on this machine: an existing path as it is; a Hub id -> its snapshot in the Hugging Face
    cache (fetched once); anything else (a preset name, a missing path) as given, for the caller's own error."""
    path = Path(model)
    if path.exists():
        return path
    ref = parse(model)
    return snapshot(ref) if ref else path


def resolved_name(model: str | Path) -> str | None:
    """`org/name@<commit>` for a model given by Hub id (what a run's identity records); None for anything else."""
    ref = None if Path(model).exists() else parse(model)
    return f"{ref.repo_id}@{snapshot(ref).name}" if ref else None


def repo_of(model: str | Path) -> str | None:
    """The Hub repo a model came from: its id, or the repo of a Hugging Face cache snapshot directory."""
    path = Path(model)
    if not path.exists():
        ref = parse(model)
        return ref.repo_id if ref else None
    parts = path.resolve().parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3].removeprefix("models--").replace("--", "/")
    return None


def _hub(ref: HubRef | None = None):
    try:
        import huggingface_hub
        from huggingface_hub import constants, utils
    except ImportError:
        raise HubError(f"{ref}: no such local directory; loading it as a Hugging Face Hub id needs huggingface_hub: "
                       f"{INSTALL}") from None
    return huggingface_hub, constants, utils  # utils: the exception classes, where every version since 0.23 has them


_SNAPSHOTS: dict[tuple, Path] = {}  # resolved once per process (a `main` costs a request each time otherwise)


def snapshot(ref: HubRef) -> Path:
    """The snapshot directory of `ref` in the Hugging Face cache, complete for our loaders, fetched if need be
    (never with HF_HUB_OFFLINE=1: then from the cache alone). Every failure is one HubError line."""
    _, constants, _ = _hub(ref)
    offline = bool(constants.HF_HUB_OFFLINE)
    key = (ref, str(constants.HF_HUB_CACHE), offline)
    if key not in _SNAPSHOTS:
        _SNAPSHOTS[key] = _fetch(ref, offline)
    return _SNAPSHOTS[key]


def cache_folder(ref: HubRef) -> Path:
    _, constants, _ = _hub()
    return Path(constants.HF_HUB_CACHE) / ("models--" + ref.repo_id.replace("/", "--"))


def _fetch(ref: HubRef, offline: bool) -> Path:
    listing = None if offline else _listing(ref)
    if listing is None:  # offline, or the Hub unreachable: the cache alone answers, with no further request
        why = "offline" if offline else "the Hub could not be reached"
        where = _download(ref, SMALL_FILES, local=True, why=why)
        prefix = _module_folder(where)
        for what, kinds in (("no config.json", CONFIGS), ("no weights", WEIGHTS)):
            if not any(_present(where, [prefix + p for p in kind]) for kind in kinds):
                raise HubError(f"{ref}: the cached snapshot at {where} has {what} (a download that did not "
                               f"finish?); fetch it again with `miniberts download {ref}` on a machine with network")
        return where
    files, commit = listing
    pinned = HubRef(ref.repo_id, commit)  # a branch resolved once: both downloads read the same commit
    where = _download(pinned, SMALL_FILES, local=False)
    prefix = _module_folder(where)
    found = {}
    for what, kinds in (("config", CONFIGS), ("weights", WEIGHTS)):
        kind = next((k for k in kinds if all(fnmatch.filter(files, prefix + p) for p in k)), None)
        if kind is None:
            raise HubError(f"{ref}: the repository has no {what} that miniberts reads "
                           f"({' or '.join(k[0] for k in kinds)})")
        found[what] = [prefix + p for p in kind]
    where = _download(pinned, found["weights"], local=False)  # only the first kind of weights the repo has
    for patterns in found.values():
        if not _present(where, patterns):
            raise HubError(f"{ref}: the download into {where} did not complete ({patterns[0]} is missing); run it "
                           "again")
    return where


def _listing(ref: HubRef) -> tuple[list[str], str] | None:
    """(the repo's files, the commit) at `ref`; None when the Hub cannot be reached (then the cache decides, as
    snapshot_download itself does). A missing repo or revision, a gated repo: one line at once."""
    hf, _, errors = _hub()
    with _one_line(ref):
        try:
            info = hf.HfApi(library_name="miniberts").model_info(ref.repo_id, revision=ref.revision,
                                                                 timeout=ETAG_TIMEOUT)
        except errors.HfHubHTTPError as e:
            if e.response is None or e.response.status_code < 500:
                raise  # the repo, the revision or the access is wrong: said in one line by _one_line
            return None  # the Hub is down
        except Exception:  # no network: httpx's and OSError's many kinds all mean "ask the cache"
            return None
    return [s.rfilename for s in info.siblings or []], info.sha


def _present(where: Path, patterns: list[str]) -> bool:
    """Every pattern matches a readable file (a dangling link is a blob that never came)."""
    return all(any(f.is_file() for f in where.glob(p)) for p in patterns)


def _module_folder(snapshot_dir: Path) -> str:
    """The folder of a sentence-transformers Transformer module ("" when it is the snapshot itself)."""
    from .sbert import read_layout

    layout = read_layout(snapshot_dir)
    if layout is None or layout.model_dir.resolve() == snapshot_dir.resolve():
        return ""
    return layout.model_dir.relative_to(snapshot_dir).as_posix() + "/"


def _download(ref: HubRef, patterns: list[str], local: bool, why: str = "") -> Path:
    """snapshot_download of `patterns`; `local`: from the cache alone, `why` (offline, the Hub unreachable)."""
    hf, _, _ = _hub()
    with _one_line(ref, why):
        return Path(hf.snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=patterns,
                                         local_files_only=local, etag_timeout=ETAG_TIMEOUT,
                                         library_name="miniberts"))


@contextmanager
def _one_line(ref: HubRef, why: str = ""):
    """huggingface_hub's exceptions -> one HubError line each."""
    _, _, errors = _hub()
    from huggingface_hub import errors as more_errors

    incomplete = getattr(more_errors, "IncompleteSnapshotError", ())  # huggingface_hub >= 1.x checks its tree listing
    how = f"fetch it with `miniberts download {ref}` on a machine with network"
    try:
        yield
    except incomplete:
        raise HubError(f"{ref}: the cached snapshot in {cache_folder(ref)} is incomplete (a download that did not "
                       f"finish); {how}") from None
    except errors.GatedRepoError:
        raise HubError(f"{ref}: a gated repository: accept its terms on https://huggingface.co/{ref.repo_id} and "
                       "set HF_TOKEN (or `hf auth login`)") from None
    except errors.RepositoryNotFoundError:
        raise HubError(f"{ref}: no such local directory, and no such model repository on the Hub (a private one "
                       "needs HF_TOKEN)") from None
    except errors.RevisionNotFoundError:
        raise HubError(f"{ref}: the repository {ref.repo_id} has no revision {ref.revision!r} (a branch, tag or "
                       "commit)") from None
    except errors.LocalEntryNotFoundError as e:
        why = why or f"the Hub could not be reached: {_cause(e)}"
        raise HubError(f"{ref}: no such local directory, and not in the Hugging Face cache at {cache_folder(ref)} "
                       f"({why}); {how}") from None
    except (errors.HfHubHTTPError, ValueError, OSError) as e:  # a malformed id (HFValidationError), the Hub down, ...
        raise HubError(f"{ref}: {_cause(e)}") from None


def _cause(e: BaseException) -> str:
    cause = e.__cause__ or e
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0][:160]}" if lines else type(cause).__name__


# --- `miniberts download` -------------------------------------------------------------------------------------

def download_ref(name: str) -> HubRef:
    """What `miniberts download NAME` fetches: a Hub id as given; a preset name (`tiny`) or `released:tiny` -> the
    released checkpoint at its pinned revision (a download of a random initialisation would mean nothing)."""
    preset = find_preset(name)
    ref = HubRef(preset.repo_id, preset.revision) if preset else parse(name)
    if ref is None:
        raise HubError(f"{name}: not a Hub id (org/name[@revision]), a preset name or released:NAME")
    return ref


def export_snapshot(ref: HubRef, snapshot_dir: Path, out_dir: Path) -> Path:
    """A self-contained copy of a snapshot (links followed) in out_dir/<repo name>, for a machine without network,
    with source.json recording the repo and the commit it came from."""
    target = out_dir / ref.repo_id.split("/")[-1]
    files = sorted(p for p in snapshot_dir.rglob("*") if p.is_file())
    names = {p.relative_to(snapshot_dir).parts[0] for p in files} | {"source.json"}
    with output_folder(target, names):  # the folder rule: never over a file miniberts did not write
        for src in files:
            with atomic_path(target / src.relative_to(snapshot_dir)) as tmp:
                shutil.copyfile(src, tmp)
        source = {"repo_id": ref.repo_id, "revision": ref.revision or "main", "commit": snapshot_dir.name}
        atomic_write_text(target / "source.json", json.dumps(source, indent=2))
    return target
