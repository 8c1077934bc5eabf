"""WordPiece tokenization as Google's BERT tokenizer does it, run by the `tokenizers` library: uncased by default,
cased on request.

Google's tokenization.py does: clean text (drop control characters, map whitespace to spaces), put spaces around
CJK ideographs, lower-case, strip accents (NFD, drop combining marks), split on whitespace and punctuation, then
greedy longest-match-first WordPiece with `##` continuations; words over 100 characters become [UNK]. A cased
tokenizer (Google's `do_lower_case=False`, transformers' `BertTokenizer(do_lower_case=False)`) skips the
lower-casing and the accent stripping and does everything else; the casing is saved as `do_lower_case` in
tokenizer_config.json (and in tokenizer.json's normalizer), so `transformers.AutoTokenizer` reads it back. `tokenizers`'
BertNormalizer + BertPreTokenizer + WordPiece implement exactly that in Rust. Pairs are truncated `longest_first`
and get token type ids 0 for `[CLS] A [SEP]` and 1 for `B [SEP]`.

The ids equal `transformers`' BertTokenizer everywhere (tests/test_tokenizer.py). They differ from Google's Python
tokenization.py in four corner cases, exactly as transformers' do: Greek final sigma (lower-cased per character),
private-use characters (dropped), special tokens typed in the text ("[MASK]" stays one token), and which segment
gives up the odd token when `longest_first` truncates a pair of equal length.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from .errors import CheckpointError
from .fileio import atomic_write_text

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")  # what `save` writes
BUILTIN_VOCAB = Path(__file__).parent / "resources" / "vocab-uncased.txt"

log = logging.getLogger("miniberts")

# Help of the `--vocab` and `--cased` settings that every recipe choosing a tokenizer shares (pretrain, finetune).
VOCAB_HELP = ("WordPiece vocabulary: a vocab.txt or a directory from `miniberts vocab` (default: the model's own; a "
              "preset takes this vocabulary's size, a model directory must match it)")
CASED_HELP = ("keep case and accents (do_lower_case=False), for a cased vocabulary; a vocabulary or model directory "
              "records its own casing in tokenizer_config.json")


class WordPieceTokenizer:
    def __init__(self, vocab_path: Path, lowercase: bool = True):
        self.vocab_path = Path(vocab_path)
        self.vocab = read_vocab(self.vocab_path)
        missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
        if missing:
            raise CheckpointError(f"{self.vocab_path}: expected BERT's special tokens {', '.join(SPECIAL_TOKENS)} "
                                  f"(one per line), but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                                  "missing")
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

    @property
    def cased(self) -> bool:
        """Case and accents kept (Google's do_lower_case=False)."""
        return not self.lowercase

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of one text, without [CLS]/[SEP]."""
        return self._tok.encode(text, add_special_tokens=False).tokens

    def encode(self, texts: list[str], pairs: list[str] | None = None, max_length: int = 512,
               add_special_tokens: bool = True, direction: str = "right") -> tuple[list[list[int]], list[list[int]]]:
        """Token ids and token type ids per text (or pair), truncated `longest_first` to max_length, cutting the end
        of a text that is too long (`direction` "right") or its beginning ("left"; [CLS] and [SEP] stay)."""
        self._tok.enable_truncation(max_length, strategy="longest_first", direction=direction)
        if len(texts) == 1:  # one text (a request): encode_batch would hand it to its thread pool and back
            encodings = [self._tok.encode(texts[0], pairs[0] if pairs is not None else None,
                                          add_special_tokens=add_special_tokens)]
        else:
            inputs = list(zip(texts, pairs)) if pairs is not None else list(texts)
            encodings = self._tok.encode_batch(inputs, add_special_tokens=add_special_tokens)
        return [e.ids for e in encodings], [e.type_ids for e in encodings]

    def pieces(self, texts: list[str], max_length: int = 512) -> list[list[tuple[int, str, bool, int, int]]]:
        """Per text its tokens as `encode` makes them: (id, token, special, start, stop), with character offsets into
        the text (a special token's are 0, 0)."""
        self._tok.enable_truncation(max_length, strategy="longest_first")
        return [[(i, token, bool(special), start, stop)
                 for i, token, special, (start, stop) in zip(e.ids, e.tokens, e.special_tokens_mask, e.offsets)]
                for e in self._tok.encode_batch(list(texts))]

    def pad_batch(self, ids: list[list[int]], type_ids: list[list[int]], width: int = 0
                  ) -> dict[str, torch.Tensor]:
        """Right-pad to the longest sequence of the batch, or to `width` when that is more: input_ids, attention_mask,
        token_type_ids [B, S]."""
        width = max(width, *(len(x) for x in ids))
        # One conversion per array from padded lists: a tensor per row and a copy into it cost more than the rows.
        input_ids = torch.tensor([seq + [self.pad_id] * (width - len(seq)) for seq in ids], dtype=torch.long)
        types = torch.tensor([seq + [0] * (width - len(seq)) for seq in type_ids], dtype=torch.long)
        mask = torch.tensor([[1] * len(seq) + [0] * (width - len(seq)) for seq in ids], dtype=torch.long)
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
    def from_dir(cls, model_dir: Path, cased: bool = False) -> "WordPieceTokenizer":
        """The vocabulary of a model or vocabulary directory: vocab.txt, else the WordPiece vocabulary inside
        tokenizer.json (transformers 5 saves no vocab.txt). Its casing is what the directory records (see
        `recorded_casing`); a directory that records none (a Google release) is uncased unless `cased`. `cased` with
        a directory that records uncased is an error: its vocabulary was built lower-cased."""
        model_dir = Path(model_dir)
        check_one_truth(model_dir)
        recorded, where = recorded_casing(model_dir)
        if cased and recorded is True:
            raise CheckpointError(f"{where}: records do_lower_case=true (an uncased vocabulary), but --cased "
                                  "was given: drop --cased, or train a cased vocabulary with `miniberts vocab --cased`")
        vocab = model_dir / "vocab.txt"
        if not vocab.is_file() and (model_dir / "tokenizer.json").is_file():
            vocab = model_dir / "tokenizer.json"
        if not vocab.is_file():
            raise CheckpointError(f"{vocab}: file not found (every model directory needs its WordPiece vocab.txt, or a "
                                  "tokenizer.json holding one)")
        return cls(vocab, lowercase=recorded if recorded is not None else not cased)


def _json_object(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not JSON ({type(e).__name__})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def recorded_casing(model_dir: Path) -> tuple[bool | None, Path]:
    """(do_lower_case, the file that says so) of a directory: tokenizer_config.json's `do_lower_case`, else the
    `lowercase` of tokenizer.json's BertNormalizer; (None, tokenizer_config.json) when neither records it."""
    config_path, tok_path = model_dir / "tokenizer_config.json", model_dir / "tokenizer.json"
    if config_path.is_file():
        recorded = _json_object(config_path).get("do_lower_case")
        if recorded is not None and not isinstance(recorded, bool):
            raise CheckpointError(f"{config_path}: do_lower_case must be true or false, got {recorded!r}")
        if recorded is not None:
            return recorded, config_path
    if tok_path.is_file():
        normalizer = _json_object(tok_path).get("normalizer")
        if isinstance(normalizer, dict) and normalizer.get("type") == "BertNormalizer":
            lowercase = normalizer.get("lowercase")
            if isinstance(lowercase, bool):
                return lowercase, tok_path
    return None, config_path


def check_one_truth(model_dir: Path) -> None:
    """A directory holding both vocab.txt and tokenizer.json must hold one tokenizer: miniberts (and Google's code,
    and transformers' slow BertTokenizer) read vocab.txt, transformers' AutoTokenizer reads tokenizer.json, so where
    they disagree the same model would tokenize two ways, silently. Compared: every token's id and the ids of the
    special tokens (tokenizer.json's added tokens and [CLS]/[SEP] of its post-processor). A disagreement is refused
    in one line naming both files. Casing has one truth already: tokenizer_config.json's do_lower_case, where given,
    wins over tokenizer.json's normalizer here (`recorded_casing`) as in transformers."""
    txt, tok_json = model_dir / "vocab.txt", model_dir / "tokenizer.json"
    if not (txt.is_file() and tok_json.is_file()):
        return
    lines, words = read_vocab(txt), _tokenizer_json_vocab(tok_json)
    data = _json_object(tok_json)
    problem = None
    if lines != words:
        token = next((t for t in lines if words.get(t) != lines[t]), None)
        problem = (f"{len(lines)} tokens in vocab.txt, {len(words)} in tokenizer.json" if token is None else
                   f"{token!r} is id {lines[token]} in vocab.txt, {words.get(token, 'absent')} in tokenizer.json")
    added = [a for a in data.get("added_tokens") or [] if isinstance(a, dict)]
    specials = (data.get("post_processor") or {}).get("special_tokens") or {}
    for content, ids in [(a.get("content"), [a.get("id")]) for a in added] + [
            (name, s.get("ids")) for name, s in specials.items() if isinstance(s, dict)]:
        if problem is None and ids != [lines.get(content)]:
            problem = (f"special token {content!r} is id {lines.get(content, 'absent')} in vocab.txt, "
                       f"{', '.join(map(str, ids or [])) or 'absent'} in tokenizer.json")
    if problem is not None:
        raise CheckpointError(f"{txt} and {tok_json} disagree: {problem}; delete the one the model was not trained "
                              "with (transformers reads tokenizer.json, miniberts vocab.txt)")


def open_vocab(vocab: str | Path = "", cased: bool = False) -> WordPieceTokenizer:
    """What `--vocab` and `--cased` name: a vocab.txt or tokenizer.json file (its casing is `cased`), a directory
    holding one (the casing it records decides, see `from_dir`), or "" for the built-in uncased bert-base vocabulary."""
    if not vocab:
        if cased:
            raise CheckpointError(f"{BUILTIN_VOCAB}: the built-in vocabulary is uncased, but --cased was given: give "
                                  "a cased one with --vocab (train it with `miniberts vocab --cased`)")
        tokenizer = WordPieceTokenizer(BUILTIN_VOCAB)
    elif Path(vocab).is_dir():
        tokenizer = WordPieceTokenizer.from_dir(Path(vocab), cased)
    elif Path(vocab).is_file():
        tokenizer = WordPieceTokenizer(Path(vocab), lowercase=not cased)
    else:
        raise CheckpointError(f"{vocab}: not found (--vocab takes a vocab.txt or a directory holding one)")
    warn_casing(tokenizer)
    return tokenizer


def warn_casing(tokenizer: WordPieceTokenizer) -> None:
    """Log a warning when the casing looks wrong for the vocabulary, as Google's validate_case_matches_checkpoint
    does for its releases: upper-case tokens under lower-casing are never produced, and a cased tokenizer over a
    lower-case vocabulary turns every capital into [UNK]."""
    words = [t for t in tokenizer.vocab if not (t.startswith("[") and t.endswith("]"))]  # not [PAD], [unused0]
    upper = sum(t != t.lower() for t in words)
    lower = sum(t != t.upper() for t in words)
    if tokenizer.lowercase and upper > 0.01 * len(words):
        log.warning("%s: %d tokens hold upper-case letters, but the tokenizer lower-cases: is it a cased vocabulary "
                    "(--cased)?", tokenizer.vocab_path, upper)
    elif tokenizer.cased and upper == 0 and lower > 0:
        log.warning("%s: no token holds an upper-case letter, but the tokenizer is cased: capitals will become "
                    "[UNK] (an uncased vocabulary without --cased?)", tokenizer.vocab_path)


def read_vocab(path: Path) -> dict[str, int]:
    """One token per line, id = line number, as Google's tokenization.load_vocab reads it (stripped); or, for a
    .json file, the vocabulary of a `tokenizers` WordPiece tokenizer.json. A repeated token is an error naming both
    lines: Google's reader silently keeps the last id, so the first is an id no text produces, and the vocabulary
    is one token short of the lines the embeddings were sized by."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    if path.suffix == ".json":
        return _tokenizer_json_vocab(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 ({e})") from None
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for i, token in enumerate(lines):
        token = token.strip()
        if token in vocab:
            raise CheckpointError(f"{path}:{i + 1}: duplicate token {token!r} (first on line {vocab[token] + 1}); "
                                  "expected every token once")
        vocab[token] = i
    if not vocab:
        raise CheckpointError(f"{path}: the vocabulary is empty (expected one WordPiece token per line)")
    return vocab


def _tokenizer_json_vocab(path: Path) -> dict[str, int]:
    model = _json_object(path).get("model")
    if not isinstance(model, dict) or model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
        kind = model.get("type") if isinstance(model, dict) else None
        raise CheckpointError(f"{path}: expected a WordPiece model with its vocab (BERT's tokenizer), got {kind!r}")
    vocab = model["vocab"]
    if not vocab:
        raise CheckpointError(f"{path}: the vocabulary is empty")
    ids = list(vocab.values())
    if not all(type(i) is int for i in ids) or sorted(ids) != list(range(len(vocab))):  # a vocab.txt's line numbers
        raise CheckpointError(f"{path}: the WordPiece ids must be 0..{len(vocab) - 1}, each once")
    return dict(vocab)
