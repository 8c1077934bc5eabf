"""`--backend auto` (the default): which backend runs, by precision, batch shape and model size, from measured speed.

The library runs length-sorted batches (batching.length_batches), so "batched" rows follow the bench's *length-sorted*
cell and "single" rows its batch-1 cell. Sources, per precision:

- **fp32** (the default precision where the CPU has no native bf16): `miniberts bench` on 2026-12-01, 2-vCPU AMD
  EPYC with AVX2 only, 2 threads per engine (docs/benchmarks.md; docs/inference.md has the reading). Only backends
  that keep fp32 exact (within 1e-5 of the torch reference: ONNX Runtime, CTranslate2, tests/test_backends.py) may
  run fp32; OpenVINO (2e-3 .. 5e-3 max abs) never does.

  | cell | fastest exact backend (sentences/s, or ms at batch 1) |
  |---|---|
  | batch 1, every size | ONNX Runtime: Tiny 0.81 vs torch 4.40 ms, MiniLM 7.65 vs 16.5, Base 63 vs 128 |
  | batched, hidden <= 128 (Tiny) | ONNX Runtime: 2,598 vs CTranslate2 2,112, torch 1,547 |
  | batched, layers x hidden < 4096 (Mini, Small, MiniLM) | CTranslate2: Mini 500 vs torch 442, Small 140 vs 124, MiniLM 156 vs 132 |
  | batched, layers x hidden >= 4096 (Medium, Base) | torch (unpadded): Medium 71.6 = CTranslate2 71.6, Base 19.5 vs 16.0 |

- **bf16** (the default where the CPU has native bf16): the engine comparison run before 2026-12-01 on a 2-vCPU
  AMD EPYC with AVX-512 BF16 + VNNI, real NYT sentences, 2 threads per engine (not re-measured: the machine of
  2026-12-01 has no bf16). Length-sorted: OpenVINO bf16 10,481/s vs ours
  4,963 on Tiny, 583 vs 516 on MiniLM, 508 vs 468 on Small; batch 1: ONNX Runtime 0.26 ms on Tiny, OpenVINO
  3.4-17 ms on the larger ones vs ours 8.4-33.6.
- **int8**: OpenVINO's NNCF static int8 (ov_int8.py: full activation ranges, FFN and attention outputs in fp32)
  first, batched and at batch 1: the one int8 that keeps the real MiniLM's mean-pooled cosine >= 0.99 to fp32 on
  every text measured, very short ones included (min 0.9905 over 3,000 Rotten Tomatoes texts and 153 short texts,
  benchmarks/int8_accuracy.py; probe -0.25 points), and 1.2-1.6x ONNX Runtime's int8 in four interleaved runs
  under load (1.0-1.4x fp32 there; the idle bench decides the 1.4x goal). ONNX Runtime's SmoothQuant + dynamic
  int8 (smoothquant.py) comes second, where NNCF is not installed (min 0.9925 on the 3,000, but 0.9898 on
  "Thanks"), then CTranslate2 int8 (0.987, -0.2 points).

A row is a preference order; the first installed backend runs, torch always last (it is always there).
"""

from __future__ import annotations

BATCH_ONE = 1  # batch shapes up to this count as "single" (latency); larger ones as "batched" (throughput)
EXACT_FP32 = ("torch", "onnxruntime", "ctranslate2")  # fp32 within 1e-5 of the reference
SIZE_CLASSES = ("small", "mid", "large")  # size_class()


def size_class(num_layers: int, hidden: int) -> str:
    """small: Tiny-width (per-op overhead dominates); large: Medium and up (matmuls dominate); mid: between."""
    if hidden <= 128:
        return "small"
    return "large" if num_layers * hidden >= 4096 else "mid"


# (precision, batch shape, size class) -> preference order
TABLE: dict[tuple[str, str, str], tuple[str, ...]] = {
    **{("fp32", "single", size): ("onnxruntime", "ctranslate2") for size in SIZE_CLASSES},
    ("fp32", "batched", "small"): ("onnxruntime", "ctranslate2"),
    ("fp32", "batched", "mid"): ("ctranslate2",),
    ("fp32", "batched", "large"): ("torch",),
    ("bf16", "single", "small"): ("onnxruntime", "openvino"),
    ("bf16", "single", "mid"): ("openvino", "onnxruntime"),
    ("bf16", "single", "large"): ("openvino", "onnxruntime"),
    ("bf16", "batched", "small"): ("openvino", "onnxruntime"),
    ("bf16", "batched", "mid"): ("openvino",),
    ("bf16", "batched", "large"): ("torch",),
    **{("int8", shape, size): ("openvino", "onnxruntime", "ctranslate2") for shape in ("single", "batched")
       for size in SIZE_CLASSES},
}


def choose(num_layers: int, hidden: int, batch_size: int, precision: str, available: list[str]) -> str:
    """The first installed backend of the table row for this precision, batch shape and model size."""
    shape = "single" if batch_size <= BATCH_ONE else "batched"
    row = TABLE[(precision, shape, size_class(num_layers, hidden))] + ("torch",)
    return next(b for b in row if b in available and (precision != "fp32" or b in EXACT_FP32))
