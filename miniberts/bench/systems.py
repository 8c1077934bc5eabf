"""The systems the training and memory sections compare (miniberts, transformers, ONNX Runtime classifiers) and their
measurements: variable-length inference passes, batch-1 latency, MLM and fine-tuning steps, peak memory."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import load_classifier, save_hf
from ..config import BertConfig, find_preset
from ..device import autocast, resolve_dtype
from ..errors import MinibertsError
from ..inference.fast_paths import for_inference
from ..lifetime import parent_death_signal
from ..model import BertForPreTraining, BertForSequenceClassification
from ..tokenizer import BUILTIN_VOCAB, WordPieceTokenizer
from .harness import BATCH, HF, MASK_RATE, MAX_LEN, ORT32, ORT8, OURS, round_robin

log = logging.getLogger(__name__)


# --- the systems ------------------------------------------------------------------------------------------------

@dataclass
class Systems:
    """Inference callables per system: a padded batch (torch tensors) -> outputs; `prepare` converts it first."""

    run: dict[str, Callable[[object], object]]
    prepare: dict[str, Callable[[dict], object]]
    precision: dict[str, str]
    missing: dict[str, str]


def to_numpy(batch: dict) -> dict:
    return {k: v.numpy() for k, v in batch.items()}


def build_systems(model_dir: Path, onnx_dir: Path, device: torch.device, dtype: torch.dtype,
                  only: tuple[str, ...] = (OURS, HF, ORT32, ORT8), threads: int | None = None) -> Systems:
    systems = Systems({}, {}, {}, {})
    if OURS in only:
        ours = for_inference(load_classifier(model_dir)[0], dtype)

        def run_ours(batch):
            with torch.inference_mode(), autocast(device, dtype):
                return ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])

        systems.run[OURS], systems.prepare[OURS] = run_ours, lambda b: b
        systems.precision[OURS] = "bf16" if dtype == torch.bfloat16 else "fp32"
    if HF in only:
        try:
            import transformers

            hf = transformers.BertForSequenceClassification.from_pretrained(model_dir, attn_implementation="sdpa").eval()

            def run_hf(batch):
                with torch.inference_mode():
                    return hf(**batch).logits

            systems.run[HF], systems.prepare[HF], systems.precision[HF] = run_hf, lambda b: b, "fp32"
        except ImportError as e:
            systems.missing[HF] = f"transformers is not installed ({e.name}): pip install 'miniberts[test]'"
    if ORT32 not in only and ORT8 not in only:
        return systems
    try:
        from ..inference.export import export_onnx, load_exportable, quantize_onnx, require_onnx, session

        require_onnx()
        fp32, int8 = onnx_dir / "model.onnx", onnx_dir / "model.int8.onnx"
        if not fp32.is_file():
            export_onnx(load_exportable(model_dir)[0], fp32)
            quantize_onnx(fp32, int8)
        for name, path, precision in ((ORT32, fp32, "fp32"), (ORT8, int8, "int8")):
            if name not in only:
                continue
            sess = session(path, threads)
            systems.run[name] = lambda batch, sess=sess: sess.run(None, batch)
            systems.prepare[name], systems.precision[name] = to_numpy, precision
    except MinibertsError as e:
        systems.missing[ORT32] = systems.missing[ORT8] = str(e)
    return systems


def make_checkpoint(preset: str, out: Path, labels: int = 2) -> Path:
    """A random classifier of this size, saved in the Hugging Face layout (every system loads these weights)."""
    torch.manual_seed(0)
    cfg = find_preset(preset).config().with_task([f"label_{i}" for i in range(labels)], False)
    save_hf(BertForSequenceClassification(cfg).eval(), WordPieceTokenizer(BUILTIN_VOCAB), out)
    return out


# --- the measurements -------------------------------------------------------------------------------------------

def measure_inference(systems: Systems, batches: dict[str, list[dict]], repeats: int) -> dict:
    """Seconds per pass over each batch list, per system."""
    out = {}
    for workload, plain in batches.items():
        prepared = {name: [systems.prepare[name](b) for b in plain] for name in systems.run}

        def job(name, first: int | None = None):
            run, data = systems.run[name], prepared[name][:first]
            return lambda: [run(b) for b in data]

        # Warm-up: the first two batches (a pass of the slow systems on Base takes a minute).
        out[workload] = round_robin({name: job(name) for name in systems.run}, repeats,
                                    warmups={name: job(name, 2) for name in systems.run})
    return out


def measure_latency(systems: Systems, inputs: list[dict], iters: int, chunks: int = 5) -> dict[str, dict]:
    """Batch-1 latency (ms): `iters` single-sentence requests per system, in `chunks` interleaved runs."""
    prepared = {name: [systems.prepare[name](b) for b in inputs] for name in systems.run}
    samples = {name: [] for name in systems.run}
    for name in systems.run:  # warm-up
        for b in prepared[name][:5]:
            systems.run[name](b)
    per_chunk = max(1, iters // chunks)
    for c in range(chunks):
        names = list(systems.run)
        for name in names[c % len(names):] + names[: c % len(names)]:
            for i in range(per_chunk):
                b = prepared[name][(c * per_chunk + i) % len(inputs)]
                start = time.perf_counter()
                systems.run[name](b)
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: {"p50_ms": float(np.percentile(s, 50)), "p99_ms": float(np.percentile(s, 99)), "n": len(s)}
            for name, s in samples.items()}


def mlm_batch(cfg: BertConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """32 x 128 random tokens (no padding, as packed pre-training data), 15% of them masked."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, cfg.vocab_size, (BATCH, MAX_LEN), generator=g)
    positions = torch.rand(BATCH, MAX_LEN, generator=g) < MASK_RATE
    positions[:, 0] = False
    labels = ids[positions]
    return {"input_ids": ids.masked_fill(positions, 103), "attention_mask": torch.ones_like(ids),
            "token_type_ids": torch.zeros_like(ids), "mlm_positions": positions, "mlm_labels": labels}


