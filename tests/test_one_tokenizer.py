"""One tokenizer truth: a model directory whose tokenizer.json and vocab.txt disagree (ids, special tokens) would
tokenize one way in miniberts and Google's code (vocab.txt) and another in transformers' AutoTokenizer
(tokenizer.json). Such a directory is refused at load, in one line naming both files; one that agrees loads and
tokenizes as transformers does, its casing read as transformers reads it (tokenizer_config.json first)."""

import json
import shutil
from pathlib import Path

import pytest
import transformers

from miniberts.cli import main
from miniberts.errors import CheckpointError
from miniberts.tokenizer import WordPieceTokenizer

TEXT = "The stock market fell sharply on Monday."


@pytest.fixture
def model_dir(tiny, tmp_path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(tiny, out)
    return out


def swap_lines(path: Path, a: str, b: str) -> None:
    lines = path.read_text(encoding="utf-8").split("\n")
    i, j = lines.index(a), lines.index(b)
    lines[i], lines[j] = lines[j], lines[i]
    path.write_text("\n".join(lines), encoding="utf-8")


def test_an_agreeing_directory_tokenizes_as_transformers(model_dir):
    ours = WordPieceTokenizer.from_dir(model_dir)
    ids, _ = ours.encode([TEXT], max_length=64)
    assert ids[0] == transformers.AutoTokenizer.from_pretrained(model_dir)(TEXT)["input_ids"]


def test_ids_that_disagree_are_refused_naming_both_files(model_dir, tmp_path, capsys):
    swap_lines(model_dir / "vocab.txt", "stock", "market")
    # what the refusal prevents: transformers (tokenizer.json) and a reading of vocab.txt now give other ids
    theirs = transformers.AutoTokenizer.from_pretrained(model_dir)(TEXT)["input_ids"]
    from_vocab_txt, _ = WordPieceTokenizer(model_dir / "vocab.txt").encode([TEXT], max_length=64)
    assert theirs != from_vocab_txt[0]
    with pytest.raises(CheckpointError) as e:
        WordPieceTokenizer.from_dir(model_dir)
    message = str(e.value)
    assert message.startswith(f"{model_dir / 'vocab.txt'} and {model_dir / 'tokenizer.json'} disagree: 'stock' is id ")
    assert message.endswith("in tokenizer.json; delete the one the model was not trained with (transformers reads "
                            "tokenizer.json, miniberts vocab.txt)")
    assert "\n" not in message
    texts = tmp_path / "t.txt"
    texts.write_text(TEXT + "\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["embed", str(model_dir), str(texts), "--output", str(tmp_path / "v.npy"), "--backend", "torch"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "disagree: 'stock' is id" in err, err


def test_special_tokens_that_disagree_are_refused(model_dir):
    path = model_dir / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for added in data["added_tokens"]:
        if added["content"] == "[MASK]":
            added["id"] = 104
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"disagree: special token '\[MASK\]' is id 103 in vocab.txt, 104 in "
                                              r"tokenizer.json"):
        WordPieceTokenizer.from_dir(model_dir)


def test_casing_is_read_as_transformers_reads_it(model_dir):
    """tokenizer_config.json's do_lower_case wins over tokenizer.json's normalizer, in transformers as here: no two
    truths, so such a directory loads, cased in both."""
    path = model_dir / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["do_lower_case"] = False
    path.write_text(json.dumps(config), encoding="utf-8")
    ours = WordPieceTokenizer.from_dir(model_dir)
    theirs = transformers.AutoTokenizer.from_pretrained(model_dir)(TEXT)["input_ids"]
    assert not ours.lowercase and ours.encode([TEXT], max_length=64)[0][0] == theirs
    assert theirs != WordPieceTokenizer(model_dir / "vocab.txt").encode([TEXT], max_length=64)[0][0]  # not lowered
