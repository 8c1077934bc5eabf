"""`--backend auto`: which backend to run, by model size, batch shape and precision, from measured speed.

PLACEHOLDERS. The table is read off issue 13's side-by-side run (2-vCPU AMD EPYC with AVX-512 BF16 + VNNI, no AMX,
2 threads per engine, real sentences; sentences/s in batches of 32 and batch-1 latency on 32 tokens). It has not
been re-measured with these backends; `miniberts bench` reports the fastest engine per cell, and the lead refreshes
the rows from its report. What the issue measured, per row:

| cell | fastest there | numbers (issue 13) |
|---|---|---|
| batched, fp32/bf16, hidden <= 128 (Tiny) | OpenVINO | sorted: OpenVINO bf16 10,481/s vs ours 4,963/s |
| batched, fp32/bf16, hidden > 128 | torch (ours, unpadded bf16) | file order: ours first among non-int8 engines (MiniLM 437/s, Small 427/s, Base 75/s); length-sorted: OpenVINO bf16 leads by 10-13% (MiniLM 583 vs 516/s, Small 508 vs 468/s), kept on torch until re-measured |
| batch 1, fp32/bf16, hidden <= 128 | ONNX Runtime | ORT fp32 0.26 ms vs ours 1.93 ms |
| batch 1, fp32/bf16, hidden > 128 | OpenVINO | MiniLM 3.4 ms vs ours 8.6 ms; Small 3.7 vs 8.4; Base 17.1 vs 33.6 |
| batched, int8, hidden <= 128 | ONNX Runtime | sorted: ORT int8 10,654/s (CTranslate2 int8 5,009/s in file order) |
| batched, int8, hidden > 128 | CTranslate2 | MiniLM 579-706/s, Small 557-667/s, Base 104-123/s |
| batch 1, int8 | ONNX Runtime | MiniLM 2.8 ms, Small 2.9 ms, Base 12.3 ms, Tiny 0.21 ms |

The int8 rows put CTranslate2 first for accuracy (see TABLE). A row names its preference order; the first installed one runs, torch always last (it is always there). fp32 asked
for explicitly keeps the exact reference (torch) unless an engine is named: the engines agree with it only within
their tolerances (1e-4..5e-3, see their modules).
"""

from __future__ import annotations

SMALL_HIDDEN = 128  # Tiny (2/128) and below: per-op overhead dominates, the engines' fused graphs win everywhere
BATCH_ONE = 1  # batch shapes up to this count as "batch 1" (latency); larger ones as "batched" (throughput)

# (precision class, batch shape, small model?) -> preference order
TABLE: dict[tuple[str, str, bool], tuple[str, ...]] = {
    ("float", "batched", True): ("openvino", "onnxruntime", "torch"),
    ("float", "batched", False): ("torch",),
    ("float", "single", True): ("onnxruntime", "openvino", "torch"),
    ("float", "single", False): ("openvino", "onnxruntime", "torch"),
    # int8: ONNX Runtime is faster at batch 1 and on Tiny, but its dynamic int8 keeps only cosine ~0.97 to fp32 on
    # real MiniLM sentences (per-channel weights; measured min over 64 Rotten Tomatoes sentences), short of the 0.99
    # that int8 must keep; CTranslate2's int8 keeps 0.99. Accuracy first: CTranslate2 wherever it is installed.
    ("int8", "batched", True): ("ctranslate2", "onnxruntime", "torch"),
    ("int8", "batched", False): ("ctranslate2", "onnxruntime", "torch"),
    ("int8", "single", True): ("ctranslate2", "onnxruntime", "torch"),
    ("int8", "single", False): ("ctranslate2", "onnxruntime", "torch"),
}


def choose(num_layers: int, hidden: int, batch_size: int, precision: str, available: list[str]) -> str:
    """The first installed backend of the table row for this model and batch shape. fp32 stays on torch (exact)."""
    if precision == "fp32":
        return "torch"
    key = ("int8" if precision == "int8" else "float", "single" if batch_size <= BATCH_ONE else "batched",
           hidden <= SMALL_HIDDEN)
    return next(b for b in TABLE[key] + ("torch",) if b in available)
