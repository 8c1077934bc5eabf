"""Parity of `miniberts.model` with `transformers` modeling_bert.py, for all 24 presets, with random weights.

Reference: transformers/models/bert/modeling_bert.py (BertForPreTraining, BertForSequenceClassification, SDPA
attention). Each test builds the Hugging Face model from a preset's dimensions, fills every tensor (LayerNorm and
biases included) with seeded random values so a mis-mapped bias or gain cannot hide behind its default init, maps
the state dict with `checkpoint.from_foreign(..., "hf", ...)` + `load_state`, and compares outputs.

Tolerance: 1e-5 absolute on hidden states, pooled output, MLM, NSP and classifier logits (float32 CPU). Outputs
are compared only at non-padding positions: the unpadded path returns zeros where the padding was, and HF's states
there are meaningless anyway.

Speed: vocab_size is 2000, not 30522, so the 24 presets run in well under a minute; the vocabulary size only
changes the shapes of the embedding and the MLM bias, which the mapping treats like any other tensor. Weight
matrices keep transformers' own N(0, 0.02) init; the cheap 1-D tensors (biases, LayerNorm) are made random here.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from dataclasses import replace

from miniberts.checkpoint import from_foreign, load_state
from miniberts.config import PRESETS, param_count
from miniberts.model import BertForPreTraining, BertForSequenceClassification

pytestmark = pytest.mark.usefixtures("always_unpad")

ATOL = 1e-5
VOCAB = 2000  # see the module docstring; the real 30522 is tested in test_checkpoint.py with a real model
LENGTHS = (16, 9, 4)  # one full row (no padding) and two padded ones
PRESET_NAMES = list(PRESETS)


def hf_config(name: str, **extra) -> transformers.BertConfig:
    """The preset's dimensions, stated independently of miniberts.config (H/64 heads, 4H feed-forward)."""
    layers, hidden = map(int, name.split("-"))
    kwargs = dict(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
        intermediate_size=4 * hidden, max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu",
        attn_implementation="sdpa",
    )
    return transformers.BertConfig(**{**kwargs, **extra})


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Make the 1-D tensors random too (transformers inits biases to 0 and LayerNorm to 1/0, which would hide a
    mis-mapped bias or gain): LayerNorm gains near 1, biases N(0, 0.02). Matrices keep their random N(0, 0.02)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                continue
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.1 * noise if name.endswith("LayerNorm.weight") else 0.02 * noise)
    return model.eval()


