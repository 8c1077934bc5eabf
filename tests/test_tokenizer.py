"""`miniberts.tokenizer` against two references, on a real multi-script corpus.

References:
- `transformers.BertTokenizer` (Rust `tokenizers`, what most users run) from all-MiniLM-L6-v2's directory, which
  holds bert-base-uncased's vocab: ids, pair truncation and token type ids must be identical.
- `transformers`' BertTokenizerLegacy, the Python port of google-research/bert tokenization.py (BasicTokenizer +
  WordpieceTokenizer), and hand-checked cases written from tokenization.py's rules.

The corpus is tests/fixtures/multiscript.txt (sources in tests/fixtures/README.md) plus the control-character
cases below, written with escapes because a text file cannot hold them plainly. Known divergences from Google's
tokenization.py, shared with the Hugging Face tokenizer, are pinned as strict xfails at the end.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MINILM, needs_minilm
import transformers

from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "multiscript.txt"
NO_LIMIT = 1_000_000  # max_length that truncates nothing
CONTROL_CASES = [
    "nul\x00inside a word, bell\x07 and escape\x1b[31m and delete\x7f",
    "zero\u200bwidth\u200bspace and\ufeffbom and soft\u00adhyphen",
    "tab\there,\tcarriage\rreturn, vertical\x0btab, form\x0cfeed",
    "line\u2028separator and paragraph\u2029separator and next\x85line",
    "file\x1cgroup\x1drecord\x1eunit\x1fseparators",
    "replacement \ufffd character and a\ufffdb",
    "\x00\x07\u200b",  # nothing left after cleaning
    "",
    "   \t  ",
]


def corpus() -> list[str]:
    lines = FIXTURE.read_text(encoding="utf-8").split("\n")  # "\n" only: a line may hold \u2028 or \x85
    assert lines[-1] == "" and 60 <= len(lines) - 1 <= 120
    return lines[:-1] + CONTROL_CASES


@pytest.fixture(scope="module")
def ours():
    return WordPieceTokenizer.from_dir(MINILM) if MINILM else WordPieceTokenizer(BUILTIN_VOCAB)


@pytest.fixture(scope="module")
def hf_fast():
    return transformers.BertTokenizer.from_pretrained(MINILM)


@pytest.fixture(scope="module")
def google_port():
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    return BertTokenizerLegacy(str(MINILM / "vocab.txt"))


def mismatches(texts: list[str], got: list, want: list) -> list[str]:
    return [f"{t!a}: ours {g[:12]} != {w[:12]}" for t, g, w in zip(texts, got, want) if g != w]


@needs_minilm
def test_same_vocabulary_as_builtin(ours):
    # The built-in vocab (used with presets) is bert-base-uncased's, as the MiniLM checkpoint's is.
    assert ours.vocab == WordPieceTokenizer(BUILTIN_VOCAB).vocab


@needs_minilm
def test_ids_equal_hf_tokenizer_on_corpus(ours, hf_fast):
    texts = corpus()
    ids, types = ours.encode(texts, max_length=NO_LIMIT)
    ref = hf_fast(texts, verbose=False)
    assert not mismatches(texts, ids, ref["input_ids"])
    assert types == ref["token_type_ids"]
    assert max(len(x) for x in ids) > 512, "the corpus should hold a line longer than the model's 512 positions"
    # The default truncation to 512 tokens.
    ids512, _ = ours.encode(texts)
    assert ids512 == hf_fast(texts, truncation=True, max_length=512)["input_ids"]


@needs_minilm
def test_ids_equal_google_python_port_on_corpus(ours, google_port):
    texts = corpus()
    ids, _ = ours.encode(texts, max_length=NO_LIMIT)
    ref = [google_port(t, verbose=False)["input_ids"] for t in texts]
    bad = mismatches(texts, ids, ref)
    # The only line that differs is the Greek one: upper-case words ending in sigma (see the xfail below).
    assert len(bad) == 1 and bad[0].startswith("'\\u0395\\u03bb\\u03bb\\u03b7\\u03bd"), bad


@needs_minilm
@pytest.mark.parametrize("max_length", [7, 8, 9, 16, 17, 33, 128, 512])
def test_pairs_longest_first_and_token_types(ours, hf_fast, max_length):
    lines = corpus()
    a = lines[:-1:2]  # pairs of neighbouring lines: every mix of short, long, empty and multi-script
    b = lines[1::2]
    ids, types = ours.encode(a, b, max_length=max_length)
    ref = hf_fast(a, b, truncation="longest_first", max_length=max_length, verbose=False)
    assert not mismatches(a, ids, ref["input_ids"])
    assert types == ref["token_type_ids"]
    assert all(len(x) <= max_length for x in ids)
    for seq, seq_types in zip(ids, types):  # [CLS] A [SEP] -> 0, B [SEP] -> 1
        first_sep = seq.index(ours.sep_id)
        assert seq_types == [0] * (first_sep + 1) + [1] * (len(seq) - first_sep - 1)


@needs_minilm
def test_padded_batch_equals_hf(ours, hf_fast):
    texts = corpus()[:20]
    batch = ours(texts, max_length=64)
    ref = hf_fast(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert batch[key].tolist() == ref[key].tolist(), key


# --- Google's rules, hand-checked (google-research/bert tokenization.py) -----------------------------------------

@pytest.mark.parametrize("text, tokens", [
    ("Héllo, WORLD!", ["hello", ",", "world", "!"]),  # lower-case, strip accents, split punctuation
    ("John Johanson's house", ["john", "johan", "##son", "'", "s", "house"]),  # the example in Google's README
    ("naïve café", ["naive", "cafe"]),
    ("cafe\u0301", ["cafe"]),  # a decomposed accent is a combining mark: stripped
    ("1,000.5$", ["1", ",", "000", ".", "5", "$"]),
    ("東京大学", ["東", "京", "大", "学"]),  # every CJK ideograph is its own word
    ("a\x00b\x07c\u200bd", ["abc", "##d"]),  # control and format characters are deleted, not spaces
    ("x\ty\u00a0z\u3000w\u2028v\r\nu", ["x", "y", "z", "w", "v", "u"]),  # whitespace of every kind splits
    ("🙂 👍🏽", ["[UNK]", "[UNK]"]),  # not in the vocabulary
    ("a" * 101, ["[UNK]"]),  # a word over 100 characters is [UNK] whole
    ("é" * 101, ["[UNK]"]),
    ("", []),
])
def test_google_rules(text, tokens):
    assert WordPieceTokenizer(BUILTIN_VOCAB).tokenize(text) == tokens


def test_hundred_characters_is_not_too_long():
    tok = WordPieceTokenizer(BUILTIN_VOCAB)
    pieces = tok.tokenize("a" * 100)
    assert "[UNK]" not in pieces and "".join(p.removeprefix("##") for p in pieces) == "a" * 100
    # Length is counted after accents are stripped: 100 'e' + 100 combining acutes is 100 characters.
    assert "[UNK]" not in tok.tokenize("e\u0301" * 100)


def test_special_tokens_and_type_ids():
    tok = WordPieceTokenizer(BUILTIN_VOCAB)
    ids, types = tok.encode(["hello world"], ["bye"])
    assert tok.inverse[ids[0][0]] == "[CLS]" and [tok.inverse[i] for i in ids[0][1:]] == ["hello", "world", "[SEP]", "bye", "[SEP]"]
    assert types == [[0, 0, 0, 0, 1, 1]]
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)


# --- known divergences from Google's tokenization.py (the Hugging Face tokenizer shares each) ---------------------

@pytest.mark.xfail(strict=True, reason="tokenizers lower-cases character by character: no final sigma (Python's "
                                      "str.lower, which Google uses, writes ς at the end of a word)")
def test_divergence_final_sigma():
    assert WordPieceTokenizer(BUILTIN_VOCAB).tokenize("ΟΔΟΣ") == ["ο", "##δ", "##ος"]


@pytest.mark.xfail(strict=True, reason="tokenizers deletes private-use characters (category Co); Google deletes "
                                      "only Cc and Cf, so the word stays whole and is [UNK]")
def test_divergence_private_use():
    assert WordPieceTokenizer(BUILTIN_VOCAB).tokenize("a\ue000b") == ["[UNK]"]


@pytest.mark.xfail(strict=True, reason="special tokens written in the text are matched as special tokens (as in "
                                      "transformers); Google's FullTokenizer splits them as text")
def test_divergence_special_token_text():
    assert WordPieceTokenizer(BUILTIN_VOCAB).tokenize("[MASK]") == ["[", "mask", "]"]


@pytest.mark.xfail(strict=True, reason="tokenizers' longest_first gives an odd leftover token to the longer input "
                                      "(B on a tie); Google's _truncate_seq_pair pops B on a tie, so A keeps it")
def test_divergence_pair_truncation():
    tok = WordPieceTokenizer(BUILTIN_VOCAB)
    a = "one two three four five six seven eight nine ten"
    ids, _ = tok.encode([a], [a], max_length=10)  # 7 tokens to share: Google keeps 4 of A, 3 of B
    assert [tok.inverse[i] for i in ids[0]] == ["[CLS]", "one", "two", "three", "four", "[SEP]", "one", "two", "three", "[SEP]"]
