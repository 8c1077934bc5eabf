"""`miniberts predict`: every input format, every output format, input order kept, errors as one line."""

import csv
import json

import pytest
import torch

from miniberts.checkpoint import save_hf
from miniberts.cli import main
from miniberts.config import BertConfig
from miniberts.model import BertForSequenceClassification, BertModel
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer

# Lengths differ on purpose: prediction runs longest-first, so the output order is only right if it is restored.
TEXTS = ["short", "a much longer sentence with quite a few more word pieces in it than the others", "mid length text",
         "x", "another fairly long one, with punctuation; and commas, too"]
LABELS = ["negative", "neutral", "positive"]


def tiny_config(**task):
    return BertConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, **task)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(id2label=LABELS))
    path = save_hf(model, WordPieceTokenizer(BUILTIN_VOCAB), tmp_path_factory.mktemp("clf"))
    return str(path), model.eval()


@pytest.fixture(scope="module")
def regressor(tmp_path_factory):
    torch.manual_seed(1)
    model = BertForSequenceClassification(tiny_config(regression=True))
    path = save_hf(model, WordPieceTokenizer(BUILTIN_VOCAB), tmp_path_factory.mktemp("reg"))
    return str(path), model.eval()


def reference(model, texts, pairs=None):
    batch = WordPieceTokenizer(BUILTIN_VOCAB)(texts, pairs, 128)
    with torch.no_grad():
        return model(**batch)


def predict(*argv):
    return main(["predict", *argv, "--dtype", "fp32"])


def test_csv_in_csv_out_keeps_order_and_probabilities(classifier, tmp_path):
    path, model = classifier
    src = tmp_path / "in.csv"
    with open(src, "w", newline="") as f:
        csv.writer(f).writerows([["id", "text"], *((i, t) for i, t in enumerate(TEXTS))])
    out = tmp_path / "out.csv"
    assert predict(path, str(src), "--output", str(out), "--batch-size", "2") == 0
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == ["index", "label", "prob_negative", "prob_neutral", "prob_positive"]
    probs = torch.tensor([[float(r[f"prob_{n}"]) for n in LABELS] for r in rows])
    expected = reference(model, TEXTS).softmax(-1)
    torch.testing.assert_close(probs, expected, atol=2e-6, rtol=0)  # 6 decimals in the file
    assert [r["label"] for r in rows] == [LABELS[i] for i in expected.argmax(-1)]
    assert [r["index"] for r in rows] == ["0", "1", "2", "3", "4"]


def test_text_file_to_jsonl(classifier, tmp_path):
    path, model = classifier
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.jsonl"
    assert predict(path, str(src), "--output", str(out)) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(len(TEXTS)))
    expected = reference(model, TEXTS).softmax(-1)
    for r, p in zip(records, expected):
        assert list(r["probabilities"]) == LABELS
        assert r["probabilities"][r["label"]] == max(r["probabilities"].values())
        assert list(r["probabilities"].values()) == pytest.approx(p.tolist(), abs=1e-6)


def test_pairs_jsonl_to_tsv_regression(regressor, tmp_path):
    path, model = regressor
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"s1": a, "s2": b}) + "\n" for a, b in zip(TEXTS, reversed(TEXTS))))
    out = tmp_path / "out.tsv"
    assert predict(path, str(src), "--output", str(out), "--text-column", "s1", "--text-pair-column", "s2") == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "index\tscore" and len(lines) == 1 + len(TEXTS)
    scores = torch.tensor([float(line.split("\t")[1]) for line in lines[1:]])
    torch.testing.assert_close(scores, reference(model, TEXTS, list(reversed(TEXTS)))[:, 0], atol=1e-5, rtol=1e-5)


def test_tsv_input_with_a_sentence_column(classifier, tmp_path):
    path, _ = classifier
    src = tmp_path / "in.tsv"
    src.write_text("sentence\tlabel\n" + "".join(f"{t}\tx\n" for t in TEXTS))
    out = tmp_path / "out.csv"
    assert predict(path, str(src), "--output", str(out)) == 0
    assert len(out.read_text().splitlines()) == 1 + len(TEXTS)


def error(capsys, *argv):
    rc = predict(*argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    return err


def test_errors(classifier, tmp_path, capsys):
    path, _ = classifier
    src = tmp_path / "in.csv"
    src.write_text("id,body\n1,hello\n")
    err = error(capsys, path, str(src), "--output", str(tmp_path / "o.csv"))
    assert str(src) in err and "'id', 'body'" in err
    err = error(capsys, path, str(src), "--output", str(tmp_path / "o.csv"), "--text-column", "review")
    assert str(src) in err and "missing column(s) 'review'" in err
    err = error(capsys, path, str(src), "--output", str(tmp_path / "o.xlsx"), "--text-column", "body")
    assert "o.xlsx" in err and ".jsonl" in err
    err = error(capsys, path, str(tmp_path / "absent.txt"), "--output", str(tmp_path / "o.csv"))
    assert "absent.txt: file not found" in err

    encoder = tmp_path / "encoder"
    save_hf(BertModel(tiny_config()), WordPieceTokenizer(BUILTIN_VOCAB), encoder)
    (tmp_path / "in.txt").write_text("hello\n")
    err = error(capsys, str(encoder), str(tmp_path / "in.txt"), "--output", str(tmp_path / "o.csv"))
    assert str(encoder) in err and "fine-tune it first" in err
    assert not (tmp_path / "o.csv").exists()
