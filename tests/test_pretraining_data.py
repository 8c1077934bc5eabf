"""miniberts.data.pretraining on real text (tests/fixtures/pretraining/wiki_excerpt.txt: 14 Wikipedia articles).

Masking statistics are checked against their binomial expectations with a 4-sigma tolerance: a correct
implementation fails one of these checks about once in 15,000 runs, with the seeds fixed, never.
"""

import bz2
import gzip
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from miniberts.data import pretraining as pt
from miniberts.errors import DataError
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer

EXCERPT = Path(__file__).parent / "fixtures" / "pretraining" / "wiki_excerpt.txt"


@pytest.fixture(scope="module")
def tok():
    return WordPieceTokenizer(BUILTIN_VOCAB)


@pytest.fixture(scope="module")
def corpus(tok, tmp_path_factory):
    return pt.tokenized_corpus([EXCERPT], tok, tmp_path_factory.mktemp("cache"))


def _documents(path):
    return [doc.split("\n") for doc in path.read_text(encoding="utf-8").strip("\n").split("\n\n")]


def _within(observed: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(observed - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


# --- tokenized shards ----------------------------------------------------------------------------------------

def test_shards_hold_the_tokenizers_ids_with_sentence_and_document_boundaries(corpus, tok):
    docs = _documents(EXCERPT)
    assert corpus.tokens.dtype == np.uint16  # 30,522 ids fit
    assert corpus.num_documents == len(docs) == 14
    sentences = [s for doc in docs for s in doc]
    assert len(corpus.sentences) - 1 == len(sentences)
    expected = tok.encode(sentences, max_length=1 << 30, add_special_tokens=False)[0]
    for s, ids in enumerate(expected):
        assert corpus.tokens[corpus.sentences[s]:corpus.sentences[s + 1]].tolist() == ids
    assert np.diff(corpus.documents).tolist() == [len(d) for d in docs]


def test_cache_is_reused_and_invalidated_by_a_changed_file(tok, tmp_path, monkeypatch):
    text = tmp_path / "a.txt"
    shutil.copy(EXCERPT, text)
    first = pt.tokenized_corpus([text], tok, tmp_path / "cache")
    monkeypatch.setattr(pt, "tokenize_files", lambda *a, **k: pytest.fail("tokenized again"))
    assert pt.tokenized_corpus([text], tok, tmp_path / "cache").dir == first.dir
    monkeypatch.undo()
    os.utime(text, ns=(0, 10**18))  # only the mtime changes
    second = pt.tokenized_corpus([text], tok, tmp_path / "cache")
    assert second.dir != first.dir
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temporary left


def test_gzip_and_bz2_inputs_give_the_same_tokens(corpus, tok, tmp_path):
    raw = EXCERPT.read_bytes()
    (tmp_path / "x.txt.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "x.txt.bz2").write_bytes(bz2.compress(raw))
    for name in ("x.txt.gz", "x.txt.bz2"):
        other = pt.tokenized_corpus([tmp_path / name], tok, tmp_path / "cache")
        assert np.array_equal(other.tokens, corpus.tokens)
        assert np.array_equal(other.documents, corpus.documents)


def test_undecodable_bytes_name_the_file_and_line(tok, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\n\nanother\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"bad\.txt:4: undecodable bytes .*0xff"):
        pt.tokenized_corpus([bad], tok, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []  # the half-built cache is gone


def test_blank_and_missing_files_are_errors(tok, tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n")
    with pytest.raises(DataError, match=r"blank\.txt: no text"):
        pt.tokenized_corpus([blank], tok, tmp_path / "cache")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match=r"empty\.txt: train file is empty"):
        pt.check_files([str(tmp_path / "empty.txt")])
    with pytest.raises(DataError, match=r"nope\.txt: train file not found"):
        pt.check_files([str(tmp_path / "nope.txt")])


# --- instances -----------------------------------------------------------------------------------------------

def test_default_max_predictions_are_googles():
    assert [pt.default_max_predictions(n) for n in (64, 100, 128, 256, 512)] == [10, 15, 20, 40, 80]


def test_truncate_pair_trims_the_longer_segment_first():
    import random

    a, b = [0, 10], [20, 23]
    pt.truncate_pair(a, b, 8, random.Random(0))
    assert (a[1] - a[0], b[1] - b[0]) == (5, 3)
    a, b = [0, 6], [10, 16]  # a tie: both shrink, alternately
    pt.truncate_pair(a, b, 9, random.Random(0))
    assert sorted((a[1] - a[0], b[1] - b[0])) == [4, 5]


def test_single_segment_packing_keeps_every_token_in_order(corpus):
    for seq_len in (32, 64, 128):
        inst = pt.create_instances(corpus, seq_len, nsp=False, short_seq_prob=0.1, seed=1)
        lengths = inst[:, 1] - inst[:, 0]
        assert lengths.min() >= 1 and lengths.max() <= seq_len - 2
        assert (inst[:, 3] == inst[:, 2]).all() and not inst[:, 4].any()
        # Sequences tile the corpus: each starts where the previous one ended, nothing dropped or repeated.
        assert inst[0, 0] == 0 and (inst[1:, 0] == inst[:-1, 1]).all() and inst[-1, 1] == len(corpus.tokens)
        # A sequence starts at a sentence start unless it continues an over-long sentence cut at full length.
        cut = np.flatnonzero(~np.isin(inst[:, 0], corpus.sentences))
        assert (lengths[cut - 1] == seq_len - 2).all()
        assert all(corpus.document_of(int(r[0])) == corpus.document_of(int(r[1]) - 1) == r[5] for r in inst)


def test_sentence_pairs_follow_google(corpus):
    rows = np.concatenate([pt.create_instances(corpus, 64, nsp=True, short_seq_prob=0.1, seed=s) for s in range(10)])
    a_len, b_len = rows[:, 1] - rows[:, 0], rows[:, 3] - rows[:, 2]
    assert a_len.min() >= 1 and b_len.min() >= 1 and (a_len + b_len).max() <= 64 - 3
    for a0, a1, b0, b1, random_next, d in rows.tolist():
        assert corpus.document_of(a0) == corpus.document_of(a1 - 1) == d
        assert corpus.document_of(b0) == corpus.document_of(b1 - 1)
        if random_next:
            assert corpus.document_of(b0) != d  # another document (the excerpt has 14)
        else:
            assert corpus.document_of(b0) == d and b0 >= a1  # the actual continuation
    # Half the multi-sentence chunks get a random B, and every single-sentence chunk: a bit over one half.
    assert 0.45 < rows[:, 4].mean() < 0.65


def test_held_out_documents_are_disjoint(corpus):
    train, held = pt.split_documents(corpus.num_documents, 0.2, seed=3)
    assert len(held) == 3 and not set(train) & set(held) and len(train) + len(held) == 14
    inst = pt.create_instances(corpus, 64, nsp=True, short_seq_prob=0.1, seed=0, docs=held)
    assert {corpus.document_of(int(x)) for x in np.r_[inst[:, 0], inst[:, 2]]} <= set(held.tolist())


# --- masking -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def masked(corpus, tok):
    """Every sequence of the excerpt at 128 tokens, masked in 40 epochs: (masked, original, positions) rows."""
    inst = pt.create_instances(corpus, 128, nsp=False, short_seq_prob=0.1, seed=0)
    col = pt.MaskingCollator(corpus, inst, tok, max_predictions=20, whole_word=False, seed=0)
    rows = [col.masked(e, i) for e in range(40) for i in range(len(col))]
    return col, [(out, ids, pos) for out, ids, _, pos, _ in rows]


def test_masks_choose_15_percent_of_real_tokens_never_special(masked, tok):
    col, rows = masked
    chosen = real = 0
    for out, ids, pos in rows:
        n_real = int(np.isin(ids, [tok.cls_id, tok.sep_id, tok.pad_id], invert=True).sum())
        assert len(pos) == min(20, max(1, int(0.15 * n_real + 0.5)))  # Google's count, capped
        assert not np.isin(ids[pos], [tok.cls_id, tok.sep_id, tok.pad_id]).any()
        untouched = np.ones(len(ids), bool)
        untouched[pos] = False
        assert np.array_equal(out[untouched], ids[untouched])  # only chosen tokens change
        chosen, real = chosen + len(pos), real + n_real
    assert 0.145 < chosen / real < 0.155  # 15%, up to rounding per sequence


def test_masked_tokens_split_80_10_10(masked, tok):
    col, rows = masked
    outs = np.concatenate([out[pos] for out, ids, pos in rows])
    origs = np.concatenate([ids[pos] for out, ids, pos in rows])
    n = len(outs)
    as_mask = int((outs == tok.mask_id).sum())
    as_random = int(((outs != tok.mask_id) & (outs != origs)).sum())
    kept = n - as_mask - as_random
    v = col.vocab_size
    assert n > 20000
    assert _within(as_mask, n, 0.8)
    assert _within(as_random, n, 0.1 * (1 - 1 / v))  # a random id equals the original 1 time in V
    assert _within(kept, n, 0.1 + 0.1 / v)
    # Random replacements are uniform over the vocabulary: their mean is (V-1)/2 with sd V/sqrt(12 n).
    rand = outs[(outs != tok.mask_id) & (outs != origs)]
    assert abs(rand.mean() - (v - 1) / 2) < 4 * v / math.sqrt(12 * len(rand))


def test_masks_are_dynamic_and_reproducible(corpus, tok):
    inst = pt.create_instances(corpus, 128, nsp=False, short_seq_prob=0.1, seed=0)
    col = pt.MaskingCollator(corpus, inst, tok, 20, whole_word=False, seed=0)
    again = pt.MaskingCollator(corpus, inst, tok, 20, whole_word=False, seed=0)
    same = [np.array_equal(col.masked(0, i)[3], again.masked(0, i)[3]) for i in range(len(col))]
    assert all(same)
    differ = [not np.array_equal(col.masked(0, i)[3], col.masked(1, i)[3]) for i in range(len(col))]
    assert np.mean(differ) > 0.95  # a new epoch draws new masks
    batch = col([(0, 0), (1, 5), (2, 7)])
    assert batch["mlm_positions"].sum() == len(batch["mlm_labels"])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape


def test_whole_word_masking_takes_all_pieces_of_a_word(corpus, tok):
    inst = pt.create_instances(corpus, 128, nsp=False, short_seq_prob=0.1, seed=0)
    col = pt.MaskingCollator(corpus, inst, tok, 20, whole_word=True, seed=0)
    cont = col.is_continuation
    chosen = real = multi = 0
    for e in range(20):
        for i in range(len(col)):
            out, ids, _, pos, _ = col.masked(e, i)
            sel = np.zeros(len(ids), bool)
            sel[pos] = True
            is_start = ~cont[ids]
            is_start[1:] |= ids[:-1] == tok.cls_id  # a sequence may begin inside a cut over-long sentence
            starts = np.flatnonzero(is_start)
            for w0, w1 in zip(starts, np.r_[starts[1:], len(ids)]):  # each word: ids[w0:w1]
                assert sel[w0:w1].all() or not sel[w0:w1].any()
                multi += int(sel[w0] and w1 - w0 > 1)
            n_real = len(ids) - 2
            assert len(pos) <= min(20, max(1, int(0.15 * n_real + 0.5)))
            chosen, real = chosen + len(pos), real + n_real
    assert multi > 100  # words of several pieces were masked whole
    assert 0.13 < chosen / real <= 0.155  # a word that would overshoot the count is skipped


def test_sampler_visits_every_instance_once_per_epoch():
    s = pt.Sampler(10, seed=4)
    items = s.take(0, 25)
    assert [e for e, _ in items] == [0] * 10 + [1] * 10 + [2] * 5
    assert sorted(i for e, i in items if e == 0) == list(range(10))
    assert [i for _, i in items[:10]] != [i for _, i in items[10:20]]  # reshuffled
    assert pt.Sampler(10, seed=4).take(13, 4) == items[13:17]  # a pure function of the position
