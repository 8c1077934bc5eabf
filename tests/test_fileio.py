"""The one output writer (fileio.atomic_path): a bad output path or a failing write is one line, and nothing is left
under the final name or as a temporary file (a full disk, `--output` naming a directory)."""

import errno
from pathlib import Path

import numpy as np
import pytest

from miniberts import fileio
from miniberts.cli import main
from miniberts.errors import MinibertsError
from miniberts.fileio import atomic_write_text


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def one_line(call, *args) -> str:
    with pytest.raises(MinibertsError) as e:
        call(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_output_that_is_a_directory(tmp_path):
    target = tmp_path / "out.txt"
    target.mkdir()
    assert one_line(atomic_write_text, target, "x") == f"{target}: is a directory, expected a file name to write"
    assert leftovers(tmp_path) == ["out.txt"] and leftovers(target) == []


def test_full_disk_leaves_neither_the_file_nor_the_temporary(tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    target = tmp_path / "results.md"
    assert one_line(atomic_write_text, target, "x") == f"{target}: cannot write (No space left on device)"
    assert leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "results.md"
    target.write_text("old")
    monkeypatch.setattr(Path, "write_text", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    one_line(atomic_write_text, target, "new")
    assert target.read_text() == "old" and leftovers(tmp_path) == ["results.md"]


def test_unwritable_folder(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(fileio.tempfile, "mkstemp", denied)
    target = tmp_path / "o.txt"
    assert one_line(atomic_write_text, target, "x") == f"{target}: cannot write (Permission denied)"


def test_parent_that_is_a_file(tmp_path):
    (tmp_path / "run").write_text("a file, not a folder")
    target = tmp_path / "run" / "config.json"
    assert one_line(atomic_write_text, target, "x").startswith(f"{tmp_path / 'run'}: cannot create the folder (")


def test_device_or_fifo_is_not_replaced(tmp_path):
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert one_line(atomic_write_text, fifo, "x") == f"{fifo}: not a regular file, expected a file name to write"
    assert leftovers(tmp_path) == ["pipe"]


# --- the commands that write outputs: embed and convert ---------------------------------------------------------

def test_embed_output_directory_and_full_disk(tiny, tmp_path, capsys, monkeypatch):
    texts = tmp_path / "t.txt"
    texts.write_text("hello\nworld\n")
    folder = tmp_path / "vectors.npy"
    folder.mkdir()
    assert main(["embed", tiny, str(texts), "--output", str(folder)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"miniberts embed: error: {folder}: is a directory, expected a file name to write")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    out = tmp_path / "o.npy"
    assert main(["embed", tiny, str(texts), "--output", str(out)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last == f"miniberts embed: error: {out}: cannot write (No space left on device)"
    assert leftovers(tmp_path) == ["t.txt", "vectors.npy"]


def test_convert_on_a_full_disk(tiny, tmp_path, capsys, monkeypatch):
    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    monkeypatch.setattr("miniberts.checkpoint.save_file", full)
    out = tmp_path / "converted"
    assert main(["convert", tiny, str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"miniberts convert: error: {out / 'model.safetensors'}: cannot write (No space left on device)")
    assert not out.exists()  # the folder it made for the files is gone with them
