"""`miniberts bench`: miniberts against `transformers`, ONNX Runtime, OpenVINO and CTranslate2, same machine, same
weights, same inputs. The engine section is engines.py's docstring; the rest compares ours with `transformers` and
ONNX Runtime.

What runs in that comparison (how to run it: benchmarks/README.md):
- inference on a variable-length workload, batches of 32 in arrival order and length-sorted; a fixed 32x128 batch;
  batch-1 latency (p50/p99) on 32-token inputs; peak memory of a 32x128 batch and of an MLM step;
- one MLM pre-training step at 32x128 (tokens/s), fine-tuning steps on the variable-length batches (examples/s);
- the fp32 and bf16 matmul peak of the machine, and every result's useful GFLOP/s as a fraction of it (MFU).

Systems. miniberts ("ours") runs the library's default fast path: unpadded execution (model.py), bf16 autocast where
the CPU has it natively (device.resolve_dtype("auto")) with the Linear weights cast once (fast_paths.for_inference), and,
where the workload allows it, length-sorted batches (batching.length_batches). `transformers` runs
BertForSequenceClassification / BertForMaskedLM with SDPA attention in fp32, as a user runs it (from_pretrained,
eval, inference_mode). ONNX Runtime runs the graph that `miniberts export` writes from the same weights (CPU
provider, default session options), in fp32 and int8.

Noise. Each measurement runs the systems round-robin, one repeat of each in turn (rotating who goes first), with a
warm-up first; the reports are medians. During each model's section the bench records the CPU time that other
processes took (from /proc/stat) and a small bf16 matmul before and after; the report says when the machine was busy.

FLOPs are counted analytically on real tokens only: 2 x (matmul parameters) per token, 4 x hidden x s^2 per layer and
sequence of s tokens for attention, the pooler per sequence, and for MLM the head on the masked positions; x3 for a
training step. Every system gets the same count for the same work, so MFU ratios equal throughput ratios.

The package, one module per section: harness.py (configuration, workload, FLOPs, machine, timing), systems.py (the
systems of the training and memory sections and their measurements), engines.py (inference against every engine,
with agreement to fp32 and the fastest engine per cell), run.py (one model's section, the profile, `run_bench`),
report.py (targets, Markdown, chart).
"""

from .harness import BenchConfig
from .run import run_bench
from .systems import memory_probe

__all__ = ["BenchConfig", "run_bench", "memory_probe"]
