"""One text through `Model.embed` on an engine takes the numpy-only path (EngineEncoder.embed_one: no torch tensor,
no padding, pooled in numpy): it must give what the batched path and the torch reference give, for every pooling
and with or without normalisation, on the real MiniLM (fp32 within 1e-5 of torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import MINILM, needs_minilm

import miniberts
from miniberts.errors import MinibertsError
from miniberts.inference import backends
from miniberts.inference.backends.base import EngineEncoder
from miniberts.inference.config import EmbedConfig

TEXTS = ["Jurors in Virginia recommended that the man serve nine years in prison, said prosecutors.",
         "東京 and São Paulo 🙂", "   "]


@pytest.fixture(scope="module")
def minilm():
    if backends.missing_module("onnxruntime") is not None:
        pytest.skip("needs onnxruntime: pip install 'miniberts[onnx]'")
    return miniberts.load(MINILM, device="cpu")


@needs_minilm
@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
@pytest.mark.parametrize("normalize", [False, True])
def test_one_text_on_an_engine_equals_torch_and_the_batch(minilm, pooling, normalize, monkeypatch):
    calls = []
    monkeypatch.setattr(EngineEncoder, "forward", lambda *a: calls.append(a))  # the one-text path never calls it
    settings = dict(pooling=pooling, normalize=normalize, dtype="fp32")
    ones = np.stack([minilm.embed(t, backend="onnxruntime", **settings) for t in TEXTS])
    assert ones.dtype == np.float32 and ones.shape == (len(TEXTS), 384) and not calls
    monkeypatch.undo()
    batch = minilm.embed(TEXTS, backend="onnxruntime", **settings)
    torch_ref = minilm.embed(TEXTS, backend="torch", **settings)
    assert np.abs(ones - torch_ref).max() < 1e-5 and np.abs(ones - batch).max() < 1e-5
    if normalize:
        assert np.allclose(np.linalg.norm(ones, axis=1), 1.0, atol=1e-6)


@needs_minilm
def test_one_text_tokens_equal_the_batch_tokens(minilm):
    """The one-text tokenizer call (no encode_batch) truncates and pairs as the batched one does."""
    tok = minilm.tokenizer
    for texts, pairs in ((TEXTS, None), (["word " * 300, "a b"], ["second " * 200, "c"])):
        batched = tok.encode(texts, pairs, 64)
        for i, text in enumerate(texts):
            alone = tok.encode([text], None if pairs is None else [pairs[i]], 64)
            assert (alone[0][0], alone[1][0]) == (batched[0][i], batched[1][i])


@needs_minilm
def test_one_text_bad_pooling_is_refused(minilm):
    ids, types = minilm.embedding_tokens(TEXTS[:1], 32)
    cfg = EmbedConfig(backend="onnxruntime", dtype="fp32")
    cfg.pooling = "max"  # past the settings' own check: the server's entry point still refuses it
    with pytest.raises(MinibertsError, match="pooling must be one of"):
        minilm.embed_tokens(ids, types, cfg)


@needs_minilm
def test_one_text_on_openvino_returns_its_own_vector(minilm):
    """OpenVINO's one-text path pools straight from the engine's output buffers (no copy): the vector it returns must
    be its own, unchanged by the next call (another input shape), and equal numpy's pooling of `run`'s outputs, which
    are copies that the next call does not touch either."""
    if backends.missing_module("openvino") is not None:
        pytest.skip("needs openvino: pip install 'miniberts[openvino]'")
    first = minilm.embed(TEXTS[0], backend="openvino", dtype="fp32")  # MiniLM's own pooling: mean, normalised
    engine = minilm._runner(False, "openvino", torch.float32, False, 1)[0]
    ids, types = minilm.embedding_tokens(TEXTS[:1], 256)
    row = np.array(ids, np.int64)
    hidden, pooled = engine.run(row, np.ones_like(row), np.array(types, np.int64))
    kept = [first.copy(), hidden.copy(), pooled.copy()]
    minilm.embed("A much shorter text.", backend="openvino", dtype="fp32")
    assert all(np.array_equal(a, b) for a, b in zip((first, hidden, pooled), kept))
    mean = hidden[0].mean(0)
    assert np.abs(first - mean / np.linalg.norm(mean)).max() < 1e-6
