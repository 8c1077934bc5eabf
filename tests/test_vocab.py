"""`miniberts vocab` and `--vocab/--cased`: Google's special-token layout, BERT's normalisation cased and uncased,
`transformers.AutoTokenizer` agreeing with ours on the real multi-script text, pre-training and fine-tuning with
a vocabulary of one's own, and every bad vocabulary as one line.

The vocabularies are learned on the Wikipedia excerpt of tests/fixtures/pretraining plus tests/fixtures/multiscript.txt
(Russian, Chinese, Czech, accents, ...), 2,000 tokens, in about two seconds each.
"""

import gzip
import json
import logging
import shutil
import unicodedata
from pathlib import Path

import pytest
import transformers
from test_tokenizer import NO_LIMIT, corpus

from miniberts import cli
from miniberts.checkpoint import load_pretraining, save_hf
from miniberts.config import BertConfig
from miniberts.errors import CheckpointError
from miniberts.model import BertForPreTraining
from miniberts.tokenizer import BUILTIN_VOCAB, SPECIAL_TOKENS, WordPieceTokenizer, open_vocab
from miniberts.train.pretrain import PretrainConfig, build_model
from miniberts.vocab import GOOGLE_LAYOUT, VocabConfig, run as train_vocab

FIXTURES = Path(__file__).parent / "fixtures"
EXCERPT = FIXTURES / "pretraining" / "wiki_excerpt.txt"
MULTISCRIPT = FIXTURES / "multiscript.txt"
SIZE = 2000


@pytest.fixture(scope="module")
def vocabs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vocabs")
    out = {}
    for casing in ("cased", "uncased"):
        train_vocab(VocabConfig(files=[str(EXCERPT), str(MULTISCRIPT)], size=SIZE, cased=casing == "cased",
                                out=str(root / casing), progress=False))
        out[casing] = root / casing
    return out


def tokens_of(vocab_dir: Path) -> list[str]:
    return (vocab_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]