def ours_mlm_step(cfg: BertConfig, device: torch.device, dtype: torch.dtype) -> Callable[[], None]:
    """The library's pre-training step: MLM head on the masked positions only, bf16 autocast, fp32 AdamW."""
    from ..train.common import make_optimizer

    torch.manual_seed(0)
    model = BertForPreTraining(cfg).train()
    optimizer = make_optimizer(model, 1e-4)
    b = mlm_batch(cfg)

    def step():
        with autocast(device, dtype):
            logits, _ = model(b["input_ids"], b["attention_mask"], b["token_type_ids"], mlm_positions=b["mlm_positions"])
        loss = F.cross_entropy(logits.float(), b["mlm_labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def hf_mlm_step(cfg: BertConfig) -> Callable[[], None]:
    """Stock BertForMaskedLM: fp32, full-vocabulary logits at every position, labels -100 where not masked."""
    import transformers

    torch.manual_seed(0)
    hf_cfg = transformers.BertConfig(**cfg.to_hf_dict(["BertForMaskedLM"]), attn_implementation="sdpa")
    model = transformers.BertForMaskedLM(hf_cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b = mlm_batch(cfg)
    labels = torch.full_like(b["input_ids"], -100).masked_scatter(b["mlm_positions"], b["mlm_labels"])

    def step():
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"],
                    labels=labels)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    return step


def finetune_steps(model_dir: Path, batches: list[dict], device: torch.device, dtype: torch.dtype, system: str
                   ) -> Callable[..., None]:
    """One pass of training steps (forward, loss, backward, AdamW) over `batches` (the first `steps` of them)."""
    torch.manual_seed(0)
    if system == OURS:
        from ..train.common import make_optimizer

        model, _ = load_classifier(model_dir)
        model.train()
        optimizer = make_optimizer(model, 2e-5)

        def loss_of(b):
            with autocast(device, dtype):
                logits = model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
            return F.cross_entropy(logits.float(), b["labels"])
    else:
        import transformers

        model = transformers.BertForSequenceClassification.from_pretrained(model_dir, attn_implementation="sdpa").train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)

        def loss_of(b):
            return model(**b).loss

    def run(steps: int | None = None):
        for b in batches[:steps]:
            loss = loss_of(b)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


# --- peak memory (in a fresh process per system) ----------------------------------------------------------------

def _rss_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def _trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def memory_probe(job: dict) -> dict:
    """Runs in a child process: peak RSS (MiB) of loading a system and running one job, above the process's RSS
    after its imports. The peak is read from VmHWM after resetting it (/proc/self/clear_refs) once the model is
    loaded, so a transient of loading does not count, the resident weights do."""
    system, kind, model_dir = job["system"], job["kind"], Path(job["model_dir"])
    device = torch.device("cpu")
    dtype = resolve_dtype("auto", device)
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    if system == HF or kind == "mlm":
        import transformers  # noqa: F401  (imported before the baseline, like torch)
    if system in (ORT32, ORT8):
        import onnxruntime  # noqa: F401
    base = _rss_kib("VmRSS")
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 30000, (BATCH, MAX_LEN), generator=g),
             "attention_mask": torch.ones(BATCH, MAX_LEN, dtype=torch.long), "token_type_ids": torch.zeros(BATCH, MAX_LEN, dtype=torch.long)}
    if kind == "mlm":
        cfg = load_classifier(model_dir)[0].cfg
        run = ours_mlm_step(cfg, device, dtype) if system == OURS else hf_mlm_step(cfg)
    else:
        systems = build_systems(model_dir, Path(job["onnx_dir"]), device, dtype, only=(system,), threads=job.get("threads"))
        data = systems.prepare[system](batch)
        run = lambda: systems.run[system](data)  # noqa: E731
    _trim()  # memory freed while loading (fp32 weights cast to bf16, file buffers) goes back, for every system alike
    reset = True
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        reset = False
    for _ in range(1 if kind == "mlm" else 2):  # the first MLM step allocates the optimizer state: the peak
        run()
    return {"peak_mib": (_rss_kib("VmHWM") - base) / 1024, "reset_ok": reset}


def measure_memory(model_dir: Path, onnx_dir: Path, systems: list[str], kind: str, threads: int | None) -> dict[str, float | None]:
    """Peak MiB per system, each in its own process (an allocator that kept the last system's memory would hide
    the next one's)."""
    out = {}
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for system in systems:
        job = {"system": system, "kind": kind, "model_dir": str(model_dir), "onnx_dir": str(onnx_dir), "threads": threads}
        code = "import json, sys; from miniberts.bench import memory_probe; print(json.dumps(memory_probe(json.loads(sys.argv[1]))))"
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(job)], capture_output=True, text=True, env=env, timeout=900,
                              preexec_fn=parent_death_signal)  # dies with the bench
        if proc.returncode != 0:
            log.warning("memory probe %s/%s failed: %s", system, kind, proc.stderr.strip().splitlines()[-1:] )
            out[system] = None
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        out[system] = round(result["peak_mib"], 1)
    return out
