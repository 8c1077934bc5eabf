"""A checkpoint written by real TensorFlow in Google's release layout, end to end, without TensorFlow.

tests/fixtures/google_tf_tiny (made by tests/fixtures/make_google_tf_tiny.py; see its README) holds bert_config.json,
vocab.txt, bert_model.ckpt.{index,data-00000-of-00001} with the pre-training heads, Adam slots and global_step, and
expected.npz: sequence_output, pooled_output, mlm_logits and nsp_logits from a TensorFlow forward pass that follows
google-research/bert modeling.py (tanh GELU, LayerNorm eps 1e-12, -10000 attention mask) on input_ids,
token_type_ids and input_mask (one padded row).

Tolerance: 1e-5 absolute (float32 CPU), at non-padding positions on the unpadded path (which returns zeros at
padding), and at every position on the plain padded path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from miniberts.checkpoint import convert, load_state, read_checkpoint
from miniberts.model import BertForPreTraining

FIXTURE = Path(__file__).parent / "fixtures" / "google_tf_tiny"
ATOL = 1e-5

pytestmark = [pytest.mark.skipif(not (FIXTURE / "expected.npz").is_file(), reason=f"{FIXTURE} is not there"),
              pytest.mark.usefixtures("always_unpad")]


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURE / "expected.npz"))


@pytest.fixture(scope="module")
def inputs(expected) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.from_numpy(expected["input_ids"]).long(),
        "attention_mask": torch.from_numpy(expected["input_mask"]).long(),
        "token_type_ids": torch.from_numpy(expected["token_type_ids"]).long(),
    }


def max_diff(ours: torch.Tensor, theirs: np.ndarray) -> float:
    return (ours - torch.from_numpy(theirs)).abs().max().item()


def test_read_checkpoint_config():
    ckpt = read_checkpoint(FIXTURE)
    google = json.loads((FIXTURE / "bert_config.json").read_text())
    cfg = ckpt.config
    assert cfg.hidden_act == "gelu_tanh"  # Google's config says "gelu"; its modeling.py computes the tanh form
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size,
            cfg.max_position_embeddings) == (google["vocab_size"], google["hidden_size"], google["num_hidden_layers"],
                                             google["num_attention_heads"], google["intermediate_size"],
                                             google["max_position_embeddings"])
    assert ckpt.has_head("mlm.") and ckpt.has_head("nsp.") and not ckpt.has_head("classifier.")
    assert not any("adam" in k or "step" in k for k in ckpt.state)  # optimizer slots and the step are dropped


def test_outputs_equal_tensorflow(expected, inputs):
    ckpt = read_checkpoint(FIXTURE)
    model = BertForPreTraining(ckpt.config, nsp=True)
    assert load_state(model, ckpt.state, ckpt.source) == []  # every tensor came from the checkpoint
    model.eval()
    assert (inputs["attention_mask"] == 0).any(), "the fixture should have a padded row"
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        for unpadded in (True, False):
            model.bert.unpad = unpadded
            hidden, pooled = model.bert(**inputs)
            mlm, nsp = model(**inputs)
            where = torch.ones_like(real) if not unpadded else real  # the plain path matches at padding too
            assert max_diff(hidden[where], expected["sequence_output"][where.numpy()]) < ATOL, unpadded
            assert max_diff(pooled, expected["pooled_output"]) < ATOL, unpadded
            assert max_diff(mlm[where], expected["mlm_logits"][where.numpy()]) < ATOL, unpadded
            assert max_diff(nsp, expected["nsp_logits"]) < ATOL, unpadded


def test_convert_loads_in_transformers(tmp_path, expected, inputs):
    out = convert(FIXTURE, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForPreTraining"] and config["hidden_act"] == "gelu_pytorch_tanh"
    hf, info = transformers.BertForPreTraining.from_pretrained(out, output_loading_info=True)
    assert (set(info["missing_keys"]), set(info["unexpected_keys"]), set(info["mismatched_keys"])) == (set(), set(), set())
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        ref = hf.eval()(**inputs)
    assert max_diff(ref.prediction_logits[real], expected["mlm_logits"][real.numpy()]) < ATOL
    assert max_diff(ref.seq_relationship_logits, expected["nsp_logits"]) < ATOL
    # The vocabulary travels too, and transformers' tokenizer reads it.
    assert transformers.AutoTokenizer.from_pretrained(out).vocab_size == config["vocab_size"]
