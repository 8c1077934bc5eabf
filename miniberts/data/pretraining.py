"""Pre-training data: raw text -> token-id shards -> Google-style instances -> dynamically masked batches.

References: google-research/bert `create_pretraining_data.py` (input format, instance creation with
`short_seq_prob`, segment A/B split at sentence boundaries, random next segment, `truncate_seq_pair`, masking
80/10/10, whole-word masking) and its README (`max_predictions_per_seq` 20 at 128 tokens, 80 at 512).
Two deliberate differences:
- Masks are dynamic (RoBERTa, Liu et al. 2019, sec. 4.1) instead of `dupe_factor` static copies: the collator draws
  them afresh each epoch from a generator seeded by (seed, stream, epoch, instance), so any batch can be rebuilt
  exactly from its position in the run. Resuming needs no loader state beyond the step.
- Without NSP, sentences are packed into one segment without losing the overshoot Google's pair builder truncates.
- Every input file starts a new document, and whole-word groups never cross a [SEP].

Cache layout (one directory per (files' paths, sizes and mtimes; vocabulary) key, written to a temporary name and
renamed, so a half-built cache is never opened):
    tokens.bin        token ids of every sentence back to back (uint16; int32 for vocabularies over 65,536), a memmap
    sentences.npy     int64 [S + 1]: where sentence s starts in tokens.bin
    documents.npy     int64 [D + 1]: where document d starts, in sentences
    index.json        inputs, vocabulary hash, dtype, counts
    instances-KEY.npy int64 [N, 6] per (seq_len, nsp, short_seq_prob, seed, documents) key: one row per sequence,
                      (a_start, a_end, b_start, b_end, is_random_next, document) as token offsets; b_end == b_start
                      when the sequence has one segment.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import itertools
import json
import os
import random
import shutil
import tempfile
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import DataError
from ..fileio import atomic_path
from ..tokenizer import WordPieceTokenizer
from .tabular import check_input_file, looks_utf16

FORMAT_VERSION = 1
MLM_PROB = 0.15
TRAIN_STREAM, EVAL_STREAM = 0, 1  # independent mask streams for training and held-out batches


def default_max_predictions(seq_len: int) -> int:
    """Google's `max_predictions_per_seq`: 15% of the sequence rounded up to a multiple of 5 (20 at 128, 80 at 512),
    in integer arithmetic so 100 tokens give 15, not 20."""
    return -(-15 * seq_len // 500) * 5


# --- reading text ---------------------------------------------------------------------------------------------

def read_lines(path: Path) -> Iterator[str]:
    """Stripped lines of a UTF-8 text file (.gz and .bz2 decompressed). Bad bytes name the file and line."""
    path = Path(path)
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if lineno == 1 and looks_utf16(raw):
                    raise DataError(f"{path}: UTF-16 is not supported; save the file as UTF-8")
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{lineno}: undecodable bytes (not UTF-8: byte 0x{raw[e.start]:02x} at "
                                    f"column {e.start + 1})") from None
                yield line.strip().lstrip("\ufeff") if lineno == 1 else line.strip()
    except (OSError, EOFError, zlib.error) as e:  # a truncated or corrupt .gz/.bz2 (zlib.error: a damaged stream)
        raise DataError(f"{path}: cannot be read ({e})") from None


def check_files(paths: list[str], what: str = "train") -> list[Path]:
    """Every file exists and is not empty; one line naming the first that fails."""
    if not paths:
        raise DataError(f"no {what} files given (--{what}-files FILE ...)")
    out = []
    for p in map(Path, paths):
        check_input_file(p, what)
        if p.stat().st_size == 0:
            raise DataError(f"{p}: {what} file is empty")
        out.append(p)
    return out


# --- tokenized corpus -----------------------------------------------------------------------------------------

@dataclass
class Corpus:
    """Token ids of one set of files, with sentence and document boundaries."""

    dir: Path
    tokens: np.ndarray  # [T] memmap
    sentences: np.ndarray  # [S + 1] token offsets
    documents: np.ndarray  # [D + 1] sentence offsets

    @classmethod
    def open(cls, path: Path) -> "Corpus":
        path = Path(path)
        index = json.loads((path / "index.json").read_text(encoding="utf-8"))
        tokens = np.memmap(path / "tokens.bin", dtype=index["dtype"], mode="r", shape=(index["tokens"],))
        return cls(path, tokens, np.load(path / "sentences.npy"), np.load(path / "documents.npy"))

    @property
    def num_documents(self) -> int:
        return len(self.documents) - 1

    def document_span(self, d: int) -> tuple[int, int]:
        """Sentence range [first, last) of document d."""
        return int(self.documents[d]), int(self.documents[d + 1])

    def document_of(self, token_offset: int) -> int:
        sentence = int(np.searchsorted(self.sentences, token_offset, side="right")) - 1
        return int(np.searchsorted(self.documents, sentence, side="right")) - 1


def vocab_hash(tokenizer: WordPieceTokenizer) -> str:
    ordered = sorted(tokenizer.vocab, key=tokenizer.vocab.get)
    return hashlib.sha256(("\n".join(ordered) + f"\nlowercase={tokenizer.lowercase}").encode()).hexdigest()[:16]


def files_key(paths: list[Path]) -> list[list]:
    """What identifies the input: absolute path, size and modification time of each file."""
    out = []
    for p in paths:
        st = Path(p).stat()
        out.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
    return out


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def tokenize_files(paths: list[Path], tokenizer: WordPieceTokenizer, out_dir: Path, batch_lines: int = 20000) -> dict:
    """Write tokens.bin, sentences.npy, documents.npy, index.json for `paths` into out_dir (which must exist).

    Google's format: one sentence per line, a blank line between documents; each file also starts a document.
    Lines go through the tokenizer in batches (`tokenizers` encodes a batch on all cores); a line that tokenizes
    to nothing is dropped, as in Google's reader. Memory holds one batch of lines and the offsets, never the text.
    """
    dtype = np.uint16 if len(tokenizer) <= 65536 else np.int32
    sentence_starts = array("q", [0])
    document_starts = array("q", [0])
    n_tokens = 0

    def end_document():
        if len(sentence_starts) - 1 > document_starts[-1]:
            document_starts.append(len(sentence_starts) - 1)

    with open(out_dir / "tokens.bin", "wb") as out:

        def flush(lines: list[str | None]):
            nonlocal n_tokens
            texts = [t for t in lines if t]
            ids = iter(tokenizer.encode(texts, max_length=1 << 30, add_special_tokens=False)[0] if texts else [])
            kept = []
            for text in lines:
                if not text:
                    end_document()
                    continue
                sentence = next(ids)
                if sentence:
                    kept.append(sentence)
                    n_tokens += len(sentence)
                    sentence_starts.append(n_tokens)
            total = sum(map(len, kept))
            out.write(np.fromiter(itertools.chain.from_iterable(kept), dtype=dtype, count=total).tobytes())

        for path in paths:
            end_document()
            before = len(sentence_starts)
            buffer: list[str | None] = []
            for line in read_lines(path):
                buffer.append(line or None)  # None marks a document boundary
                if len(buffer) >= batch_lines:
                    flush(buffer)
                    buffer = []
            flush(buffer)
            if len(sentence_starts) == before:
                raise DataError(f"{path}: no text (only blank lines)")
        end_document()

    np.save(out_dir / "sentences.npy", np.frombuffer(sentence_starts, dtype=np.int64))
    np.save(out_dir / "documents.npy", np.frombuffer(document_starts, dtype=np.int64))
    counts = {"documents": len(document_starts) - 1, "sentences": len(sentence_starts) - 1, "tokens": n_tokens}
    index = {"format": FORMAT_VERSION, "dtype": np.dtype(dtype).name, "files": files_key(paths),
             "vocab": vocab_hash(tokenizer), "vocab_size": len(tokenizer), **counts}
    (out_dir / "index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return counts


def tokenized_corpus(paths: list[Path], tokenizer: WordPieceTokenizer, cache_root: Path) -> Corpus:
    """The cached Corpus for these files and this vocabulary, tokenizing them on a cache miss."""
    key = _digest({"format": FORMAT_VERSION, "files": files_key(paths), "vocab": vocab_hash(tokenizer)})
    final = Path(cache_root) / f"tokens-{key}"
    if not (final / "index.json").is_file():
        Path(cache_root).mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tokens-{key}.", dir=cache_root))
        tmp.chmod(0o755)  # mkdtemp makes it private; a cache may be shared
        try:
            tokenize_files(paths, tokenizer, tmp)
            try:
                os.rename(tmp, final)
            except OSError:  # another process finished the same cache first: use it
                if not (final / "index.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return Corpus.open(final)


# --- instances (Google's create_instances_from_document) ------------------------------------------------------

def truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: random.Random) -> None:
    """Google's truncate_seq_pair on [start, end) spans: until both fit, drop one token from the longer segment
    (B on a tie), from its front or its back at random."""
    while (a[1] - a[0]) + (b[1] - b[0]) > max_tokens:
        longer = a if (a[1] - a[0]) > (b[1] - b[0]) else b
        if rng.random() < 0.5:
            longer[0] += 1
        else:
            longer[1] -= 1


def create_instances(corpus: Corpus, seq_len: int, nsp: bool, short_seq_prob: float, seed: int,
                     docs: np.ndarray | None = None) -> np.ndarray:
    """Sequences of up to `seq_len` tokens built from contiguous sentences of one document.

    Per document (in Google's order of random draws) a target length: usually the maximum, for `short_seq_prob` of
    the documents uniform in [2, max]. With NSP, Google's algorithm exactly (`_pairs`); without, `_pack`.
    `docs` restricts both the documents used and those random next segments are drawn from.
    Returns int64 [N, 6]: (a_start, a_end, b_start, b_end, is_random_next, document) as token offsets.
    """
    rng = random.Random(seed)
    max_tokens = seq_len - 3 if nsp else seq_len - 2  # room for [CLS] A [SEP] (B [SEP])
    if max_tokens < 2:
        raise DataError(f"--seq-len {seq_len} is too short for {'a sentence pair' if nsp else 'a sequence'}")
    docs = np.arange(corpus.num_documents) if docs is None else np.asarray(docs)
    rows: list[tuple[int, ...]] = []
    for d in docs.tolist():
        target = max_tokens
        if rng.random() < short_seq_prob:
            target = rng.randint(2, max_tokens)
        if nsp:
            _pairs(corpus, d, docs, target, max_tokens, rng, rows)
        else:
            _pack(corpus, d, target, max_tokens, rows)
    return np.array(rows, dtype=np.int64).reshape(-1, 6)


def _pairs(corpus: Corpus, d: int, docs: np.ndarray, target: int, max_tokens: int, rng: random.Random,
           rows: list) -> None:
    """Google's create_instances_from_document: gather sentences until the target is reached, cut the chunk at a
    random sentence boundary into A and B; half the time (always when the chunk is one sentence) B is instead taken
    from a random other document and the chunk's unused sentences go back to the pool; truncate_seq_pair."""
    starts = corpus.sentences
    first, last = corpus.document_span(d)
    chunk_start, length, i = first, 0, first
    while i < last:
        length += int(starts[i + 1] - starts[i])
        if i == last - 1 or length >= target:
            n = i + 1 - chunk_start
            a_end = chunk_start + (rng.randint(1, n - 1) if n >= 2 else 1)
            a = [int(starts[chunk_start]), int(starts[a_end])]
            if n == 1 or rng.random() < 0.5:
                random_next = 1
                target_b = target - (a[1] - a[0])
                for _ in range(10):  # another document, if one can be found
                    other = int(docs[rng.randint(0, len(docs) - 1)])
                    if other != d:
                        break
                o_first, o_last = corpus.document_span(other)
                j = rng.randint(o_first, o_last - 1)
                b = [int(starts[j]), int(starts[j])]
                while j < o_last:
                    b[1] = int(starts[j + 1])
                    if b[1] - b[0] >= target_b:
                        break
                    j += 1
                i = a_end - 1  # the sentences after A were not used: they start the next chunk
            else:
                random_next = 0
                b = [int(starts[a_end]), int(starts[i + 1])]
            truncate_pair(a, b, max_tokens, rng)
            rows.append((a[0], a[1], b[0], b[1], random_next, d))
            chunk_start, length = i + 1, 0
        i += 1


def _pack(corpus: Corpus, d: int, target: int, max_tokens: int, rows: list) -> None:
    """One segment of contiguous sentences: close the sequence once it reaches the target, or before a sentence
    that would overflow it. Unlike Google's pair builder, which truncates the overshoot away, no text is lost: a
    sentence longer than a whole sequence is cut into full-length pieces."""
    starts = corpus.sentences
    first, last = corpus.document_span(d)
    lo = end = int(starts[first])  # the open sequence is tokens [lo, end)
    for i in range(first, last):
        s_end = int(starts[i + 1])
        if end > lo and s_end - lo > max_tokens:
            rows.append((lo, end, 0, 0, 0, d))
            lo = end
        while s_end - lo > max_tokens:
            rows.append((lo, lo + max_tokens, 0, 0, 0, d))
            lo += max_tokens
        end = s_end
        if end - lo >= target:
            rows.append((lo, end, 0, 0, 0, d))
            lo = end
    if end > lo:
        rows.append((lo, end, 0, 0, 0, d))


def cached_instances(corpus: Corpus, seq_len: int, nsp: bool, short_seq_prob: float, seed: int,
                     docs: np.ndarray | None = None) -> np.ndarray:
    key = _digest({"corpus": corpus.dir.name, "seq_len": seq_len, "nsp": nsp, "short_seq_prob": short_seq_prob,
                   "seed": seed, "docs": None if docs is None else _digest(np.asarray(docs).tolist())})
    path = corpus.dir / f"instances-{key}.npy"
    if not path.is_file():
        instances = create_instances(corpus, seq_len, nsp, short_seq_prob, seed, docs)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, instances)
            tmp.chmod(0o644)
    return np.load(path, mmap_mode="r")