def fails(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit status 2 and a one-line error; return it."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# --- the vocabulary -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("casing", ["cased", "uncased"])
def test_google_layout_and_files(vocabs, casing):
    tokens = tokens_of(vocabs[casing])
    assert len(tokens) == SIZE and len(set(tokens)) == SIZE
    assert tokens[:104] == GOOGLE_LAYOUT  # [PAD] 0, [unused0..98], [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103
    assert [tokens.index(t) for t in SPECIAL_TOKENS] == [0, 100, 101, 102, 103]
    assert sum(t.startswith("##") for t in tokens) > 500  # continuations were learned, not just words
    config = json.loads((vocabs[casing] / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["do_lower_case"] is (casing == "uncased")
    normalizer = json.loads((vocabs[casing] / "tokenizer.json").read_text(encoding="utf-8"))["normalizer"]
    assert (normalizer["lowercase"], normalizer["strip_accents"]) == ((casing == "uncased"),) * 2
    stats = json.loads((vocabs[casing] / "vocab_stats.json").read_text(encoding="utf-8"))
    assert stats["size"] == SIZE and stats["cased"] is (casing == "cased")
    assert stats["special_ids"] == {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
    # The multiscript lines hold emoji, rare scripts and a 182-character word: a few [UNK] words, not many.
    assert 1.2 < stats["training_text"]["tokens_per_word"] < 3 and 0 < stats["training_text"]["unk_share"] < 0.01


def test_cased_keeps_case_and_accents_uncased_folds_them(vocabs):
    cased, uncased = tokens_of(vocabs["cased"]), tokens_of(vocabs["uncased"])
    assert sum(t != t.lower() for t in cased[104:]) > 100 and not any(t != t.lower() for t in uncased[104:])
    assert "é" in cased and "é" not in uncased and "e" in uncased
    tok_cased, tok_uncased = open_vocab(vocabs["cased"]), open_vocab(vocabs["uncased"])
    assert tok_cased.cased and not tok_uncased.cased
    assert tok_cased.tokenize("The café")[:1] + tok_cased.tokenize("The café")[-1:] == ["The", "##é"]
    assert tok_uncased.tokenize("The café")[0] == "the" and "##é" not in tok_uncased.tokenize("The café")


def test_bert_normalisation_of_the_learned_pieces(vocabs):
    for casing in ("cased", "uncased"):
        tokens = tokens_of(vocabs[casing])
        cjk = [t for t in tokens if any("\u4e00" <= c <= "\u9fff" for c in t)]
        assert len(cjk) > 100 and all(len(t) == 1 for t in cjk), "every CJK ideograph is a word of its own"
        assert not any(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for t in tokens for c in t)


@pytest.mark.parametrize("casing", ["cased", "uncased"])
def test_autotokenizer_agrees_on_the_multiscript_text(vocabs, casing, tmp_path):
    texts = corpus()
    ours = open_vocab(vocabs[casing])
    ids, types = ours.encode(texts, max_length=NO_LIMIT)
    # From tokenizer.json, and from vocab.txt + tokenizer_config.json alone (do_lower_case decides the casing).
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(vocabs[casing] / name, bare / name)
    for source in (vocabs[casing], bare):
        hf = transformers.AutoTokenizer.from_pretrained(source)
        ref = hf(texts, verbose=False)
        assert ids == ref["input_ids"] and types == ref["token_type_ids"], source
        assert hf.do_lower_case is (casing == "uncased")
    a, b = texts[:-1:2], texts[1::2]
    assert ours.encode(a, b, max_length=64) == tuple(
        hf(a, b, truncation="longest_first", max_length=64, verbose=False)[k] for k in ("input_ids", "token_type_ids"))


def test_compressed_input_and_cli(tmp_path, capsys):
    packed = tmp_path / "wiki.txt.gz"
    packed.write_bytes(gzip.compress(EXCERPT.read_bytes()))
    assert cli.main(["vocab", "--files", str(packed), "--size", "800", "--min-frequency", "3", "--out",
                     str(tmp_path / "v"), "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    plain = train_vocab(VocabConfig(files=[str(EXCERPT)], size=800, min_frequency=3, out=str(tmp_path / "p"),
                                    progress=False))
    # The words read are the same; the pieces may differ in tied merges (tokenizers' trainer is not deterministic
    # between processes: huggingface/tokenizers#1794), so only the size is compared.
    assert printed["training_text"]["words"] == plain["training_text"]["words"] > 5000
    assert printed["size"] == plain["size"] == 800 and printed["cased"] is False


def test_a_directory_transformers_saved_without_vocab_txt(vocabs, tmp_path):
    # transformers 5 writes tokenizer.json + tokenizer_config.json only: the vocabulary and casing come from there.
    saved = tmp_path / "saved"
    transformers.AutoTokenizer.from_pretrained(vocabs["cased"]).save_pretrained(saved)
    assert not (saved / "vocab.txt").exists()
    texts = corpus()
    want = transformers.AutoTokenizer.from_pretrained(saved)(texts, verbose=False)["input_ids"]
    (saved / "tokenizer_config.json").unlink()  # then tokenizer.json's BertNormalizer records the casing
    ours = open_vocab(saved)
    assert ours.cased and ours.vocab == open_vocab(vocabs["cased"]).vocab
    assert ours.encode(texts, max_length=NO_LIMIT)[0] == want
    bpe = tmp_path / "bpe" / "tokenizer.json"
    bpe.parent.mkdir()
    bpe.write_text(json.dumps({"model": {"type": "BPE", "vocab": {"a": 0}}}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="expected a WordPiece model with its vocab .BERT's tokenizer., got 'BPE'"):
        open_vocab(bpe.parent)


# --- using it -----------------------------------------------------------------------------------------------------

def test_pretrain_a_cased_preset_that_transformers_tokenizes_identically(vocabs, tmp_path):
    from miniberts.train.pretrain import run

    out = tmp_path / "run"
    cfg = PretrainConfig(model="tiny", train_files=[str(EXCERPT)], out=str(out), steps=2, batch_size=4, seq_len=32,
                         dtype="fp32", eval_every=0, eval_sequences=8, eval_fraction=0.15, progress=False,
                         vocab=str(vocabs["cased"]), cased=True)
    metrics = run(cfg)
    assert metrics["steps"] == 2 and metrics["unigram_baseline_loss"] > 0
    assert BertConfig.from_hf_json(out / "config.json").vocab_size == SIZE  # the preset took the vocabulary's size
    assert json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))["do_lower_case"] is False
    assert (out / "vocab.txt").read_text(encoding="utf-8") == (vocabs["cased"] / "vocab.txt").read_text(encoding="utf-8")
    # The run directory reloads cased, here and in transformers, with the same ids on the multi-script text.
    model, tokenizer = load_pretraining(out)
    assert tokenizer.cased and model.cfg.vocab_size == SIZE
    texts = corpus()
    assert tokenizer.encode(texts, max_length=NO_LIMIT)[0] == transformers.AutoTokenizer.from_pretrained(out)(
        texts, verbose=False)["input_ids"]
    mlm = transformers.BertForMaskedLM.from_pretrained(out)
    assert mlm.config.vocab_size == SIZE


def test_vocab_size_trains_with_the_same_trainer_cased(tmp_path):
    cfg = PretrainConfig(model="tiny", train_files=[str(EXCERPT)], out=str(tmp_path / "run"), vocab_size=700,
                         cased=True)
    model, tokenizer = build_model(cfg, tmp_path / "cache")
    assert tokenizer.cased and len(tokenizer) == model.cfg.vocab_size == 700
    assert [tokenizer.vocab[t] for t in SPECIAL_TOKENS] == [0, 100, 101, 102, 103]
    (cached,) = (tmp_path / "cache").glob("vocab-*")
    assert (cached / "vocab_stats.json").is_file()
    stamp = (cached / "vocab.txt").stat().st_mtime_ns
    build_model(cfg, tmp_path / "cache")  # a second run reuses the cached vocabulary
    assert (cached / "vocab.txt").stat().st_mtime_ns == stamp
    uncased = build_model(PretrainConfig(**{**cfg.__dict__, "cased": False}), tmp_path / "cache")[1]
    assert not uncased.cased and len(list((tmp_path / "cache").glob("vocab-*"))) == 2


def test_prepare_with_a_vocab_file_and_cased(vocabs, tmp_path, capsys):
    argv = ["prepare", "--train-files", str(EXCERPT), "--seq-len", "32", "--model", "tiny"]
    assert cli.main([*argv, "--cache-dir", str(tmp_path / "c"), "--vocab", str(vocabs["cased"] / "vocab.txt"),
                     "--cased"]) == 0
    capsys.readouterr()
    (index,) = (tmp_path / "c").glob("tokens-*/index.json")
    assert json.loads(index.read_text(encoding="utf-8"))["vocab_size"] == SIZE


def user_task(tmp_path: Path) -> list[str]:
    """Flags of a four-example sentiment task in TSV files."""
    rows = [("A wonderful film", "pos"), ("A dull mess", "neg"), ("Great acting", "pos"), ("Boring and long", "neg")]
    for split in ("train", "dev"):
        (tmp_path / f"{split}.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), "utf-8")
    return ["--train", str(tmp_path / "train.tsv"), "--dev", str(tmp_path / "dev.tsv"), "--text-column", "text",
            "--label-column", "label", "--epochs", "1", "--batch-size", "2", "--max-length", "16", "--no-progress"]


def test_finetune_a_preset_with_a_cased_vocab(vocabs, tmp_path):
    out = tmp_path / "ft"
    assert cli.main(["finetune", "--model", "tiny", *user_task(tmp_path), "--out", str(out), "--vocab",
                     str(vocabs["cased"])]) == 0
    assert BertConfig.from_hf_json(out / "config.json").vocab_size == SIZE
    assert json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))["do_lower_case"] is False


# --- bad input ----------------------------------------------------------------------------------------------------

def write_vocab(path: Path, tokens: list[str]) -> Path:
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return path


def test_bad_vocabulary_files(tmp_path, capsys):
    base = list(SPECIAL_TOKENS) + ["hello", "world", "##s"]
    dup = write_vocab(tmp_path / "dup.txt", base + ["hello"])
    missing = write_vocab(tmp_path / "missing.txt", [t for t in base if t != "[MASK]"])
    empty = write_vocab(tmp_path / "empty.txt", [])
    argv = ["pretrain", "--model", "tiny", "--train-files", str(EXCERPT), "--steps", "1", "--no-progress"]
    assert fails(capsys, [*argv, "--out", str(tmp_path / "r"), "--vocab", str(dup)]) == (
        f"miniberts pretrain: error: {dup}:9: duplicate token 'hello' (first on line 6); expected every token once")
    assert fails(capsys, [*argv, "--out", str(tmp_path / "r"), "--vocab", str(missing)]).endswith(
        f"{missing}: expected BERT's special tokens [PAD], [UNK], [CLS], [SEP], [MASK] (one per line), but [MASK] "
        "is missing")
    assert fails(capsys, [*argv, "--out", str(tmp_path / "r"), "--vocab", str(empty)]).endswith(
        f"{empty}: the vocabulary is empty (expected one WordPiece token per line)")
    assert fails(capsys, [*argv, "--out", str(tmp_path / "r"), "--vocab", str(tmp_path / "nowhere")]).endswith(
        f"{tmp_path / 'nowhere'}: not found (--vocab takes a vocab.txt or a directory holding one)")
    assert not (tmp_path / "r").exists()


def test_vocab_that_does_not_fit_a_model_directory(vocabs, tmp_path, capsys):
    model_dir = tmp_path / "model"
    cfg = BertConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64)
    save_hf(BertForPreTraining(cfg), WordPieceTokenizer(BUILTIN_VOCAB), model_dir)
    err = fails(capsys, ["pretrain", "--model", str(model_dir), "--train-files", str(EXCERPT), "--steps", "1",
                         "--out", str(tmp_path / "r"), "--vocab", str(vocabs["cased"])])
    assert err.endswith(f"{vocabs['cased'] / 'vocab.txt'}: {SIZE} tokens, but the model's vocab_size is 30522")
    err = fails(capsys, ["finetune", "--model", str(model_dir), *user_task(tmp_path), "--out", str(tmp_path / "f"),
                         "--vocab", str(vocabs["uncased"] / "vocab.txt")])
    assert err.endswith(f"{vocabs['uncased'] / 'vocab.txt'}: {SIZE} tokens, but the model's vocab_size is 30522")


def test_casing_that_contradicts_the_vocabulary(vocabs, tmp_path, capsys, caplog):
    argv = ["pretrain", "--model", "tiny", "--train-files", str(EXCERPT), "--steps", "1", "--out", str(tmp_path / "r")]
    assert fails(capsys, [*argv, "--cased", "--vocab", str(vocabs["uncased"])]).endswith(
        f"{vocabs['uncased'] / 'tokenizer_config.json'}: records do_lower_case=true (an uncased vocabulary), but "
        "--cased was given: drop --cased, or train a cased vocabulary with `miniberts vocab --cased`")
    assert "the built-in vocabulary is uncased, but --cased was given" in fails(capsys, [*argv, "--cased"])
    assert fails(capsys, [*argv, "--vocab-size", "100"]).endswith(
        "--vocab-size must be at least 105 (Google's 104 special and unused tokens, and more), got 100")
    assert "--vocab-size trains a new vocabulary and --vocab" in fails(
        capsys, [*argv, "--vocab-size", "500", "--vocab", str(vocabs["cased"])])
    # A directory's recorded casing wins over the default; a bare vocab.txt of a cased vocabulary is warned about.
    assert open_vocab(vocabs["cased"]).cased
    with caplog.at_level(logging.WARNING, logger="miniberts"):
        assert not open_vocab(vocabs["cased"] / "vocab.txt").cased
    assert "hold upper-case letters, but the tokenizer lower-cases" in caplog.text


def test_vocab_command_errors(tmp_path, capsys, tiny):
    assert fails(capsys, ["vocab", "--out", str(tmp_path / "v")]).endswith(
        "give the text files to learn from with --files FILE ...")
    assert fails(capsys, ["vocab", "--files", str(tmp_path / "none.txt"), "--out", str(tmp_path / "v")]).endswith(
        f"{tmp_path / 'none.txt'}: input file not found")
    assert fails(capsys, ["vocab", "--files", str(EXCERPT), "--size", "50", "--out", str(tmp_path / "v")]).endswith(
        "--size must be at least 105, got 50")
    assert fails(capsys, ["vocab", "--files", str(EXCERPT), "--out", tiny]).endswith(
        f"{Path(tiny) / 'config.json'}: {tiny} holds a model; write the vocabulary to another --out")
    assert not (tmp_path / "v").exists()
