"""The public Python API (`import miniberts`): load -> embed / predict / save, the recipes as functions, and the
predict settings shared with the CLI (each bad one refused as one line, before the model runs)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import MINILM, needs_minilm

import miniberts
from miniberts.checkpoint import save_hf
from miniberts.cli import main
from miniberts.errors import MinibertsError
from miniberts.settings import SettingsError
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer

TEXTS = ["short", "a much longer sentence with quite a few more word pieces in it than the others", "x"]
LABELS = ["negative", "neutral", "positive"]


def tiny_config(**task) -> miniberts.BertConfig:
    return miniberts.BertConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, **task)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = miniberts.BertForSequenceClassification(tiny_config(id2label=LABELS))
    return str(save_hf(model, WordPieceTokenizer(BUILTIN_VOCAB), tmp_path_factory.mktemp("clf")))


@pytest.fixture(scope="module")
def regressor(tmp_path_factory) -> str:
    torch.manual_seed(1)
    model = miniberts.BertForSequenceClassification(tiny_config(regression=True))
    return str(save_hf(model, WordPieceTokenizer(BUILTIN_VOCAB), tmp_path_factory.mktemp("reg")))


def test_predict_equals_the_cli_file(classifier, tmp_path):
    model = miniberts.load(classifier, device="cpu")
    assert isinstance(model.module, miniberts.BertForSequenceClassification) and model.config.id2label == LABELS
    got = model.predict(TEXTS, dtype="fp32")
    (tmp_path / "in.txt").write_text("".join(t + "\n" for t in TEXTS))
    assert main(["predict", classifier, str(tmp_path / "in.txt"), "--output", str(tmp_path / "o.csv"),
                 "--dtype", "fp32"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "o.csv")))
    assert [r["label"] for r in got] == [row["label"] for row in rows]
    for r, row in zip(got, rows):
        assert list(r["probabilities"]) == LABELS and sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-6)
        assert [round(p, 6) for p in r["probabilities"].values()] == pytest.approx(
            [float(row[f"prob_{n}"]) for n in LABELS], abs=1e-6)
    # A classifier directory also embeds (its encoder), and an encoder directory cannot predict.
    assert model.embed(TEXTS).shape == (3, 32)
    encoder = miniberts.load("tiny")
    with pytest.raises(MinibertsError, match="tiny: no classification/regression head .* fine-tune it first"):
        encoder.predict(TEXTS)


def test_regression_scores_and_pairs(regressor):
    model = miniberts.load(regressor, device="cpu")
    scores = model.predict(TEXTS, pairs=["a", "b", "c"], dtype="fp32")
    batch = model.tokenizer(TEXTS, ["a", "b", "c"], 128)
    with torch.no_grad():
        expected = model.module(**batch)[:, 0].tolist()
    assert scores == pytest.approx(expected, abs=1e-5) and all(isinstance(s, float) for s in scores)
    assert model.predict([]) == [] and model.embed([]).shape == (0, 32)
    with pytest.raises(MinibertsError, match="3 texts but 2 pairs"):
        model.predict(TEXTS, pairs=["a", "b"])
    with pytest.raises(MinibertsError, match="texts must be a list of strings"):
        model.predict([1, 2])
    with pytest.raises(SettingsError, match="--max-length must be at least 5 for text pairs"):
        model.predict(TEXTS, pairs=["a", "b", "c"], max_length=4)


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--max-length", "1"], "--max-length must be at least 3, got 1"),
    (["--max-length", "-1"], "--max-length must be at least 3, got -1"),
    (["--max-length", "600"], "--max-length must be at most the 512 positions of "),
])
def test_bad_predict_settings_are_one_line(capsys, classifier, tmp_path, flags, message):
    (tmp_path / "in.txt").write_text("hello\n")
    code = main(["predict", classifier, str(tmp_path / "in.txt"), "--output", str(tmp_path / "o.csv"), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"miniberts predict: error: {message}"), err
    assert not (tmp_path / "o.csv").exists()


@needs_minilm
def test_save_then_load_gives_the_same_vectors(tmp_path):
    """The saved copy of a sentence-transformers directory embeds the same, here and in sentence-transformers."""
    st = pytest.importorskip("sentence_transformers")
    model = miniberts.load(MINILM, device="cpu")
    out = model.save(tmp_path / "saved")
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertModel"]
    a = model.embed(TEXTS, dtype="fp32")
    assert np.abs(miniberts.load(out, device="cpu").embed(TEXTS, dtype="fp32") - a).max() < 1e-6
    assert np.abs(st.SentenceTransformer(str(out), device="cpu").encode(TEXTS) - a).max() < 1e-5
    # An encoder loaded from a plain directory saves the plain Hugging Face layout.
    plain = miniberts.load("tiny").save(tmp_path / "plain")
    assert not (plain / "modules.json").exists() and (plain / "model.safetensors").is_file()


def test_recipes_check_their_settings_before_running(tmp_path):
    with pytest.raises(MinibertsError, match=r"glue: unknown settings \['bogus'\]"):
        miniberts.glue(bogus=1)
    with pytest.raises(MinibertsError, match=r"pretrain: unknown settings \['step'\]"):
        miniberts.pretrain(model="tiny", step=1)
    with pytest.raises(MinibertsError, match="finetune: config must be a FinetuneConfig, got GlueConfig"):
        miniberts.finetune(miniberts.GlueConfig())
    base = miniberts.FinetuneConfig(model="tiny", epochs=3)
    assert miniberts.api._config(miniberts.FinetuneConfig, base, {"epochs": 1}, "finetune").epochs == 1
    assert base.epochs == 3  # the caller's config is not changed


def test_public_surface():
    for name in miniberts.__all__:
        assert getattr(miniberts, name) is not None, name
    assert len(miniberts.PRESETS) == 24 and miniberts.find_preset("tiny").name == "2-128"