def batch(vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded [3, 16] batch; sentence B (token type 1) starts halfway through each row."""
    gen = torch.Generator().manual_seed(seed)
    s = max(LENGTHS)
    ids = torch.randint(1, vocab_size, (len(LENGTHS), s), generator=gen)
    mask = torch.zeros(len(LENGTHS), s, dtype=torch.long)
    types = torch.zeros(len(LENGTHS), s, dtype=torch.long)
    for row, n in enumerate(LENGTHS):
        mask[row, :n] = 1
        types[row, n // 2 : n] = 1
    ids = ids * mask  # [PAD] = 0 where there is no token
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    diff = (ours - theirs).abs().max().item()
    assert diff <= ATOL, f"{what}: max abs difference {diff:.3g} > {ATOL}"


def ours_from_hf(hf: torch.nn.Module, ours: torch.nn.Module, num_layers: int) -> torch.nn.Module:
    state = from_foreign(hf.state_dict(), "hf", num_layers, "hf model")
    assert load_state(ours, state, "hf model") == []  # nothing left to initialise: every tensor came across
    return ours.eval()


def unallocated(factory) -> torch.nn.Module:
    """Build our model without running its init (much of this file's time): `load_state` then overwrites every
    tensor, which `ours_from_hf` asserts. The other tests build models the ordinary way."""
    with torch.device("meta"):
        model = factory()
    return model.to_empty(device="cpu")


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_pretraining_parity(name):
    hf = randomize(transformers.BertForPreTraining(hf_config(name)), seed=len(name) * 100 + PRESET_NAMES.index(name))
    cfg = replace(PRESETS[name].config(), vocab_size=VOCAB)
    ours = ours_from_hf(hf, unallocated(lambda: BertForPreTraining(cfg, nsp=True)), cfg.num_layers)
    inputs = batch(cfg.vocab_size)
    real = inputs["attention_mask"].bool()

    with torch.no_grad():
        ref = hf.bert(**inputs)
        ref_mlm, ref_nsp = hf.cls(ref.last_hidden_state, ref.pooler_output)
        for unpadded in (True, False):
            ours.bert.unpad = unpadded
            where = f"{name} unpad={unpadded}"
            hidden, pooled = ours.bert(**inputs)
            close(hidden[real], ref.last_hidden_state[real], f"{where} hidden")
            close(pooled, ref.pooler_output, f"{where} pooled")
            close(ours.mlm(hidden, ours.bert.embeddings.word.weight)[real], ref_mlm[real], f"{where} mlm logits")
            close(ours.nsp(pooled), ref_nsp, f"{where} nsp logits")
            if unpadded:
                assert not hidden[~real].any(), "the unpadded path puts zeros where the padding was"
        # Through forward(): MLM logits gathered at a few positions (padding rows included), and NSP.
        picked = torch.zeros_like(real)
        picked[0, [1, 5]], picked[2, 3] = True, True
        gathered, nsp = ours(**inputs, mlm_positions=picked)
        assert gathered.shape == (3, VOCAB)
        close(gathered, ref_mlm[picked], f"{name} gathered mlm logits")
        close(nsp, ref_nsp, f"{name} forward nsp logits")

        # A batch without padding takes the mask-free SDPA path.
        full = {k: v[:1] for k, v in inputs.items()}
        ref_full = hf.bert(**full)
        hidden, pooled = ours.bert(full["input_ids"], None, full["token_type_ids"])
        close(hidden, ref_full.last_hidden_state, f"{name} no-padding hidden")
        close(pooled, ref_full.pooler_output, f"{name} no-padding pooled")


@pytest.mark.parametrize("name", ["2-128", "4-256", "6-512"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_sequence_classification_parity(name, task):
    extra = {"num_labels": 3} if task == "classification" else {"num_labels": 1, "problem_type": "regression"}
    hf = randomize(transformers.BertForSequenceClassification(hf_config(name, **extra)), seed=7)
    base = replace(PRESETS[name].config(), vocab_size=VOCAB)
    cfg = base.with_task(["neg", "neu", "pos"], False) if task == "classification" else base.with_task([], True)
    ours = ours_from_hf(hf, BertForSequenceClassification(cfg), cfg.num_layers)
    inputs = batch(cfg.vocab_size, seed=1)
    with torch.no_grad():
        ref = hf(**inputs).logits
        for unpadded in (True, False):
            ours.bert.unpad = unpadded
            logits = ours(**inputs)
            assert logits.shape == (len(LENGTHS), extra["num_labels"])
            close(logits, ref, f"{name} {task} unpad={unpadded}")


@pytest.mark.parametrize("name", ["2-128", "4-512"])
def test_gelu_tanh_parity(name):
    """Google's checkpoints compute the tanh approximation; HF calls it gelu_pytorch_tanh."""
    hf = randomize(transformers.BertForPreTraining(hf_config(name, hidden_act="gelu_pytorch_tanh")), seed=3)
    cfg = replace(PRESETS[name].config(), vocab_size=VOCAB, hidden_act="gelu_tanh")
    ours = ours_from_hf(hf, BertForPreTraining(cfg, nsp=True), cfg.num_layers)
    inputs = batch(cfg.vocab_size, seed=2)
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        ref = hf(**inputs)
        mlm, nsp = ours(**inputs)
        close(mlm[real], ref.prediction_logits[real], f"{name} gelu_tanh mlm logits")
        close(nsp, ref.seq_relationship_logits, f"{name} gelu_tanh nsp logits")
        # The tolerance tells the two activations apart: the same weights with erf GELU miss it.
        erf = ours_from_hf(hf, BertForPreTraining(replace(cfg, hidden_act="gelu"), nsp=True), cfg.num_layers)
        assert (erf(**inputs)[0][real] - mlm[real]).abs().max() > 5 * ATOL


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_param_count_matches_transformers(name):
    with torch.device("meta"):  # shapes only: counting needs no memory or init
        hf = transformers.BertModel(hf_config(name, vocab_size=30522))
    assert param_count(PRESETS[name].config()) == sum(p.numel() for p in hf.parameters())


def test_param_count_known_values():
    assert param_count(PRESETS["2-128"].config()) == 4_385_920  # BERT-Tiny
    assert param_count(PRESETS["12-768"].config()) == 109_482_240  # BERT-Base, as bert-base-uncased's BertModel
