"""The calibrated int8 of ONNX Runtime (inference/backends/smoothquant.py) and of OpenVINO (ov_int8.py, NNCF): the
scale migration is exact in fp32, the artifact is cached per weights and per calibration data, `auto --int8` picks
them only where what builds them is installed, and on the real MiniLM each keeps cosine >= 0.99 to fp32 on every one
of 300 real sentences (OpenVINO's on very short texts too) and a linear probe's accuracy. No timing assertions."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from miniberts.checkpoint import load_encoder
from miniberts.data.builtin import news_sentences
from miniberts.errors import MinibertsError
from miniberts.inference import backends
from miniberts.inference.backends import ort, ov, ov_int8, smoothquant
from miniberts.inference.batching import embed
from miniberts.inference.export import export_onnx, session

from conftest import MINILM, needs_minilm
from test_fast_paths import rotten_tomatoes

pytestmark = pytest.mark.skipif(backends.missing_module("onnxruntime") is not None, reason="needs the onnx extra")


def test_builtin_calibration_text_is_a_fixed_sample_of_real_sentences():
    texts = news_sentences(smoothquant.CALIBRATION_SENTENCES)
    assert len(texts) == 256 and len(set(texts)) > 250
    assert all(len(t.split()) >= 4 for t in texts)
    assert texts == news_sentences(256), "the same sample every time: it is part of the cache key"


def test_smoothing_is_exact_in_fp32(tmp_path):
    """X W = (X / s)(s W): the smoothed graph, not yet quantized, computes what the fp32 graph does."""
    torch.manual_seed(0)
    encoder, tok = load_encoder("2-128")
    raw = export_onnx(encoder.eval(), tmp_path / "raw.onnx")
    ids = smoothquant.calibration_ids(tok, news_sentences(16))
    smoothed = smoothquant.smooth(raw, tmp_path / "smoothed.onnx", smoothquant.input_maxima(encoder, ids),
                                  dict.fromkeys(smoothquant.SMOOTHED, 0.5))
    assert len(smoothquant.layer_matmuls(raw, smoothquant.SMOOTHED)) == 2 * 3
    batch = {k: v.numpy() for k, v in tok(["a fine film", "dull, slow and far too long"], max_length=32).items()}
    want, got = session(raw).run(None, batch), session(smoothed).run(None, batch)
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    scales = [n for n in __import__("onnx").load(str(smoothed)).graph.node if n.name.endswith("/smooth")]
    assert len(scales) == 6, "a Mul before every qkv, out and fc MatMul"


def needs(engine: str):
    return pytest.mark.skipif(backends.missing_module(engine) is not None or (
        engine == "openvino" and not ov_int8.nncf_installed()), reason=f"needs {engine} (and NNCF for openvino)")


@pytest.mark.parametrize("engine, module, variant", [
    pytest.param("onnxruntime", ort, "onnxruntime-int8-smoothquant-", marks=needs("onnxruntime")),
    pytest.param("openvino", ov_int8, "openvino-int8-nncf-", marks=needs("openvino"))])
def test_int8_artifact_is_cached_by_weights_and_calibration(tmp_path, monkeypatch, engine, module, variant):
    """OpenVINO's writer is swapped for a copy of one fp32 IR (NNCF takes seconds per build): the key is tested."""
    monkeypatch.setenv("MINIBERTS_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    encoder, tok = load_encoder("2-128")
    built = []
    if engine == "onnxruntime":
        real_build = module.build
    else:
        (tmp_path / "ir").mkdir()
        ov.build(encoder)(tmp_path / "ir")
        def real_build(enc, ids):
            return lambda folder: [shutil.copy(f, folder) for f in (tmp_path / "ir").iterdir()]

    def counting_build(enc, *args):  # the calibration token ids come last
        write = real_build(enc, *args)
        return lambda folder: (built.append(len(args[-1])), write(folder))

    monkeypatch.setattr(module, "build", counting_build)
    a, b = news_sentences(8), news_sentences(8, seed=1)
    backends.engine(engine, encoder, "int8", 1, tok, a)
    backends.engine(engine, encoder, "int8", 1, tok, a)
    assert built == [8], "the same weights and calibration: read from the cache"
    backends.engine(engine, encoder, "int8", 1, tok, b[:5])
    assert built == [8, 5], "other calibration data: another artifact"
    with torch.no_grad():
        encoder.layers[0].fc.weight.mul_(1.01)
    backends.engine(engine, encoder, "int8", 1, tok, a)
    assert built == [8, 5, 8], "other weights: another artifact"
    assert len(list((tmp_path / "cache").glob(f"*/{variant}*"))) == 3
    if engine == "openvino":
        monkeypatch.setattr(ov_int8, "RANGES", "mean_minmax")
        backends.engine(engine, encoder, "int8", 1, tok, a)
        monkeypatch.setattr(ov_int8, "FP32", ("proj",))
        backends.engine(engine, encoder, "int8", 1, tok, a)
        assert built == [8, 5, 8, 8, 8], "other quantization settings: another artifact"


def test_int8_needs_the_tokenizer_and_texts_and_auto_needs_the_calibration_text(monkeypatch):
    encoder, tok = load_encoder("2-128")
    with pytest.raises(MinibertsError, match="needs the model's tokenizer"):
        backends.engine("onnxruntime", encoder, "int8", 1)
    with pytest.raises(MinibertsError, match="at least one text"):
        backends.engine("onnxruntime", encoder, "int8", 1, tok, [])
    monkeypatch.setattr(backends, "calibration_installed", lambda: False)
    assert "onnxruntime" not in backends.available("int8") and "onnxruntime" in backends.available("fp32")
    assert "openvino" not in backends.available("int8")


@needs("openvino")
def test_openvino_int8_needs_nncf_and_the_tokenizer(monkeypatch):
    encoder, tok = load_encoder("2-128")
    with pytest.raises(MinibertsError, match="needs the model's tokenizer"):
        backends.engine("openvino", encoder, "int8", 1)
    assert "openvino" in backends.available("int8")
    monkeypatch.setattr(backends, "nncf_installed", lambda: False)
    assert "openvino" not in backends.available("int8") and "openvino" in backends.available("fp32")
    monkeypatch.setattr(ov_int8, "nncf_installed", lambda: False)
    with pytest.raises(MinibertsError, match=r"NNCF, which is not installed: pip install 'miniberts\[engines\]'"):
        backends.engine("openvino", encoder, "int8", 1, tok)


# The shortest texts are where int8 loses most ([CLS] and [SEP] are half of a three-token mean): the worst of
# benchmarks/int8_accuracy.py's short texts for each method, and a few more.
SHORT = ["Sure.", "Thanks", "Cool", "Eh.", "Ok!", "Wow.", "Meh.", "Ugh.", "Yes.", "No.", "Good", "movie", "?", ""]


@needs_minilm
@pytest.mark.parametrize("engine, short", [
    pytest.param("onnxruntime", [], marks=needs("onnxruntime")),
    pytest.param("openvino", SHORT, marks=needs("openvino"))])
def test_int8_agrees_and_keeps_task_accuracy_on_real_minilm(engine, short):
    """300 Rotten Tomatoes reviews (and, for OpenVINO, very short texts), mean pooling in padded batches of 32, the
    default calibration (built-in news text, not reviews). Cosine >= 0.99 on every text (benchmarks/int8_accuracy.py
    measured on 3,000 reviews and 153 short texts: min 0.9905 for OpenVINO's; ONNX Runtime's 0.992 on the reviews,
    but 0.9898 on "Thanks" (0.984 as backends.engine builds it), so short texts are not asserted for it; the
    uncalibrated dynamic int8 0.972). OpenVINO's (what `auto --int8` runs) costs NNCF's calibration of the real
    MiniLM on the 256 sentences (tens of seconds) when the artifact is not cached; the session's cache shares it with
    tests/test_backends.py's auto int8 test. Probe: a logistic-regression head fitted on 200 reviews' fp32
    features, applied to the other 100 reviews' fp32 and int8 features: >= 95% of its predictions agree and int8
    loses at most 2 points (two reviews; measured here for ONNX Runtime: 61% fp32, 63% int8; the study's 400-review
    probe measured the 0.5-point bound)."""
    from sklearn.linear_model import LogisticRegression

    encoder, tok = load_encoder(MINILM)
    texts, labels = rotten_tomatoes(300)
    labels = np.array(labels)
    fp32 = embed(encoder, tok, texts + short, "mean", max_length=128)
    int8_module, dtype = backends.for_encoder(load_encoder(MINILM)[0], engine, "int8", tokenizer=tok)
    int8 = embed(int8_module, tok, texts + short, "mean", max_length=128, dtype=dtype)
    cos = (fp32 * int8).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(int8, axis=1)
    assert cos.min() >= 0.99, ((texts + short)[cos.argmin()], cos.min())
    fp32, int8 = fp32[:300], int8[:300]
    head = LogisticRegression(max_iter=3000).fit(fp32[:200], labels[:200])
    want, got = head.predict(fp32[200:]), head.predict(int8[200:])
    accuracy = [(p == labels[200:]).mean() for p in (want, got)]
    assert accuracy[0] > 0.55, "the head learned something (sanity)"
    assert (want == got).mean() >= 0.95 and accuracy[1] >= accuracy[0] - 0.02, accuracy
