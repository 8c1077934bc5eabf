"""The one writer rule (fileio.output_folder): every command that writes into a folder never replaces a file it did
not write, refuses a folder holding other files unless --force, and fails in one line (exit 2) on an output path
that is a file, under a file, read-only or on a full disk, leaving nothing behind; a closed or full standard output
is handled as Unix tools do."""

import errno
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import refused

from miniberts import fileio
from miniberts.cli import main

REPO = Path(__file__).resolve().parents[1]
EXCERPT = str(REPO / "tests" / "fixtures" / "pretraining" / "wiki_excerpt.txt")
GLUE = REPO / "tests" / "fixtures" / "glue_data"

TASK = ["--train", str(GLUE / "RTE" / "train.tsv"), "--dev", str(GLUE / "RTE" / "dev.tsv"), "--text-column",
        "sentence1", "--text-pair-column", "sentence2", "--label-column", "label"]

needs_gensim = pytest.mark.skipif(importlib.util.find_spec("gensim") is None, reason="needs PyPI gensim")


def tree(folder: Path) -> dict:
    """Every file under `folder` with its bytes: what 'left as it was found' compares."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def read_only(tmp_path):
    """A folder nobody can write into, root included: mode 0555, and where root ignores modes the immutable
    attribute (chattr +i); skipped where neither holds."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.access(folder, os.W_OK):  # root: mode bits do not bind
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        if not immutable or os.access(folder, os.W_OK):
            pytest.skip("this user can write into a mode-0555 folder and chattr +i is not available here")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def writers(tiny: str, out: Path) -> dict[str, list[str]]:
    """Each folder writer's command line into `out`."""
    return {
        "data": ["data", "fetch", "lee_similarity", "--out", str(out)],
        "vocab": ["vocab", "--files", EXCERPT, "--size", "300", "--out", str(out), "--no-progress"],
        "convert": ["convert", tiny, str(out)],
        "export": ["export", tiny, "--engine", "onnxruntime", "--out", str(out)],
        "bench": ["bench", "--quick", "--out", str(out / "bench.md")],
        "finetune": ["finetune", "--model", tiny, *TASK, "--out", str(out)],
        "experiment": ["experiment", "--students", "tiny", "--strategies", "scratch-ft", *TASK, "--out", str(out)],
    }


WRITERS = ["data", "vocab", "convert", "export", "bench", "finetune", "experiment"]


def _skip_missing(name: str) -> None:
    if name == "data" and importlib.util.find_spec("gensim") is None:
        pytest.skip("needs PyPI gensim")
    if name == "export" and importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("needs onnxruntime")


@pytest.mark.parametrize("name", WRITERS)
def test_every_writer_into_a_file_or_under_a_file_is_one_line(tiny, tmp_path, capsys, name):
    _skip_missing(name)
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    out = afile if name != "bench" else tmp_path / "afile" / "sub"  # bench's --out names a file in a folder
    err = refused(capsys, writers(tiny, out)[name])
    assert str(afile) in err and ("a file" in err or "Not a directory" in err), err
    err = refused(capsys, writers(tiny, afile / "below")[name])
    assert f"{afile}: cannot create the folder (" in err, err
    assert afile.read_text() == "mine\n" and sorted(os.listdir(tmp_path)) == ["afile"]


@pytest.mark.parametrize("name", WRITERS)
def test_every_writer_into_a_read_only_folder_is_one_line(tiny, read_only, capsys, name):
    _skip_missing(name)
    for out in (read_only, read_only / "new"):
        err = refused(capsys, writers(tiny, out)[name])
        assert str(read_only) in err and ("Permission denied" in err or "Operation not permitted" in err), err
    assert os.listdir(read_only) == []


