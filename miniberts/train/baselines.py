"""Baselines beside the students: what a practitioner could ship instead of a miniature, scored on the same splits.

  teacher        the fine-tuned teacher itself (the accuracy a student is distilled towards, at the teacher's cost)
  teacher-probe  a logistic-regression head on the general teacher's frozen sentence embeddings (`Model.embed`:
                 the directory's own pooling, mean for MiniLM), fitted on the gold labels, C chosen on dev
  static         a model2vec static-embedding model distilled from the general teacher (PCA 256: one vector per
                 WordPiece, a sentence is the mean of its tokens' vectors; Tulkens & van Dongen, 2024), its
                 logistic-regression head fitted on the fine-tuned teacher's hard labels for the transfer set plus
                 the gold labels, C chosen on dev
  static-trained the same static model fine-tuned end to end with a head by model2vec's own trainer
                 (`StaticModelForClassification.fit`: the vectors train too), on the same texts and labels, dev for
                 its early stopping; seeded (the batch order, the head's init), so one cell per seed

The first three are deterministic given their inputs (the teacher's weights, the splits; lbfgs and the PCA's
eigendecomposition draw no random numbers), so each is one cell with n = 1: seeds would repeat the same number and
fake an interval. Their heads are saved as safetensors (`coef` [labels, dim], `intercept` [labels]) beside the run's
metrics.json; static-trained saves model2vec's pipeline (its model.safetensors and head.safetensors). The feature and
prediction functions here are the same calls the latency measurement times. The static model is distilled once per
general teacher into the cache (CACHE/static-model/<digest>) and shared by both static arms and every seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import param_count
from ..data.load import TaskData, load_task
from ..errors import MinibertsError
from ..fileio import atomic_path, atomic_write_text, build_dir
from ..inference.loaded_model import Model, load
from ..metrics import task_metrics
from ..sbert import read_layout
from . import distill, finetune
from .distill_targets import teacher_logits
from .rundir import fingerprint

log = logging.getLogger("miniberts")

BASELINES = {
    "teacher": "the fine-tuned teacher",
    "teacher-probe": "logistic regression on the general teacher's frozen embeddings",
    "static": "model2vec static embeddings of the general teacher + logistic regression on the teacher's labels",
    "static-trained": "the same static model fine-tuned with a head by model2vec's trainer on the teacher's labels "
                      "(seeded: one cell per seed)",
}
STATIC_ARMS = ("static", "static-trained")  # distilled from the general teacher, fitted on the labelled transfer set
NEEDS_TEACHER = ("teacher", *STATIC_ARMS)  # the fine-tuned teacher: scored itself, or labelling the transfer set
NEEDS_GENERAL = ("teacher-probe", *STATIC_ARMS)  # the teacher before task fine-tuning
SEEDED = ("static-trained",)  # the baselines that draw random numbers: one cell per seed
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)  # inverse L2 strength of the logistic-regression heads, chosen on dev
PCA_DIMS = 256
HEAD = "head.safetensors"
STATIC = "static"  # the model2vec directory inside the static cell
PIPELINE = "pipeline"  # model2vec's trained pipeline inside a static-trained cell


@dataclass
class BaselineConfig:
    name: str  # a key of BASELINES
    task: finetune.FinetuneConfig  # the task's files and settings: max_length, dtype, eval_batch_size, cache_dir
    teacher: str  # the fine-tuned teacher's directory
    general: str  # the general teacher's directory (sentence-transformers or Hugging Face layout)
    transfer: list[str]  # the transfer files (static: the texts the teacher labels)
    out: str
    seed: int | None = None  # the SEEDED baselines' seed


def check(names: list[str], data: TaskData) -> None:
    """One line for a baseline this task or this installation cannot run, before anything is trained."""
    heads = [n for n in names if n in NEEDS_GENERAL]
    if heads and (data.regression or any(ex.text_b is not None for ex in data.train)):
        raise MinibertsError(f"--baselines {','.join(heads)} fit a logistic-regression head on single-text "
                             f"embeddings: classification tasks of one text only ({data.name} is not)")
    if "static-trained" in names:
        model2vec_trainer()
    if any(n in STATIC_ARMS for n in names):
        model2vec_distill()


def model2vec_distill():
    """model2vec's `distill_from_model`, or one line naming the extra that installs it."""
    try:
        from model2vec.distill import distill_from_model
    except ImportError as e:
        raise MinibertsError(f"--baselines static needs model2vec (pip install 'miniberts[static]'): {e}") from None
    return distill_from_model


def model2vec_trainer():
    """model2vec's `StaticModelForClassification`, or one line naming the extra that installs its trainer."""
    try:
        from model2vec.train import StaticModelForClassification
    except ImportError as e:
        raise MinibertsError(f"--baselines static-trained needs model2vec's trainer and its datasets dependency "
                             f"(pip install 'miniberts[static]'): {e}") from None
    return StaticModelForClassification


