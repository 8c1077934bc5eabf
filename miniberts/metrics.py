"""Task metrics (accuracy, F1, Matthews correlation, Pearson, Spearman) and the GLUE score.

The metric functions are thin wrappers over scikit-learn and scipy and return fractions in [0, 1]
(correlations in [-1, 1]). `task_metrics` returns *percent* (x100), the unit the GLUE leaderboard,
the BERT paper and the miniatures' model card use, so its numbers compare with theirs directly.

Per task the leaderboard reports: CoLA Matthews corr.; SST-2, MNLI-m, MNLI-mm, QNLI, RTE, WNLI
accuracy; MRPC and QQP F1/accuracy (F1 of the positive class "1": paraphrase, duplicate); STS-B
Pearson/Spearman; AX the 3-class Matthews corr. (R3, Gorodkin's generalisation, which is what
sklearn's multiclass `matthews_corrcoef` computes). A task's *score* is the unweighted mean of its
figures (Wang et al. 2019, GLUE, sec. 4: "for tasks with multiple metrics, we use an unweighted
average of the metrics as the score for the task"); we select checkpoints on that score, so MRPC and
QQP select on (F1 + acc) / 2 and STS-B on (Pearson + Spearman) / 2, as GLUE-baselines' trainer does.
"""

import math
import warnings

import numpy as np

from miniberts.data.tasks import TaskSpec, get_task
from miniberts.errors import MinibertsError


# scikit-learn and scipy are imported where used: together they add ~1.5 s to every command's start-up.

def accuracy(preds, labels) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(labels, preds))


def f1(preds, labels, positive="1") -> float:
    """Binary F1 of the `positive` class (0.0 when it is never predicted nor present)."""
    from sklearn.metrics import f1_score

    return float(f1_score(labels, preds, pos_label=positive, average="binary", zero_division=0.0))


def matthews_corrcoef(preds, labels) -> float:
    """Matthews correlation; 0.0 when either side is constant (sklearn's convention)."""
    from sklearn.metrics import matthews_corrcoef as mcc

    return float(mcc(labels, preds))


def _correlation(name: str, preds, labels) -> float:
    from scipy import stats

    preds, labels = np.asarray(preds, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    # A constant input has no correlation; scipy warns and returns nan, and so do we (silently:
    # an untrained regressor predicting a constant is an expected state, not an accident).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(getattr(stats, name)(preds, labels)[0])


def pearson(preds, labels) -> float:
    return _correlation("pearsonr", preds, labels)


def spearman(preds, labels) -> float:
    return _correlation("spearmanr", preds, labels)


def _label_names(values, spec: TaskSpec) -> list[str]:
    # Accept label ids (argmax outputs) as well as label names; ids index spec.labels.
    out = []
    for v in values:
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            out.append(spec.labels[int(v)])
        else:
            out.append(str(v))
    unknown = sorted(set(out) - set(spec.labels))
    if unknown:
        raise ValueError(f"{spec.name}: unknown label(s) {', '.join(map(repr, unknown))}; "
                         f"expected names ({', '.join(spec.labels)}) or ids")
    return out


_FIGURES = {
    "accuracy": lambda p, y: accuracy(p, y),
    "f1": lambda p, y: f1(p, y, positive="1"),  # MRPC/QQP: "1" is paraphrase/duplicate
    "mcc": lambda p, y: matthews_corrcoef(p, y),
    "pearson": lambda p, y: pearson(p, y),
    "spearman": lambda p, y: spearman(p, y),
}


def task_metrics(task: "str | TaskSpec", preds, labels) -> dict[str, float]:
    """The task's leaderboard figures in percent, plus "score": their mean, the number to select
    checkpoints on. Classification preds/labels may be label names or label ids."""
    spec = get_task(task)
    if len(preds) != len(labels) or len(labels) == 0:
        raise ValueError(f"{spec.name}: need as many predictions as labels, got {len(preds)} and {len(labels)}")
    if spec.is_regression:
        preds, labels = np.asarray(preds, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    else:
        preds, labels = _label_names(preds, spec), _label_names(labels, spec)
    out = {name: 100.0 * _FIGURES[name](preds, labels) for name in spec.metrics}
    out["score"] = task_score(spec, out)
    return out


def task_score(task: "str | TaskSpec", figures: dict[str, float]) -> float:
    """Unweighted mean of the task's leaderboard figures taken from `figures` (other keys ignored)."""
    spec = get_task(task)
    missing = [m for m in spec.metrics if m not in figures]
    if missing:
        raise MinibertsError(f"{spec.name}: results lack {', '.join(missing)}; got {', '.join(figures) or 'nothing'}")
    return sum(figures[m] for m in spec.metrics) / len(spec.metrics)


# The tasks in the GLUE score, and the leaderboard columns they are read from: MNLI is one task
# with two columns (matched, mismatched). AX is a column but not scored.
GLUE_SCORED_TASKS = ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI")
GLUE_SCORE_COLUMNS = ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI-m", "MNLI-mm", "QNLI", "RTE", "WNLI")


def glue_score(results: dict[str, dict[str, float]]) -> float:
    """The GLUE leaderboard score from per-column figures in percent.

    `results` maps leaderboard column names (GLUE_SCORE_COLUMNS; "AX" and other keys are ignored)
    to figure dicts as `task_metrics` returns them. The score is the macro-average over the nine
    tasks CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI of each task's score, where a task's
    score is the mean of its figures and MNLI's is the mean of MNLI-m and MNLI-mm. AX (the
    diagnostic) is reported but not scored.

    Checked against the Score column of the BERT miniatures model card (tests/test_metrics.py).
    From the card's figures, which are rounded to 0.1, it gives 64.14, 65.76, 71.17, 73.51 for the
    card's 64.2, 65.8, 71.2, 73.5: all within the 0.1 that the rounding of inputs and output allows
    (BERT-Tiny's unrounded figures need only average 0.006 higher to round up). The alternatives
    miss by more: MNLI-m and MNLI-mm as two tasks +0.55..+0.84, AX added -2.8..-4.4, WNLI
    dropped +0.17..+1.9.
    """
    missing = [c for c in GLUE_SCORE_COLUMNS if c not in results]
    if missing:
        raise MinibertsError(f"the GLUE score needs results for {', '.join(missing)}; "
                             f"got {', '.join(results) or 'nothing'}")
    mnli = (task_score("MNLI", results["MNLI-m"]) + task_score("MNLI", results["MNLI-mm"])) / 2
    per_task = [mnli if name == "MNLI" else task_score(name, results[name]) for name in GLUE_SCORED_TASKS]
    score = sum(per_task) / len(per_task)
    if not math.isfinite(score):
        raise MinibertsError("the GLUE score is not finite: a task's figures contain nan")
    return score
