"""A blank or whitespace-only line is not a text: a file of unlabeled training text (a transfer set) skips such
lines and says how many (embed and predict keep one output row per input line); labeled rows with an empty text are
refused naming file and line; --transfer-sizes counts real texts; `vocab` refuses text that yields fewer pieces than
asked for."""

import logging
from pathlib import Path

import pytest
from conftest import refused

from miniberts.data.tasks import read_user_file
from miniberts.errors import DataError
from miniberts.inference.batching import read_lines, unlabeled_texts
from miniberts.train.distill import read_transfer

REPO = Path(__file__).resolve().parents[1]
SST = REPO / "tests" / "fixtures" / "glue_data" / "SST-2"
EXCERPT = REPO / "tests" / "fixtures" / "pretraining" / "wiki_excerpt.txt"


def real_sentences(n: int) -> list[str]:
    """n distinct real sentences (the Wikipedia excerpt's lines)."""
    lines = [line.strip() for line in EXCERPT.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(lines) >= n
    return lines[:n]


def test_unlabeled_lines_skip_blanks_and_say_how_many(tmp_path, caplog):
    path = tmp_path / "t.txt"
    path.write_text("first text\n\n   \n\t\nsecond text\r\n \r\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="miniberts"):
        assert unlabeled_texts(path) == [(1, "first text"), (5, "second text")]
    assert f"{path}: skipped 4 blank line(s); 2 texts" in caplog.text
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\t\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{blank}: no text \(only blank lines; expected one text per line\)$"):
        unlabeled_texts(blank)
    assert read_lines(blank) == [" ", "\t", ""]  # embed and predict: one output row per input line


def test_transfer_texts_are_counted_without_blanks_and_pairs_need_both(tmp_path):
    path = tmp_path / "transfer.txt"
    path.write_text("".join(s + "\n  \n" for s in real_sentences(5)), encoding="utf-8")
    texts, _ = read_transfer([str(path)], pairs=False)
    assert texts == real_sentences(5)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a first text\ta second one\n\n\nonly one side\t  \n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{pairs}:4: an empty text in a pair"):
        read_transfer([str(pairs)], pairs=True)


def test_labeled_rows_with_an_empty_text_are_refused_naming_file_and_line(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text('text,label\ngood film,pos\n"   ",neg\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{csv}:3: empty text in column 'text'$"):
        read_user_file(csv, "text", label_column="label")
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text('{"a": "x", "b": "y", "label": "1"}\n{"a": "x", "b": "", "label": "0"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{jsonl}:2: empty text in column 'b'$"):
        read_user_file(jsonl, "a", "b", "label")


def test_transfer_sizes_count_real_texts(tiny, tmp_path, capsys):
    transfer = tmp_path / "transfer.txt"
    transfer.write_text("".join(s + "\n \n" for s in real_sentences(40)), encoding="utf-8")  # 40 texts, 80 lines
    argv = ["experiment", "--students", "tiny", "--strategies", "distill", "--teacher", tiny, "--train",
            str(SST / "train.tsv"), "--dev", str(SST / "dev.tsv"), "--text-column", "sentence", "--label-column",
            "label", "--transfer", str(transfer), "--out", str(tmp_path / "exp")]
    assert refused(capsys, [*argv, "--transfer-sizes", "45"]).endswith(
        f"--transfer-sizes 45: the transfer set {transfer} has 40 texts")
    assert not (tmp_path / "exp").exists()


def test_vocab_refuses_blank_or_too_little_text_in_one_line(tmp_path, capsys):
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\t\n\n", encoding="utf-8")
    err = refused(capsys, ["vocab", "--files", str(blank), "--size", "200", "--out", str(tmp_path / "v")])
    assert err.endswith("needed for --size 200; give more text, a smaller --size or a lower --min-frequency"), err
    err = refused(capsys, ["vocab", "--files", str(EXCERPT), "--size", "30522", "--out", str(tmp_path / "v"),
                           "--no-progress"])
    assert f"{EXCERPT}: " in err and "needed for --size 30522" in err, err
    assert not (tmp_path / "v").exists()
