"""Uncased WordPiece tokenization as Google's BERT tokenizer does it, run by the `tokenizers` library.

Google's tokenization.py does: clean text (drop control characters, map whitespace to spaces), put spaces around
CJK ideographs, lower-case, strip accents (NFD, drop combining marks), split on whitespace and punctuation, then
greedy longest-match-first WordPiece with `##` continuations; words over 100 characters become [UNK]. `tokenizers`'
BertNormalizer + BertPreTokenizer + WordPiece implement exactly that in Rust. Pairs are truncated `longest_first`
and get token type ids 0 for `[CLS] A [SEP]` and 1 for `B [SEP]`.

The ids equal `transformers`' BertTokenizer everywhere (tests/test_tokenizer.py). They differ from Google's Python
tokenization.py in four corner cases, exactly as transformers' do: Greek final sigma (lower-cased per character),
private-use characters (dropped), special tokens typed in the text ("[MASK]" stays one token), and which segment
gives up the odd token when `longest_first` truncates a pair of equal length.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from .errors import CheckpointError
from .fileio import atomic_write_text

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
BUILTIN_VOCAB = Path(__file__).parent / "resources" / "vocab-uncased.txt"


class WordPieceTokenizer:
    def __init__(self, vocab_path: Path, lowercase: bool = True):
        self.vocab_path = Path(vocab_path)
        self.vocab = read_vocab(self.vocab_path)
        missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
        if missing:
            raise CheckpointError(f"{self.vocab_path}: special tokens {missing} are not in the vocabulary")
        self.lowercase = lowercase
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (self.vocab[t] for t in SPECIAL_TOKENS)
        self.inverse = {i: t for t, i in self.vocab.items()}
        self._tok = self._build()

    def _build(self) -> Tokenizer:
        tok = Tokenizer(WordPiece(self.vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=self.lowercase, lowercase=self.lowercase
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", self.cls_id), ("[SEP]", self.sep_id)],
        )
        tok.add_special_tokens(list(SPECIAL_TOKENS))
        return tok

    def __len__(self) -> int:
        return len(self.vocab)

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of one text, without [CLS]/[SEP]."""
        return self._tok.encode(text, add_special_tokens=False).tokens

    def encode(self, texts: list[str], pairs: list[str] | None = None, max_length: int = 512,
               add_special_tokens: bool = True) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids and token type ids per text (or pair), truncated `longest_first` to max_length."""
        self._tok.enable_truncation(max_length, strategy="longest_first")
        inputs = list(zip(texts, pairs)) if pairs is not None else list(texts)
        encodings = self._tok.encode_batch(inputs, add_special_tokens=add_special_tokens)
        return [e.ids for e in encodings], [e.type_ids for e in encodings]

    def pad_batch(self, ids: list[list[int]], type_ids: list[list[int]]) -> dict[str, torch.Tensor]:
        """Right-pad to the longest sequence of the batch: input_ids, attention_mask, token_type_ids [B, S]."""
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        types = torch.zeros((len(ids), width), dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, (seq, seq_types) in enumerate(zip(ids, type_ids)):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            types[row, : len(seq)] = torch.tensor(seq_types)
            mask[row, : len(seq)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types}

    def __call__(self, texts: list[str], pairs: list[str] | None = None, max_length: int = 512) -> dict[str, torch.Tensor]:
        return self.pad_batch(*self.encode(texts, pairs, max_length))

    def save(self, out_dir: Path) -> None:
        """vocab.txt, tokenizer.json and the config files `transformers.AutoTokenizer` reads."""
        out_dir = Path(out_dir)
        ordered = sorted(self.vocab, key=self.vocab.get)
        atomic_write_text(out_dir / "vocab.txt", "".join(t + "\n" for t in ordered))
        atomic_write_text(out_dir / "tokenizer.json", self._tok.to_str(pretty=False))
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.lowercase,
            "strip_accents": None,
            "tokenize_chinese_chars": True,
            "model_max_length": 512,
            **{name: tok for name, tok in zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), SPECIAL_TOKENS)},
        }
        atomic_write_text(out_dir / "tokenizer_config.json", json.dumps(config, indent=2))
        special = {k: v for k, v in config.items() if k.endswith("_token")}
        atomic_write_text(out_dir / "special_tokens_map.json", json.dumps(special, indent=2))

    @classmethod
    def from_dir(cls, model_dir: Path) -> "WordPieceTokenizer":
        model_dir = Path(model_dir)
        lowercase = True
        config_path = model_dir / "tokenizer_config.json"
        if config_path.is_file():
            lowercase = json.loads(config_path.read_text(encoding="utf-8")).get("do_lower_case", True)
        vocab = model_dir / "vocab.txt"
        if not vocab.is_file():
            raise CheckpointError(f"{vocab}: file not found (every model directory needs its WordPiece vocab.txt)")
        return cls(vocab, lowercase)


def read_vocab(path: Path) -> dict[str, int]:
    """One token per line, id = line number, as Google's tokenization.load_vocab reads it (stripped; a repeated
    token keeps its last id)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 ({e})") from None
    if lines and lines[-1] == "":
        lines.pop()
    vocab = {}
    for i, token in enumerate(lines):
        vocab[token.strip()] = i
    if not vocab:
        raise CheckpointError(f"{path}: the vocabulary is empty")
    return vocab
