"""Train a WordPiece vocabulary on the user's text: `run(VocabConfig) -> report`, the one implementation behind
`miniberts vocab` and `pretrain --vocab-size`.

`tokenizers`' BertWordPieceTokenizer trainer with BERT's normalisation (control characters removed, whitespace
cleaned, CJK ideographs split; lower-casing and accent stripping only when uncased) and pre-tokenisation, `##`
continuations. The ids of the special tokens are Google's: [PAD] 0, [unused0..98] 1-99, [UNK] 100, [CLS] 101,
[SEP] 102, [MASK] 103 (google-research/bert's vocab.txt files), so code that assumes bert-base's ids still holds,
and the 99 unused slots can take domain tokens later without resizing the embeddings. The learned pieces follow.

The output directory is what `WordPieceTokenizer.save` writes for a model (vocab.txt, tokenizer.json,
tokenizer_config.json with do_lower_case, special_tokens_map.json), so `--vocab DIR` and
`transformers.AutoTokenizer.from_pretrained(DIR)` read it directly, plus vocab_stats.json: the settings, the size,
and how the vocabulary splits the training text (tokens per word, [UNK] share) on its first lines.

The trainer breaks ties between equally frequent merges in hash-map order, which differs between processes
(huggingface/tokenizers#1794), so two trainings on the same text may differ in a few pieces: a vocabulary is trained
once and kept (`--vocab DIR`); `pretrain --vocab-size` caches its own.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .data.pretraining import check_files, files_key, read_lines
from .errors import DataError, MinibertsError
from .fileio import atomic_write_text, output_folder
from .settings import SettingsError, validate
from .tokenizer import FILES, SPECIAL_TOKENS, WordPieceTokenizer

log = logging.getLogger("miniberts")

PAD, UNK, CLS, SEP, MASK = SPECIAL_TOKENS
# Google's first 104 lines: [PAD], 99 unused slots, then [UNK] [CLS] [SEP] [MASK] at 100-103.
GOOGLE_LAYOUT = [PAD] + [f"[unused{i}]" for i in range(99)] + [UNK, CLS, SEP, MASK]
MIN_SIZE = len(GOOGLE_LAYOUT) + 1
LAYOUT_VERSION = 2  # 1 was the five special tokens at ids 0-4: part of the cache key of `pretrain --vocab-size`
STATS_LINES = 10_000  # lines of the training text the statistics are measured on


@dataclass
class VocabConfig:
    files: list[str] = field(default_factory=list, metadata={
        "help": "UTF-8 text files to learn from, one text per line (.gz/.bz2 accepted)"})
    size: int = field(default=30522, metadata={
        "help": "vocabulary size, the 104 special/unused tokens included (the alphabet is always kept, so a very "
                "small size can be exceeded)", "min": MIN_SIZE})
    cased: bool = field(default=False, metadata={
        "help": "keep case and accents (Google's do_lower_case=False); default uncased: lower-case, strip accents"})
    min_frequency: int = field(default=2, metadata={"help": "a merge must occur at least this often", "min": 1})
    limit_alphabet: int = field(default=1000, metadata={
        "help": "most frequent characters kept as the alphabet (rarer ones become [UNK]; raise it for CJK text)",
        "min": 1})
    out: str = field(default="", metadata={"help": "output directory: vocab.txt, tokenizer.json, "
                                                    "tokenizer_config.json, vocab_stats.json"})
    force: bool = field(default=False, metadata={
        "help": "write into a folder that holds other files too (a file miniberts did not write is never replaced)"})
    progress: bool = field(default=True, metadata={"help": "progress bars on a terminal"})

    def __post_init__(self):
        validate(self)


def train_pieces(paths: list[Path], cfg: VocabConfig) -> list[str]:
    """The vocabulary in id order: Google's special layout, then the alphabet and the learned pieces."""
    from tokenizers import BertWordPieceTokenizer

    show = cfg.progress and sys.stderr.isatty()
    log.info("training a %s WordPiece vocabulary of %d tokens on %d file(s), %.1f MB", "cased" if cfg.cased else
             "uncased", cfg.size, len(paths), sum(p.stat().st_size for p in paths) / 1e6)
    trainer = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, strip_accents=not cfg.cased,
                                     lowercase=not cfg.cased, wordpieces_prefix="##")
    lines = (line for p in paths for line in read_lines(p) if line)
    trainer.train_from_iterator(tqdm(lines, unit=" lines", desc="reading", disable=not show), vocab_size=cfg.size,
                                min_frequency=cfg.min_frequency, limit_alphabet=cfg.limit_alphabet,
                                special_tokens=GOOGLE_LAYOUT, show_progress=show, wordpieces_prefix="##")
    vocab = trainer.get_vocab()
    ordered = sorted(vocab, key=vocab.get)
    assert ordered[:len(GOOGLE_LAYOUT)] == GOOGLE_LAYOUT, "the trainer puts the special tokens first, in order"
    return ordered


