"""Sequence packing (inference/packing.py, `BertModel.packed_hidden`, the engines' packed graphs, the server's packed
passes): several inputs in one row must give each input what it gets alone.

Tolerances: the torch model packed against the same inputs one by one, fp32: 1e-5 max abs on real hidden states
(measured ~1e-6: the same kernels on other shapes); OpenVINO fp32 packed against OpenVINO fp32 padded: 1e-5 on
normalized embeddings (measured ~1e-7), and the pooler/classifier head, which run in torch on the packed path and
inside OpenVINO on the padded one: 1e-3 (measured ~1e-4); OpenVINO packed against our torch encoder: the engine's own
5e-3 / cosine 0.9999 of tests/test_backends.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import miniberts
from miniberts.config import BertConfig
from miniberts.errors import MinibertsError
from miniberts.inference import backends
from miniberts.inference.config import EmbedConfig, PredictConfig
from miniberts.inference.packing import pack_rows, packed_arrays, pool_packed
from miniberts.inference.serve.config import ServeConfig
from miniberts.inference.serve.forwards import ForwardCost, PackedForward, plan
from miniberts.inference.serve.service import Service
from miniberts.model import BertModel

from conftest import MINILM, needs_minilm
from test_fast_paths import rotten_tomatoes
from test_serve import LABELS, classifier  # noqa: F401 (classifier: the small fine-tuned head's fixture)


def needs_openvino():
    if backends.missing_module("openvino") is not None:
        pytest.skip("openvino is not installed: " + backends.EXTRAS["openvino"])


def test_rows_hold_every_input_once_within_the_width():
    lengths = [60, 12, 50, 7, 33, 30, 64, 2, 18, 40]
    rows = pack_rows(lengths, 64)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)
    assert rows[0] == [6] and rows[1] == [0, 7] and len(rows) == 6  # first fit, longest first: 316 tokens in 6 rows
    assert pack_rows([], 64) == []
    with pytest.raises(MinibertsError, match="65 tokens does not fit a packed row of 64"):
        pack_rows([10, 65], 64)


def test_packed_arrays_restart_positions_and_number_segments():
    ids = [[2, 5, 3], [2, 6, 7, 8, 3], [2, 3]]
    types = [[0, 0, 1], [0, 0, 0, 1, 1], [0, 1]]
    packed = packed_arrays(ids, types, [[1], [0, 2]], 6)
    assert packed.input_ids.tolist() == [[2, 6, 7, 8, 3, 0], [2, 5, 3, 2, 3, 0]]
    assert packed.token_type_ids.tolist() == [[0, 0, 0, 1, 1, 0], [0, 0, 1, 0, 1, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 0], [0, 1, 2, 0, 1, 0]]
    assert packed.segment_ids.tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 2, 2, 0]]
    assert packed.starts.tolist() == [6, 0, 9] and packed.lengths.tolist() == [3, 5, 2]
    assert packed_arrays(ids, types, [[1], [0, 2], []], 6).input_ids[2].tolist() == [0] * 6  # an empty row: padding
    hidden = np.arange(2 * 6 * 2, dtype=np.float32).reshape(2, 6, 2)
    flat = hidden.reshape(-1, 2)
    assert pool_packed(hidden, packed, "cls").tolist() == flat[[6, 0, 9]].tolist()
    expected = [flat[6:9].mean(0), flat[0:5].mean(0), flat[9:11].mean(0)]
    assert np.allclose(pool_packed(hidden, packed, "mean"), expected)


def test_a_packed_row_gives_each_input_its_own_hidden_states():
    """The torch model's packed form (what the engines' packed graphs are traced from) against each input alone."""
    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)).eval()
    rng = np.random.default_rng(0)
    ids = [[2] + rng.integers(1000, 30000, n - 2).tolist() + [3] for n in (9, 4, 17, 6, 3, 12)]
    types = [[0] * (len(x) // 2) + [1] * (len(x) - len(x) // 2) for x in ids]  # pairs too: token types travel along
    rows = pack_rows([len(x) for x in ids], 24)
    packed = packed_arrays(ids, types, rows, 24)
    with torch.no_grad():
        hidden = model.packed_hidden(*(torch.from_numpy(a) for a in (packed.input_ids, packed.token_type_ids,
                                                                     packed.position_ids, packed.segment_ids)))
        flat = hidden.flatten(0, 1)
        for i, x in enumerate(ids):
            alone, _ = model(torch.tensor([x]), None, torch.tensor([types[i]]))
            start = int(packed.starts[i])
            assert (flat[start:start + len(x)] - alone[0]).abs().max() < 1e-5


@needs_minilm
def test_openvino_packed_embeddings_equal_its_padded_ones_on_the_real_minilm():
    needs_openvino()
    model = miniberts.load(MINILM, "cpu")
    texts, _ = rotten_tomatoes(48)
    ids, types = model.embedding_tokens(texts, 256)
    rows = pack_rows([len(x) for x in ids], 128)
    assert len(rows) < len(texts) / 2  # short sentences share rows
    reference = model.embed(texts, dtype="fp32", backend="torch", normalize=True)
    for pooling in ("mean", "cls", "pooler"):
        cfg = EmbedConfig(normalize=True, pooling=pooling, dtype="fp32", backend="openvino")
        assert model.packs(cfg)
        packed = model.embed_packed(ids, types, cfg, rows, 128)
        padded = model.embed_tokens(ids, types, cfg)
        assert np.abs(packed - padded).max() < (1e-3 if pooling == "pooler" else 1e-5), pooling
        if pooling == "mean":
            assert (packed * reference).sum(1).min() >= 0.9999


def test_openvino_packed_predictions_equal_its_padded_ones(classifier):
    needs_openvino()
    model = miniberts.load(classifier, "cpu")
    texts, _ = rotten_tomatoes(24)
    pairs = texts[::-1]
    ids, types = model.tokenizer.encode(texts, pairs, 128)
    cfg = PredictConfig(dtype="fp32", backend="openvino")
    rows = pack_rows([len(x) for x in ids], 128)
    packed = model.predict_packed(ids, types, cfg, rows, 128)
    padded = model.predict_tokens(ids, types, cfg)
    assert packed.shape == (24, len(LABELS)) and (packed - padded).abs().max() < 1e-3


def test_engines_without_a_packed_graph_refuse_it_in_one_line(classifier):
    if backends.missing_module("onnxruntime") is not None:
        pytest.skip("onnxruntime is not installed: " + backends.EXTRAS["onnxruntime"])
    model = miniberts.load(classifier, "cpu")
    cfg = EmbedConfig(dtype="fp32", backend="onnxruntime")
    assert not model.packs(cfg)
    with pytest.raises(MinibertsError, match="packed rows need torch or an engine that runs them"):
        model.embed_packed([[2, 3]], [[0, 0]], cfg, [[0]], 16)


@pytest.mark.parametrize("dtype, tolerance", [("fp32", 1e-5), ("bf16", 1e-2)])
def test_torch_packed_passes_equal_its_padded_ones(classifier, dtype, tolerance):
    """The torch backend packs too (eager `packed_hidden`, under the settings' autocast): embeddings with every
    pooling and predictions as its padded forwards give them. Measured: fp32 ~1e-7; bf16 ~1.5e-3 (both paths
    autocast, in other shapes: bf16 rounds differently)."""
    model = miniberts.load(classifier, "cpu")
    texts, _ = rotten_tomatoes(24)
    ids, types = model.tokenizer.encode(texts, texts[::-1], 128)
    rows = pack_rows([len(x) for x in ids], 256)
    for pooling in ("mean", "cls", "pooler"):
        cfg = EmbedConfig(pooling=pooling, normalize=True, dtype=dtype, backend="torch")
        assert model.packs(cfg)
        packed = model.embed_packed(ids, types, cfg, rows, 256)
        padded = model.embed_tokens(ids, types, cfg)
        assert packed.shape == padded.shape == (24, 32) and np.abs(packed - padded).max() < tolerance, pooling
    cfg = PredictConfig(dtype=dtype, backend="torch")
    packed = model.predict_packed(ids, types, cfg, rows, 256)
    padded = model.predict_tokens(ids, types, cfg)
    assert packed.shape == (24, len(LABELS)) and (packed - padded).abs().max() < tolerance


def test_the_plan_packs_short_inputs_when_that_is_cheaper_and_splits_otherwise():
    short = [12, 30, 25, 8, 40, 22, 17, 35] * 8  # 64 sentences
    costly_forwards = ForwardCost(500.0, 1.0, 0.001)
    packed = plan(short, costly_forwards, 512, packs=True)
    assert isinstance(packed, PackedForward) and packed.width in (64, 128, 256, 512)
    assert sorted(i for row in packed.rows for i in row) == list(range(64))
    assert all(sum(short[i] for i in row) <= packed.width for row in packed.rows)
    assert not isinstance(plan(short, costly_forwards, 512, packs=False), PackedForward)
    assert plan([], costly_forwards, 512, packs=True) == []
    # one 500-token text among short ones: packed rows of 512 would pay attention over 512 for every token
    long_and_short = [500] + [10] * 31
    assert not isinstance(plan(long_and_short, ForwardCost(5.0, 1.0, 0.05), 512, packs=True), PackedForward)


def test_a_server_on_openvino_runs_its_passes_packed_and_answers_as_model_embed(classifier):
    needs_openvino()
    texts, _ = rotten_tomatoes(40)
    expected = miniberts.load(classifier, "cpu").embed(texts, dtype="fp32", backend="torch", normalize=True)
    for pack in (True, False):
        service = Service(ServeConfig(backend="openvino", dtype="fp32", pack=pack), classifier,
                          miniberts.load(classifier, "cpu"))
        service.start()
        try:
            assert service.packs is pack and service.info()["packed_passes"] is pack
            service.forward_cost = ForwardCost(1.0, 1e-3, 0.0)  # as if measured: forwards are costly, tokens cheap
            ids, types = service.model.embedding_tokens(texts, service.embed_length)
            assert isinstance(plan([len(x) for x in ids], service.forward_cost, 512, service.packs), PackedForward) is pack
            vectors = np.asarray(service._compute(("embed", True), ids, types))
            assert np.abs(vectors - expected).max() < 5e-3 and (vectors * expected).sum(1).min() > 0.9999
            scores = service._compute(("predict", False), *service.model.tokenizer.encode(texts, None, 128))
            direct = miniberts.load(classifier, "cpu").predict(texts, dtype="fp32", backend="torch")
            assert [max(zip(s, LABELS))[1] for s in scores] == [d["label"] for d in direct]
        finally:
            service.stop()


def test_packed_shapes_come_in_few_row_counts():
    from miniberts.inference.serve.forwards import packed_row_count
    assert [packed_row_count(n) for n in (1, 5, 8, 9, 11, 16, 17, 33, 64, 65)] == [1, 5, 8, 10, 12, 16, 20, 40, 64, 80]
    assert all(n <= packed_row_count(n) < n * 1.25 + 1 for n in range(1, 600))
    assert len({packed_row_count(n) for n in range(1, 65)}) == 20