@needs_gensim
def test_data_fetch_never_replaces_a_users_file(tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    (out / "train.tsv").write_text("my own rows\n")
    for force in ([], ["--force"]):
        err = refused(capsys, ["data", "fetch", "lee_similarity", "--out", str(out), *force])
        assert err.endswith(f"{out / 'train.tsv'}: not written by miniberts, so never replaced; move it or choose "
                            "another folder")
    assert tree(out) == {"train.tsv": b"my own rows\n"}


@needs_gensim
def test_a_folder_holding_other_files_needs_force_and_keeps_them(tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.md").write_text("mine")
    err = refused(capsys, ["data", "fetch", "lee_similarity", "--out", str(out)])
    assert err.endswith(f"{out}: holds files miniberts did not write (notes.md); choose another folder, or --force "
                        "to write beside them")
    assert tree(out) == {"notes.md": b"mine"}
    assert main(["data", "fetch", "lee_similarity", "--out", str(out), "--force"]) == 0
    assert (out / "notes.md").read_text() == "mine"
    assert fileio.made_here(out) == {"train.tsv", "dev.tsv", "test.tsv", "SOURCES.md"}
    # its own folder: rewritten without --force (an older write's files are its own)
    own = tmp_path / "own"
    assert main(["data", "fetch", "lee_similarity", "--out", str(own)]) == 0
    before = tree(own)
    assert main(["data", "fetch", "lee_similarity", "--out", str(own)]) == 0
    assert tree(own) == before


@needs_gensim
def test_a_full_disk_leaves_no_folder_and_no_file(tmp_path, capsys, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    out = tmp_path / "data"
    err = refused(capsys, ["data", "fetch", "lee_similarity", "--out", str(out)])
    assert err.endswith("cannot write (No space left on device)") and str(out) in err, err
    assert os.listdir(tmp_path) == []


def test_vocab_beside_other_files_with_force_only(tmp_path, capsys):
    out = tmp_path / "v"
    out.mkdir()
    (out / "vocab.txt").write_text("[PAD]\nmine\n")
    argv = ["vocab", "--files", EXCERPT, "--size", "300", "--out", str(out), "--no-progress"]
    assert refused(capsys, [*argv, "--force"]).endswith(f"{out / 'vocab.txt'}: not written by miniberts, so never "
                                                      "replaced; move it or choose another folder")
    (out / "vocab.txt").rename(out / "old-vocab.txt")
    assert "--force to write beside them" in refused(capsys, argv)
    assert main([*argv, "--force"]) == 0
    assert (out / "old-vocab.txt").read_text() == "[PAD]\nmine\n" and (out / "vocab_stats.json").is_file()


def test_convert_and_export_into_their_own_earlier_output(tiny, tmp_path, capsys):
    out = tmp_path / "hf"
    assert main(["convert", tiny, str(out)]) == 0
    assert main(["convert", tiny, str(out)]) == 0  # its own files: replaced
    assert fileio.made_here(out) >= {"config.json", "model.safetensors", "vocab.txt"}
    if importlib.util.find_spec("onnxruntime") is None:
        return
    engine = tmp_path / "ort"
    engine.mkdir()
    (engine / "README").write_text("mine")
    assert "--force to write beside them" in refused(capsys, ["export", tiny, "--engine", "onnxruntime", "--out",
                                                            str(engine)])
    assert main(["export", tiny, "--engine", "onnxruntime", "--out", str(engine), "--force"]) == 0
    assert (engine / "README").read_text() == "mine" and (engine / "model.onnx").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary export folder is left"


def test_bench_refuses_to_replace_a_users_report_before_measuring(tmp_path, capsys):
    (tmp_path / "bench.json").write_text("{}")
    assert refused(capsys, ["bench", "--quick", "--out", str(tmp_path / "bench.md")]).endswith(
        f"{tmp_path / 'bench.json'}: not written by miniberts, so never replaced; move it or choose another folder")
    # the repository's own reports are on record as written by miniberts
    assert {"benchmarks.md", "benchmarks.json", "benchmarks.png"} <= fileio.made_here(REPO / "docs")


def _run_models(stdout) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "miniberts", "models"], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, env=env, timeout=120)


def test_a_closed_stdout_pipe_stops_quietly():
    read, write = os.pipe()
    os.close(read)  # `| head -1` that has already exited
    try:
        p = _run_models(write)
    finally:
        os.close(write)
    assert p.returncode == 141 and p.stderr == ""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_stdout_is_one_line():
    with open("/dev/full", "w") as full:
        p = _run_models(full)
    assert p.returncode == 2 and p.stderr == (
        "miniberts models: error: standard output: cannot write (No space left on device)\n")


def test_made_record_lists_exactly_what_was_written(tmp_path):
    with fileio.output_folder(tmp_path / "o", ["a.txt"]) as out:
        fileio.atomic_write_text(out / "a.txt", "x")
    assert json.loads((tmp_path / "o" / fileio.MADE).read_text())["files"] == ["a.txt"]
    with pytest.raises(ValueError):
        with fileio.output_folder(tmp_path / "new", ["b.txt"]):
            raise ValueError("refused before any file")
    assert not (tmp_path / "new").exists()