def run(cfg: BaselineConfig) -> dict:
    """Fit (where there is something to fit) and score one baseline; OUT/metrics.json as finetune writes it."""
    started = time.time()
    data = load_task(cfg.task)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.name == "teacher":
        model = load(cfg.teacher)
        test = _labeled_test(data)
        metrics = {"best": {_dev_name(data): _score_predictions(data, _dev(data), model, cfg.task)},
                   "test": {"test": _score_predictions(data, test, model, cfg.task)} if test else {},
                   "params": param_count(model.config)}
    elif cfg.name == "teacher-probe":
        model = load(cfg.general)
        features = lambda examples: probe_features(model, [ex.text_a for ex in examples], cfg.task.max_length,  # noqa: E731
                                                   cfg.task.dtype, cfg.task.eval_batch_size)
        metrics = _fit_head(data, features(data.train), _gold(data, data.train), features, out)
        metrics["params"] = param_count(model.config) + metrics.pop("head_params")
    elif cfg.name == "static":
        static = _distill_static(cfg.general, Path(cfg.task.cache_dir))
        static.save_pretrained(str(out / STATIC))  # a rerun of an unfinished cell overwrites it
        features = lambda examples: static_features(static, [ex.text_a for ex in examples],  # noqa: E731
                                                     cfg.task.max_length, cfg.task.eval_batch_size)
        texts, y = _teacher_labelled(cfg, data)
        metrics = _fit_head(data, static_features(static, texts, cfg.task.max_length, cfg.task.eval_batch_size), y,
                            features, out)
        metrics["params"] = int(static.embedding.size) + metrics.pop("head_params")
        metrics["transfer_examples"] = len(texts) - len(data.train)
    else:
        metrics = _fit_static_trained(cfg, data, out)
    metrics["seconds"] = round(time.time() - started, 1)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


# --- the features: the same calls the latency measurement times ------------------------------------------------

def probe_features(model: Model, texts: list[str], max_length: int, dtype: str, batch_size: int) -> np.ndarray:
    return model.embed(texts, batch_size=batch_size, max_length=max_length, dtype=dtype)


def static_features(static, texts: list[str], max_length: int, batch_size: int) -> np.ndarray:
    return static.encode(texts, max_length=max_length, batch_size=batch_size, use_multiprocessing=False,
                         show_progress_bar=False)


def pipeline_labels(pipeline, texts: list[str], max_length: int, batch_size: int) -> np.ndarray:
    return pipeline.predict(texts, max_length=max_length, batch_size=batch_size, use_multiprocessing=False)


def load_pipeline(path: Path):
    from model2vec.inference import StaticModelPipeline

    return StaticModelPipeline.from_pretrained(str(path))


def pipeline_params(path: Path) -> int:
    """Numbers in a saved model2vec pipeline: its static model's and its head's safetensors."""
    from safetensors.numpy import load_file

    return sum(int(a.size) for f in sorted(path.glob("*.safetensors")) for a in load_file(str(f)).values())


