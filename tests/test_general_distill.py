"""pretrain --objective general-distill: on real text (the Wikipedia excerpt) with the real MiniLM-L6 as teacher, Tiny's
hidden-state loss falls and the student itself (not only the projection) moves towards the teacher; resume is exact;
the teacher is checked (vocabulary, positions, given at all) in one line; the experiment names the objective.

Runs are fp32 on one thread with batches of 4 x 32 tokens, so a step costs one MiniLM forward of 128 tokens.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import MINILM, needs_minilm, refused
from safetensors.torch import load_file

from miniberts.checkpoint import load_pretraining, save_hf
from miniberts.config import BertConfig, find_preset
from miniberts.model import BertForPreTraining, BertModel
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer
from miniberts.train.common import read_jsonl
from miniberts.train.experiment import Cell
from miniberts.train.general_distill import ProjectedStudent, evaluate, layer_map, load_teacher
from miniberts.train.pretrain import PretrainConfig, eval_batches, prepare_data, run

REPO = Path(__file__).resolve().parents[1]
EXCERPT = REPO / "tests" / "fixtures" / "pretraining" / "wiki_excerpt.txt"


@pytest.fixture(scope="module")
def tiny_start(tmp_path_factory) -> Path:
    """Tiny (2 layers, 128 wide, the real vocabulary) at a fixed random init, as a model directory."""
    torch.manual_seed(0)
    return save_hf(BertForPreTraining(find_preset("tiny").config()), WordPieceTokenizer(BUILTIN_VOCAB),
                   tmp_path_factory.mktemp("tiny-start"))


def config(model: Path, out: Path, **kw) -> PretrainConfig:
    base = dict(model=str(model), objective="general-distill", teacher=str(MINILM), train_files=[str(EXCERPT)],
                out=str(out), steps=12, batch_size=4, seq_len=32, lr=2e-3, warmup=0.0, dropout=0.0, dtype="fp32",
                log_every=1, eval_every=0, eval_fraction=0.15, eval_sequences=16, save_every=6, progress=False)
    return PretrainConfig(**{**base, **kw})


def test_layer_map_is_uniform_and_includes_the_embeddings():
    assert layer_map(2, 6) == [0, 3, 6]  # Tiny <- MiniLM-L6
    assert layer_map(4, 12) == [0, 3, 6, 9, 12]
    assert layer_map(6, 6) == list(range(7))


@needs_minilm
def test_loss_falls_and_the_student_moves_towards_the_teacher(tiny_start, tmp_path):
    cfg = config(tiny_start, tmp_path / "run")
    metrics = run(cfg)
    train = [r["hidden_loss"] for r in read_jsonl(tmp_path / "run" / "log.jsonl") if r["split"] == "train"]
    held = metrics["eval_curve"]
    assert len(train) == 12 and sum(train[-3:]) / 3 < 0.9 * sum(train[:3]) / 3, train
    assert held[-1]["hidden_loss"] < 0.9 * held[0]["hidden_loss"], held
    assert metrics["eval_mlm_accuracy"] is None and metrics["objective"] == "general-distill"

    # With the trained projection held fixed, the trained student is closer to the teacher than its start: the loss
    # reaches the student's weights (a projection trained alone would leave the two equal).
    student, tokenizer = load_pretraining(str(tmp_path / "run"))
    start, _ = load_pretraining(str(tiny_start))
    projection = torch.load(tmp_path / "run" / "checkpoints" / "step-00000012.pt", weights_only=True)["projection"]
    teacher = load_teacher(str(MINILM), tokenizer, 32, 2)
    batches = eval_batches(prepare_data(cfg, tokenizer, tmp_path / "run" / "data").eval, 16, 16, cfg.seed)
    loss = {}
    for name, model in (("trained", student), ("start", start)):
        net = ProjectedStudent(model, 384)
        net.projection.load_state_dict(projection)
        loss[name] = evaluate(net, teacher, batches, torch.device("cpu"), torch.float32)["hidden_loss"]
    assert loss["trained"] < 0.95 * loss["start"], loss
    assert abs(loss["trained"] - held[-1]["hidden_loss"]) < 1e-4  # the logged held-out loss is this one

    # The projection is not part of the saved student: a plain Hugging Face BERT with MLM head, nothing more.
    saved = load_file(tmp_path / "run" / "model.safetensors")
    assert not any("projection" in k for k in saved) and "cls.predictions.bias" in saved


@pytest.mark.slow
@needs_minilm
def test_resume_from_a_checkpoint_reproduces_every_step(tiny_start, tmp_path):
    """The projection and its optimizer state travel in the checkpoint: resuming from step 4 of 8 gives the unbroken
    run's losses and weights bit for bit."""
    full = tmp_path / "full"
    run(config(tiny_start, full, steps=8, save_every=4))
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    for name in ("checkpoints/step-00000008.pt", "model.safetensors", "metrics.json"):
        (cut / name).unlink()
    run(config(tiny_start, cut, steps=8, save_every=4, resume=True))
    losses = lambda d: {r["step"]: r["loss"] for r in read_jsonl(d / "log.jsonl") if r["split"] == "train"}  # noqa
    assert sorted(losses(cut)) == list(range(1, 9)) and losses(cut) == losses(full)
    a, b = load_file(full / "model.safetensors"), load_file(cut / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def _teacher_dir(tmp_path: Path, vocab: list[str] | None = None, positions: int = 64) -> Path:
    """A small encoder directory: the real vocabulary (or `vocab`), `positions` learned positions."""
    tokens = vocab or BUILTIN_VOCAB.read_text(encoding="utf-8").splitlines()
    tmp_path.mkdir()
    (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    cfg = BertConfig(vocab_size=len(tokens), hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                     max_position_embeddings=positions)
    return save_hf(BertModel(cfg), WordPieceTokenizer(tmp_path / "vocab.txt"), tmp_path / "teacher")


def test_the_teacher_is_checked_in_one_line(tmp_path, capsys):
    args = ["pretrain", "--model", "tiny", "--train-files", str(EXCERPT), "--out", str(tmp_path / "run"), "--steps",
            "2", "--seq-len", "64", "--no-progress"]
    err = refused(capsys, args + ["--objective", "general-distill"])
    assert "--objective general-distill needs --teacher DIR" in err
    err = refused(capsys, args + ["--teacher", str(tmp_path)])
    assert "--teacher is the teacher of --objective general-distill" in err
    real = BUILTIN_VOCAB.read_text(encoding="utf-8").splitlines()
    other = _teacher_dir(tmp_path / "other", real[:-1] + ["[unused-other]"])
    err = refused(capsys, args + ["--objective", "general-distill", "--teacher", str(other)])
    assert "differs from student vocab" in err
    short = _teacher_dir(tmp_path / "short", positions=32)
    err = refused(capsys, args + ["--objective", "general-distill", "--teacher", str(short)])
    assert "--seq-len 64 exceeds the 32 positions of the teacher" in err
    assert not (tmp_path / "run").exists()  # refusals leave no run directory behind


def test_the_objective_names_the_pretrained_cells():
    mlm = Cell("tiny", "pd", "generic", 2000, "all", 1, "mlm")
    general = Cell("tiny", "pd", "generic", 500, "all", 1, "general-distill")
    assert mlm.path == "tiny/pd/generic-2000steps/transfer-all/seed-1"  # as before the objective existed
    assert general.path == "tiny/pd/general-distill-generic-500steps/transfer-all/seed-1"
    assert Cell("tiny", "distill", None, None, "all", 1).path == "tiny/distill/transfer-all/seed-1"


@pytest.mark.slow
@needs_minilm
def test_two_processes_give_the_weights_of_one(tiny_start, tmp_path):
    """Under torchrun the projection is trained inside DDP beside the student: 2 ranks x 2 sequences = 1 x 4."""
    args = lambda out: ["-m", "miniberts", "pretrain", "--model", str(tiny_start), "--objective", "general-distill",  # noqa
                        "--teacher", str(MINILM), "--train-files", str(EXCERPT), "--out", str(out), "--steps", "3",
                        "--batch-size", "4", "--seq-len", "32", "--dropout", "0", "--dtype", "fp32", "--eval-every",
                        "0", "--eval-fraction", "0.15", "--eval-sequences", "8", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    for launcher, out in (([sys.executable], tmp_path / "one"), (torchrun, tmp_path / "two")):
        done = subprocess.run([*launcher, *args(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=1e-4), name
    assert not torch.equal(a["bert.embeddings.word_embeddings.weight"], load_file(
        tiny_start / "model.safetensors")["bert.embeddings.word_embeddings.weight"])  # it trained
