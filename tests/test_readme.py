"""The README's ```python blocks, executed as written (in a fresh directory, with a fresh built-in data cache), so
the documented API cannot drift from the code: the real MiniLM embeds, a Tiny fine-tunes on a few hundred real
Rotten Tomatoes reviews and predicts."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from conftest import needs_minilm

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


@needs_minilm
def test_readme_python_runs(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "the README has no ```python block"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINIBERTS_CACHE", str(tmp_path / "cache"))
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    # What the example promises: unit rows from the sentence-transformers directory, the related pair closer.
    vectors = namespace["vectors"]
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert (tmp_path / "runs" / "rt-tiny" / "metrics.json").is_file()
    predictions = namespace["classifier"].predict(["A gorgeous, moving film."])
    assert set(predictions[0]) == {"label", "probabilities"} and predictions[0]["label"] in ("negative", "positive")
    assert "(3, 384)" in capsys.readouterr().out