def read_head(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from safetensors.numpy import load_file

    head = load_file(str(path))
    return head["coef"], head["intercept"]


def head_labels(coef: np.ndarray, intercept: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Label ids: argmax of the linear head (a binary scikit-learn head has one row: positive when above 0)."""
    scores = features @ coef.T + intercept
    return (scores[:, 0] > 0).astype(int) if coef.shape[0] == 1 else scores.argmax(-1)


def load_static(path: Path):
    from model2vec import StaticModel

    return StaticModel.from_pretrained(str(path))


def general_model_dir(general: str) -> Path:
    """The directory that holds the general teacher's weights (a sentence-transformers layout may nest them)."""
    layout = read_layout(Path(general))
    return Path(layout.model_dir) if layout else Path(general)


# --- fitting ----------------------------------------------------------------------------------------------------

def _distill_static(general: str, cache_root: Path):
    """model2vec's distillation of the general teacher (every WordPiece through the encoder, PCA to 256 dims), made
    once per teacher (its files' digests) in CACHE/static-model and loaded from there."""
    from transformers import AutoModel, AutoTokenizer

    source = general_model_dir(general)
    key = json.dumps({"teacher": fingerprint(source), "pca_dims": PCA_DIMS}, sort_keys=True)
    folder = cache_root / "static-model" / hashlib.sha256(key.encode()).hexdigest()[:16]

    def build(tmp: Path) -> None:
        log.info("static: distilling %s with model2vec (PCA %d)", source, PCA_DIMS)
        model2vec_distill()(AutoModel.from_pretrained(source), AutoTokenizer.from_pretrained(source),
                            pca_dims=PCA_DIMS, device="cpu").save_pretrained(str(tmp))

    build_dir(folder, build)
    return load_static(folder)


def _teacher_labelled(cfg: BaselineConfig, data: TaskData) -> tuple[list[str], np.ndarray]:
    """The transfer texts with the fine-tuned teacher's hard labels, then the training texts with their gold ones."""
    texts, _ = distill.read_transfer(cfg.transfer, False)
    hard = teacher_logits(cfg.teacher, [(texts, None)], cfg.task.max_length,
                          Path(cfg.task.cache_dir) / "teacher-logits", cfg.task.eval_batch_size,
                          cfg.task.dtype)[0].argmax(-1)
    return texts + [ex.text_a for ex in data.train], np.concatenate([hard, _gold(data, data.train)])


def _fit_static_trained(cfg: BaselineConfig, data: TaskData, out: Path) -> dict:
    """model2vec's trainer from the cached static model, with its defaults (early stopping on dev, patience 5); the
    pipeline saved in OUT/pipeline and scored by its own predict."""
    texts, y = _teacher_labelled(cfg, data)
    dev = _dev(data)
    model = model2vec_trainer().from_static_model(model=_distill_static(cfg.general, Path(cfg.task.cache_dir)),
                                                  max_length=cfg.task.max_length)
    model.fit(texts, [int(v) for v in y], X_val=[ex.text_a for ex in dev], y_val=[int(v) for v in _gold(data, dev)],
              device="cpu", random_seed=cfg.seed)
    if list(model.classes_) != list(range(len(data.id2label))):
        raise MinibertsError(f"{data.name}: the training labels cover only {len(model.classes_)} of the "
                             f"{len(data.id2label)} classes; a head cannot be fitted")
    model.to_pipeline().save_pretrained(str(out / PIPELINE))
    pipeline = load_pipeline(out / PIPELINE)  # scored as saved: the latency measurement loads the same files
    labels = lambda examples: pipeline_labels(pipeline, [ex.text_a for ex in examples],  # noqa: E731
                                              cfg.task.max_length, cfg.task.eval_batch_size)
    test = _labeled_test(data)
    return {"best": {_dev_name(data): _score_labels(data, dev, labels(dev))},
            "test": {"test": _score_labels(data, test, labels(test))} if test else {},
            "train_examples": len(y), "transfer_examples": len(texts) - len(data.train),
            "params": pipeline_params(out / PIPELINE), "seed": cfg.seed}


def _fit_head(data: TaskData, x: np.ndarray, y: np.ndarray, features, out: Path) -> dict:
    """Logistic regression on (x, y) for each C of C_GRID, the best on dev kept and scored on test."""
    from sklearn.linear_model import LogisticRegression

    dev_x, dev = features(_dev(data)), _dev(data)
    best = None
    for c in C_GRID:
        head = LogisticRegression(C=c, max_iter=2000).fit(x, y)
        score = _score_labels(data, dev, head_labels(head.coef_, head.intercept_, dev_x))
        log.info("head C=%g: dev %.2f", c, score["score"])
        if best is None or score["score"] > best[1]["score"]:
            best = (c, score, head)
    c, dev_score, head = best
    coef, intercept = head.coef_.astype(np.float32), head.intercept_.astype(np.float32)
    if list(head.classes_) != list(range(len(data.id2label))):
        raise MinibertsError(f"{data.name}: the training labels cover only {len(head.classes_)} of the "
                             f"{len(data.id2label)} classes; a head cannot be fitted")
    from safetensors.numpy import save_file

    with atomic_path(out / HEAD) as tmp:
        save_file({"coef": coef, "intercept": intercept}, str(tmp))
    test = _labeled_test(data)
    scores = {"test": _score_labels(data, test, head_labels(coef, intercept, features(test)))} if test else {}
    return {"best": {_dev_name(data): dev_score}, "test": scores, "C": c, "train_examples": len(y),
            "head_params": int(coef.size + intercept.size)}


def _dev_name(data: TaskData) -> str:
    return next(iter(data.dev))


def _dev(data: TaskData) -> list:
    return data.dev[_dev_name(data)]


def _labeled_test(data: TaskData) -> list:
    """The test split when it has labels (a user's test file may have none: then only dev is scored)."""
    test = data.test.get("test", [])
    return test if test and test[0].label is not None else []


def _gold(data: TaskData, examples: list) -> np.ndarray:
    return np.array([data.id2label.index(ex.label) for ex in examples])


def _score_labels(data: TaskData, examples: list, ids: np.ndarray) -> dict:
    return task_metrics(data.spec, [int(i) for i in ids], [ex.label for ex in examples])


def _score_predictions(data: TaskData, examples: list, model: Model, task: finetune.FinetuneConfig) -> dict:
    results = model.predict([ex.text_a for ex in examples], [ex.text_b for ex in examples]
                            if examples and examples[0].text_b is not None else None,
                            batch_size=task.eval_batch_size, max_length=task.max_length, dtype=task.dtype)
    preds = [r if data.regression else r["label"] for r in results]
    return task_metrics(data.spec, preds, [ex.label for ex in examples])
