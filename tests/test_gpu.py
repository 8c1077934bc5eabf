"""The same code on a GPU: parity of every CUDA path with the CPU fp32 reference.

These run on CUDA when a GPU is present, or on the device named by $MINIBERTS_TEST_DEVICE (benchmarks/gpu_check.sh
sets it; `--cpu-smoke` sets "cpu" to dry-run the script); otherwise they skip. Tolerances, stated per test:
- fp32 on the device vs the CPU reference: 1e-4 max abs on real tokens (GPU GEMMs sum in another order; TF32 off);
- unpadded vs padded on the device: 1e-4 (fp32); packed rows (a server's pass) vs padded on the device: 1e-4 (fp32);
- bf16 autocast vs fp32: cosine of mean-pooled embeddings >= 0.999 on the real MiniLM (>= 0.99 on random Tiny);
- SDPA under the flash / memory-efficient kernels only: the same outputs as the default choice within 2e-2 (bf16);
- a pre-training step with fused AdamW: finite, and the loss falls over 8 steps on one batch.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import MINILM
from miniberts.checkpoint import load_encoder
from miniberts.config import find_preset
from miniberts.device import autocast, native_bf16
from miniberts.model import BertForPreTraining, BertModel
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer

_name = os.environ.get("MINIBERTS_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "")
DEVICE = torch.device(_name) if _name else None
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no CUDA device (set MINIBERTS_TEST_DEVICE to run elsewhere)")

TEXTS = ["A three-hour cinema master class.", "Dull.",
         "It's always fascinating to watch Marker the essayist at work, even when the film around him falls apart.",
         "The performances are uniformly strong, but the script never decides what story it wants to tell, and the "
         "second half drags on for what feels like an eternity before an ending nobody asked for.", "Funny, warm."]


@pytest.fixture(scope="module", autouse=True)
def exact_fp32():
    """TF32 would make "fp32" on Ampere+ a 10-bit-mantissa matmul: the fp32 parity tests need real fp32."""
    if DEVICE is None or DEVICE.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.fixture(scope="module")
def encoder():
    """The real MiniLM when installed, else a random Tiny: (CPU fp32 model, tokenizer, is_real)."""
    if MINILM is not None:
        model, tok = load_encoder(MINILM)
        return model.eval(), tok, True
    torch.manual_seed(0)
    return BertModel(find_preset("tiny").config()).eval(), WordPieceTokenizer(BUILTIN_VOCAB), False


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    m = mask[..., None].double()
    return ((hidden.double().cpu() * m).sum(1) / m.sum(1)).numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def on(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def test_fp32_on_device_matches_cpu(encoder):
    model, tok, _ = encoder
    batch = tok(TEXTS, max_length=128)
    with torch.no_grad():
        ref, ref_pooled = model(**batch)
        dev = model.to(DEVICE)
        got, got_pooled = dev(**on(batch, DEVICE))
    model.cpu()
    real = batch["attention_mask"].bool()
    assert (got.cpu()[real] - ref[real]).abs().max().item() < 1e-4
    assert (got_pooled.cpu() - ref_pooled).abs().max().item() < 1e-4


def test_unpadded_equals_padded_on_device(encoder, monkeypatch):
    monkeypatch.setattr("miniberts.model.UNPAD_MIN_SAVING", 0)  # unpad even lightly padded batches
    model, tok, _ = encoder
    batch = on(tok(TEXTS, max_length=128), DEVICE)
    model.to(DEVICE)
    try:
        with torch.no_grad():
            unpadded, _ = model(**batch)
            model.unpad = False
            padded, _ = model(**batch)
    finally:
        model.unpad = True
        model.cpu()
    real = batch["attention_mask"].bool()
    assert (unpadded[real] - padded[real]).abs().max().item() < 1e-4


def test_packed_rows_equal_padded_on_device(encoder):
    """A server's packed pass on the device (`BertModel.packed_hidden`, several inputs a row, a block mask in
    SDPA under the CUDA kernel choice) gives each input its padded hidden states."""
    from miniberts.inference.packing import pack_rows, packed_arrays
    model, tok, _ = encoder
    batch = tok(TEXTS, max_length=128)
    ids = [row[row != tok.pad_id].tolist() for row in batch["input_ids"]]
    packed = packed_arrays(ids, [[0] * len(x) for x in ids], pack_rows([len(x) for x in ids], 128), 128)
    arrays = [torch.from_numpy(a).to(DEVICE) for a in (packed.input_ids, packed.token_type_ids, packed.position_ids,
                                                       packed.segment_ids)]
    model.to(DEVICE)
    try:
        with torch.no_grad():
            padded, _ = model(**on(batch, DEVICE))
            flat = model.packed_hidden(*arrays).flatten(0, 1)
    finally:
        model.cpu()
    for i, (start, n) in enumerate(zip(packed.starts.tolist(), packed.lengths.tolist())):
        assert (flat[start:start + n] - padded[i, :n]).abs().max().item() < 1e-4, i


def test_bf16_autocast_close_to_fp32(encoder):
    model, tok, real_weights = encoder
    if not native_bf16(DEVICE):
        pytest.skip(f"no native bf16 on {DEVICE}")
    batch = tok(TEXTS, max_length=128)
    with torch.no_grad():
        ref, _ = model(**batch)
        model.to(DEVICE)
        with autocast(DEVICE, torch.bfloat16):
            got, _ = model(**on(batch, DEVICE))
    model.cpu()
    c = cosine(mean_pool(got.float(), batch["attention_mask"]), mean_pool(ref, batch["attention_mask"]))
    assert c.min() >= (0.999 if real_weights else 0.99), c


def test_sdpa_fused_kernels_give_the_same_outputs(encoder):
    """Flash attention takes no mask: equal-length rows (one attention group, key_mask None) reach it; padded groups
    use the memory-efficient kernel, which takes the boolean key mask."""
    if DEVICE.type != "cuda":
        pytest.skip("the flash and memory-efficient SDPA kernels are CUDA kernels")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model, tok, _ = encoder
    batch = on(tok(TEXTS, max_length=128), DEVICE)
    model.to(DEVICE)
    try:
        with torch.no_grad(), autocast(DEVICE, torch.bfloat16):
            default, _ = model(**batch)
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
                fused, _ = model(**batch)
    finally:
        model.cpu()
    real = batch["attention_mask"].bool()
    assert (default.float()[real] - fused.float()[real]).abs().max().item() < 2e-2


def test_pretraining_step_with_fused_adamw_learns():
    from miniberts.train.common import make_optimizer

    torch.manual_seed(0)
    cfg = find_preset("tiny").config()
    model = BertForPreTraining(cfg).to(DEVICE).train()
    optimizer = make_optimizer(model, 1e-3)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, cfg.vocab_size, (8, 64), generator=g)
    positions = torch.rand(8, 64, generator=g) < 0.15
    labels = ids[positions].to(DEVICE)
    inputs = ids.masked_fill(positions, 103).to(DEVICE)
    dtype = torch.bfloat16 if native_bf16(DEVICE) else torch.float32
    losses = []
    for _ in range(8):
        with autocast(DEVICE, dtype):
            logits, _ = model(inputs, torch.ones_like(inputs), torch.zeros_like(inputs), mlm_positions=positions.to(DEVICE))
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