def text_stats(tokenizer: WordPieceTokenizer, paths: list[Path], max_lines: int = STATS_LINES) -> dict:
    """How the vocabulary splits the first `max_lines` non-blank lines: WordPiece turns each word into one leading
    piece (or [UNK]) and `##` continuations, so words = pieces not starting with ##."""
    lines = list(itertools.islice((line for p in paths for line in read_lines(p) if line), max_lines))
    ids, _ = tokenizer.encode(lines, max_length=1 << 30, add_special_tokens=False)
    pieces = [tokenizer.inverse[i] for seq in ids for i in seq]
    words = sum(not t.startswith("##") for t in pieces)
    return {"lines": len(lines), "words": words, "tokens_per_word": round(len(pieces) / max(words, 1), 4),
            "unk_share": round(sum(t == UNK for t in pieces) / max(words, 1), 6)}


def run(cfg: VocabConfig) -> dict:
    """Train and write cfg.out; return what vocab_stats.json holds. Each file is written atomically and
    vocab_stats.json last, so its presence marks a finished vocabulary."""
    if not cfg.files:
        raise DataError("give the text files to learn from with --files FILE ...")
    if not cfg.out:
        raise MinibertsError("give the output directory with --out DIR")
    out = Path(cfg.out)
    for model_file in ("config.json", "bert_config.json"):
        if (out / model_file).is_file():  # a new vocab.txt would no longer fit its embeddings
            raise MinibertsError(f"{out / model_file}: {out} holds a model; write the vocabulary to another --out")
    paths = check_files(cfg.files, "input")
    with output_folder(out, (*FILES, "vocab_stats.json"), cfg.force):
        return _train_and_write(paths, out, cfg)


def _train_and_write(paths: list[Path], out: Path, cfg: VocabConfig) -> dict:
    ordered = train_pieces(paths, cfg)
    if len(ordered) < cfg.size:  # a vocabulary smaller than asked would not fit the model it is meant for
        learned = len(ordered) - len(GOOGLE_LAYOUT)
        raise DataError(f"{', '.join(map(str, paths))}: {learned} pieces occur --min-frequency {cfg.min_frequency} "
                        f"times, {cfg.size - len(GOOGLE_LAYOUT)} needed for --size {cfg.size}; give more text, a "
                        "smaller --size or a lower --min-frequency")
    (out / "vocab_stats.json").unlink(missing_ok=True)  # an earlier vocabulary's, until this one is complete
    atomic_write_text(out / "vocab.txt", "".join(t + "\n" for t in ordered))
    tokenizer = WordPieceTokenizer(out / "vocab.txt", lowercase=not cfg.cased)  # through the one reader
    tokenizer.save(out)
    stats = {
        "size": len(tokenizer), "requested_size": cfg.size, "cased": cfg.cased, "do_lower_case": not cfg.cased,
        "min_frequency": cfg.min_frequency, "limit_alphabet": cfg.limit_alphabet,
        "special_ids": {t: tokenizer.vocab[t] for t in SPECIAL_TOKENS},
        "continuations": sum(t.startswith("##") for t in ordered),
        "files": [str(p) for p in paths],
        "training_text": text_stats(tokenizer, paths),
    }
    atomic_write_text(out / "vocab_stats.json", json.dumps(stats, indent=2, ensure_ascii=False))
    if stats["size"] > cfg.size:
        log.warning("%s: %d tokens, not the %d asked for (the special tokens and the alphabet alone need more)",
                    out / "vocab.txt", stats["size"], cfg.size)
    log.info("wrote %s: %d tokens (%s), %.3f tokens per word on the training text", out, stats["size"],
             "cased" if cfg.cased else "uncased", stats["training_text"]["tokens_per_word"])
    return stats


def cached_vocab(files: list[str], size: int, cased: bool, cache_root: Path) -> Path:
    """`pretrain --vocab-size`: the vocabulary directory for these files and settings, trained on a cache miss."""
    if size < MIN_SIZE:  # named by the flag the user gave, not VocabConfig's --size
        raise SettingsError(f"--vocab-size must be at least {MIN_SIZE} (Google's {len(GOOGLE_LAYOUT)} special and "
                            f"unused tokens, and more), got {size}")
    settings = {"layout": LAYOUT_VERSION, "files": files_key(check_files(files)), "size": size, "cased": cased}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    out = Path(cache_root) / f"vocab-{key}"
    if not (out / "vocab_stats.json").is_file():
        run(VocabConfig(files=list(files), size=size, cased=cased, out=str(out), progress=False))
    return out