def split_documents(num_documents: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) document indices: `fraction` of the documents (at least one) held out at random."""
    if num_documents < 2:
        raise DataError("the training files hold one document; give --eval-files or more documents "
                        "(a blank line separates documents)")
    n_eval = min(num_documents - 1, max(1, round(fraction * num_documents)))
    held = np.sort(np.random.default_rng([seed, 11]).choice(num_documents, n_eval, replace=False))
    return np.setdiff1d(np.arange(num_documents), held), held


# --- masking --------------------------------------------------------------------------------------------------

def mask_sequence(ids: np.ndarray, rng: np.random.Generator, *, maskable: np.ndarray,
                  is_continuation: np.ndarray | None, max_predictions: int, mask_id: int,
                  vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Google's create_masked_lm_predictions on one sequence of ids -> (masked ids, sorted masked positions).

    15% of the maskable tokens (round half up, at least 1, at most `max_predictions`) are chosen in random order;
    with `is_continuation` (whole-word masking) a word's `##` pieces are chosen together and a word that would
    overshoot the count is skipped. Each chosen token becomes [MASK] 80% of the time, a uniformly random vocabulary
    id 10%, and stays itself 10%.
    """
    candidates = np.flatnonzero(maskable[ids])
    k = min(max_predictions, max(1, int(MLM_PROB * len(candidates) + 0.5)))
    if is_continuation is None:
        positions = np.sort(rng.permutation(candidates)[:k])
    else:
        # A group starts at every candidate that is not a `##` piece directly after another candidate.
        joins = is_continuation[ids[candidates]] & np.r_[False, np.diff(candidates) == 1]
        groups = np.split(candidates, np.flatnonzero(~joins)[1:])
        chosen, total = [], 0
        for g in rng.permutation(len(groups)):
            if total >= k:
                break
            if total + len(groups[g]) > k:
                continue
            chosen.append(groups[g])
            total += len(groups[g])
        positions = np.sort(np.concatenate(chosen)) if chosen else candidates[:0]
    out = ids.copy()
    u = rng.random(len(positions))
    out[positions[u < 0.8]] = mask_id
    random_positions = positions[u >= 0.9]
    out[random_positions] = rng.integers(0, vocab_size, len(random_positions))
    return out, positions


