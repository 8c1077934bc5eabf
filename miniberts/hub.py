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
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .config import find_preset
from .errors import MinibertsError

RELEASED = "released:"  # `released:tiny`: a colon never appears in a preset name or a Hub id
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
ETAG_TIMEOUT = 10  # seconds to wait for the Hub's answer about a revision before trying the cache
INSTALL = "pip install 'miniberts[hub]'"

# What our readers open (checkpoint.py, tokenizer.py, sbert.py); `*/` reaches a sentence-transformers module's folder.
SMALL_FILES = ["config.json", "*/config.json", "bert_config.json", "vocab.txt", "*/vocab.txt", "tokenizer.json",
               "*/tokenizer.json", "tokenizer_config.json", "*/tokenizer_config.json", "special_tokens_map.json",
               "modules.json", "sentence_bert_config.json", "*/sentence_bert_config.json"]
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


def _hub():
    try:
        import huggingface_hub
        from huggingface_hub import constants, errors
    except ImportError:
        raise HubError(f"loading a model by Hugging Face Hub id needs huggingface_hub: {INSTALL}") from None
    return huggingface_hub, constants, errors


_SNAPSHOTS: dict[tuple, Path] = {}  # resolved once per process (a `main` costs a request each time otherwise)


def snapshot(ref: HubRef, local_files_only: bool = False) -> Path:
    """The snapshot directory of `ref` in the Hugging Face cache, complete for our loaders, fetched if need be
    (never with HF_HUB_OFFLINE=1 or `local_files_only`). Every failure is one HubError line."""
    hf, constants, _ = _hub()
    offline = local_files_only or bool(constants.HF_HUB_OFFLINE)
    key = (ref, str(constants.HF_HUB_CACHE), offline)
    if key not in _SNAPSHOTS:
        _SNAPSHOTS[key] = _fetch(ref, offline)
    return _SNAPSHOTS[key]


def cache_folder(ref: HubRef) -> Path:
    _, constants, _ = _hub()
    return Path(constants.HF_HUB_CACHE) / ("models--" + ref.repo_id.replace("/", "--"))


def _fetch(ref: HubRef, offline: bool) -> Path:
    where = _download(ref, SMALL_FILES, offline)
    if not any((where / name).is_file() for name in ("config.json", "bert_config.json")):
        raise _incomplete(ref, where, offline, "no config.json")
    pinned = HubRef(ref.repo_id, where.name)  # the commit: later calls need no request to resolve a branch again
    prefix = _module_folder(where)
    listed = None if offline else _repo_files(pinned)  # online: fetch only the first kind of weights the repo has
    for kind in WEIGHTS:
        patterns = [prefix + p for p in kind]
        if listed is not None and not all(fnmatch.filter(listed, p) for p in patterns):
            continue
        where = _download(pinned, patterns, offline)
        if all(any(f.is_file() for f in where.glob(p)) for p in patterns):  # a dangling link: a blob never came
            return where
    raise _incomplete(ref, where, offline, "no weights (model.safetensors, pytorch_model.bin or bert_model.ckpt)")


def _module_folder(snapshot_dir: Path) -> str:
    """The folder of a sentence-transformers Transformer module ("" when it is the snapshot itself)."""
    from .sbert import read_layout

    layout = read_layout(snapshot_dir)
    if layout is None or layout.model_dir.resolve() == snapshot_dir.resolve():
        return ""
    return layout.model_dir.relative_to(snapshot_dir).as_posix() + "/"


def _incomplete(ref: HubRef, where: Path, offline: bool, what: str) -> HubError:
    if offline:
        return HubError(f"{ref}: the cached snapshot at {where} has {what} (a download that did not finish?); "
                        f"fetch it again with `miniberts download {ref}` on a machine with network")
    return HubError(f"{ref}: the repository has {what} that miniberts reads")


def _download(ref: HubRef, patterns: list[str], offline: bool) -> Path:
    hf, _, _ = _hub()
    with _one_line(ref, offline):
        return Path(hf.snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=patterns,
                                         local_files_only=offline, etag_timeout=ETAG_TIMEOUT,
                                         library_name="miniberts"))


def _repo_files(ref: HubRef) -> list[str]:
    hf, _, _ = _hub()
    with _one_line(ref, offline=False):
        return hf.HfApi(library_name="miniberts").list_repo_files(ref.repo_id, revision=ref.revision)


@contextmanager
def _one_line(ref: HubRef, offline: bool):
    """huggingface_hub's exceptions -> one HubError line each."""
    _, _, errors = _hub()
    incomplete = getattr(errors, "IncompleteSnapshotError", ())  # huggingface_hub >= 1.x checks its tree listing
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
        if offline:
            raise HubError(f"{ref}: no such local directory, and not in the Hugging Face cache at {cache_folder(ref)} "
                           f"(offline); {how}") from None
        raise HubError(f"{ref}: the Hub could not be reached ({_cause(e)}) and it is not in the Hugging Face cache at "
                       f"{cache_folder(ref)}; {how}") from None
    except (errors.HfHubHTTPError, ValueError, OSError) as e:  # a malformed id (HFValidationError), the Hub down, ...
        raise HubError(f"{ref}: {_cause(e)}") from None


def _cause(e: BaseException) -> str:
    cause = e.__cause__ or e
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0][:160]}" if lines else type(cause).__name__