class Sampler:
    """Training order: each epoch a fresh permutation of the instances seeded by (seed, epoch). Sample number k of
    the run is instance order[k % N] of epoch k // N, so a batch is a pure function of its place in the run."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._orders: dict[int, np.ndarray] = {}

    def order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}  # keep at most two epochs
            self._orders[epoch] = np.random.default_rng([self.seed, 3, epoch]).permutation(self.n)
        return self._orders[epoch]

    def take(self, start: int, count: int) -> list[tuple[int, int]]:
        """(epoch, instance) for samples start .. start + count - 1."""
        return [(k // self.n, int(self.order(k // self.n)[k % self.n])) for k in range(start, start + count)]


class MaskingCollator:
    """Instances -> padded, masked batches: input_ids, attention_mask, token_type_ids, mlm_positions [B, S] (bool),
    mlm_labels [N] (original ids at the masked positions, row-major), nsp_labels [B] (1 = B is a random segment).
    `masking=False`: the same batches unmasked (general distillation: teacher and student read the same tokens)."""

    def __init__(self, corpus: Corpus, instances: np.ndarray, tokenizer: WordPieceTokenizer, max_predictions: int,
                 whole_word: bool, seed: int, stream: int = TRAIN_STREAM, masking: bool = True):
        self.corpus, self.instances = corpus, instances
        self.tok = tokenizer
        self.max_predictions, self.seed, self.stream, self.masking = max_predictions, seed, stream, masking
        ordered = sorted(tokenizer.vocab, key=tokenizer.vocab.get)
        self.vocab_size = len(ordered)
        self.maskable = np.ones(self.vocab_size, dtype=bool)
        self.maskable[[tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id]] = False  # never predict structure
        self.is_continuation = np.array([t.startswith("##") for t in ordered]) if whole_word else None

    def __len__(self) -> int:
        return len(self.instances)

    def sequence(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Unmasked ([CLS] A [SEP] (B [SEP])) ids, token type ids and is_random_next of one instance."""
        a0, a1, b0, b1, random_next, _ = (int(x) for x in self.instances[index])
        tokens, cls, sep = self.corpus.tokens, [self.tok.cls_id], [self.tok.sep_id]
        parts = [cls, tokens[a0:a1], sep] + ([tokens[b0:b1], sep] if b1 > b0 else [])
        ids = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
        types = np.zeros(len(ids), dtype=np.int64)
        types[a1 - a0 + 2:] = 1
        return ids, types, random_next

    def masked(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """(masked ids, original ids, token types, masked positions, is_random_next); the same at every call."""
        ids, types, random_next = self.sequence(index)
        if not self.masking:
            return ids, ids, types, np.zeros(0, dtype=np.int64), random_next
        rng = np.random.default_rng([self.seed, self.stream, epoch, index])
        out, positions = mask_sequence(ids, rng, maskable=self.maskable, is_continuation=self.is_continuation,
                                       max_predictions=self.max_predictions, mask_id=self.tok.mask_id,
                                       vocab_size=self.vocab_size)
        return out, ids, types, positions, random_next

    def __call__(self, items: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        rows = [self.masked(epoch, index) for epoch, index in items]
        width = max(len(r[0]) for r in rows)
        b = len(rows)
        input_ids = np.full((b, width), self.tok.pad_id, dtype=np.int64)
        original = np.full((b, width), self.tok.pad_id, dtype=np.int64)
        types = np.zeros((b, width), dtype=np.int64)
        attention = np.zeros((b, width), dtype=np.int64)
        positions = np.zeros((b, width), dtype=bool)
        for r, (masked, ids, seg, pos, _) in enumerate(rows):
            n = len(ids)
            input_ids[r, :n], original[r, :n], types[r, :n], attention[r, :n] = masked, ids, seg, 1
            positions[r, pos] = True
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention),
            "token_type_ids": torch.from_numpy(types),
            "mlm_positions": torch.from_numpy(positions),
            "mlm_labels": torch.from_numpy(original[positions]),
            "nsp_labels": torch.tensor([r[4] for r in rows], dtype=torch.long),
        }
