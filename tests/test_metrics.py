"""Metrics against independent numpy formulas, and the GLUE score against the model card's table."""

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import rankdata

from miniberts import metrics
from miniberts.data.tasks import get_task
from miniberts.errors import MinibertsError

FIXTURES = Path(__file__).parent / "fixtures"
SEED_CARD = Path(__file__).parents[2] / "shared/seed/bert-miniatures-model-card.txt"


# --- the model card's GLUE table ---------------------------------------------------------------

def table_lines(text: str) -> list[str]:
    lines = [ln.strip() for ln in text.splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|Model|Score|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def parse_card(text: str) -> dict[str, tuple[float, dict[str, dict[str, float]]]]:
    """Model -> (card Score, {leaderboard column: {figure name: value}}). "81.1/71.1" is split onto the
    task's figures in leaderboard order (MRPC/QQP F1/acc, STS-B Pearson/Spearman)."""
    lines = table_lines(text)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:  # skip the |---| alignment row
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        results = {}
        for column in header[2:]:
            name = column.replace("(v2)", "")  # "QNLI(v2)": QNLI as rebuilt in 2019, same task
            task = get_task("MNLI" if name.startswith("MNLI") else name)
            values = [float(v) for v in cells[column].split("/")]
            assert len(values) == len(task.metrics), (column, cells[column])
            results[name] = dict(zip(task.metrics, values))
        rows[cells["Model"]] = (float(cells["Score"]), results)
    return rows


CARD = parse_card((FIXTURES / "model_card_glue.md").read_text())

# The card's figures are rounded to 0.1, so a score computed from them lies within 0.05 of the score
# of the unrounded figures, which itself rounds to the card's Score (within 0.05 of it). A definition
# is consistent with a row iff |computed - card| < 0.1.
CONSISTENT = 0.1


def test_card_parsed_completely():
    assert list(CARD) == ["BERT-Tiny", "BERT-Mini", "BERT-Small", "BERT-Medium"]
    assert [score for score, _ in CARD.values()] == [64.2, 65.8, 71.2, 73.5]
    assert CARD["BERT-Small"][1]["MRPC"] == {"f1": 83.4, "accuracy": 76.2}


@pytest.mark.skipif(not SEED_CARD.is_file(), reason=f"seed model card not present at {SEED_CARD}")
def test_card_fixture_matches_seed():
    fixture = table_lines((FIXTURES / "model_card_glue.md").read_text())
    assert fixture == table_lines(SEED_CARD.read_text())


@pytest.mark.parametrize("model", list(CARD))
def test_glue_score_reproduces_model_card(model):
    card_score, results = CARD[model]
    assert abs(metrics.glue_score(results) - card_score) < CONSISTENT


def _alternative(results, mnli_as_two: bool, with_ax: bool, with_wnli: bool) -> float:
    per_task = []
    for column, figures in results.items():
        name = "MNLI" if column.startswith("MNLI") else column
        if (name == "AX" and not with_ax) or (name == "WNLI" and not with_wnli):
            continue
        per_task.append((column if mnli_as_two else name, np.mean(list(figures.values()))))
    by_task = {}
    for key, value in per_task:
        by_task.setdefault(key, []).append(value)
    return float(np.mean([np.mean(v) for v in by_task.values()]))


@pytest.mark.parametrize("mnli_as_two,with_ax,with_wnli", [
    (True, False, True), (False, True, True), (True, True, True), (False, False, False), (True, False, False),
])
def test_other_score_definitions_contradict_the_card(mnli_as_two, with_ax, with_wnli):
    # The test above can tell definitions apart: every rejected candidate misses some row.
    misses = [m for m, (score, res) in CARD.items()
              if abs(_alternative(res, mnli_as_two, with_ax, with_wnli) - score) >= CONSISTENT]
    assert misses
    # ...and the helper agrees with glue_score on the chosen definition.
    for score, res in CARD.values():
        assert _alternative(res, False, False, True) == pytest.approx(metrics.glue_score(res), abs=1e-9)


def test_glue_score_ignores_ax_and_needs_every_task():
    _, results = CARD["BERT-Tiny"]
    without_ax = {k: v for k, v in results.items() if k != "AX"}
    assert metrics.glue_score(without_ax) == metrics.glue_score(results)
    del without_ax["MNLI-mm"]
    with pytest.raises(MinibertsError, match="needs results for MNLI-mm"):
        metrics.glue_score(without_ax)


def test_glue_score_of_a_made_up_row_by_hand():
    results = {c: {"accuracy": 50.0} for c in metrics.GLUE_SCORE_COLUMNS}
    results["CoLA"] = {"mcc": 20.0}
    results["MRPC"] = {"f1": 90.0, "accuracy": 80.0}      # task score 85
    results["STS-B"] = {"pearson": 70.0, "spearman": 60.0}  # 65
    results["QQP"] = {"f1": 60.0, "accuracy": 80.0}       # 70
    results["MNLI-m"], results["MNLI-mm"] = {"accuracy": 80.0}, {"accuracy": 70.0}  # one task, 75
    expected = (20 + 50 + 85 + 65 + 70 + 75 + 50 + 50 + 50) / 9
    assert metrics.glue_score(results) == pytest.approx(expected)


# --- metric functions against formulas ----------------------------------------------------------

@pytest.fixture
def binary():
    # An imbalanced paraphrase-like dev set (68% positive, like MRPC) and a decent classifier.
    rng = np.random.default_rng(0)
    labels = (rng.random(408) < 0.68).astype(int)
    flip = rng.random(408) < 0.2
    preds = np.where(flip, 1 - labels, labels)
    return preds, labels


def _confusion(preds, labels):
    tp = int(np.sum((preds == 1) & (labels == 1)))
    tn = int(np.sum((preds == 0) & (labels == 0)))
    fp = int(np.sum((preds == 1) & (labels == 0)))
    fn = int(np.sum((preds == 0) & (labels == 1)))
    return tp, tn, fp, fn


def test_accuracy_f1_mcc_match_formulas(binary):
    preds, labels = binary
    tp, tn, fp, fn = _confusion(preds, labels)
    assert metrics.accuracy(preds, labels) == pytest.approx((tp + tn) / len(labels))
    assert metrics.f1(preds, labels, positive=1) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    # F1 of the other class is a different number: the positive class matters.
    assert metrics.f1(preds, labels, positive=0) == pytest.approx(2 * tn / (2 * tn + fn + fp))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert metrics.matthews_corrcoef(preds, labels) == pytest.approx(mcc)


def test_mcc_of_a_constant_prediction_is_zero(binary):
    # CoLA's 0.0 for BERT-Tiny/Mini in the card: a model that always says "acceptable".
    _, labels = binary
    assert metrics.matthews_corrcoef(np.ones_like(labels), labels) == 0.0


def test_multiclass_mcc_is_gorodkins_r3():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 300)
    preds = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 3, 300))
    c = np.zeros((3, 3))
    np.add.at(c, (labels, preds), 1)
    s, correct = c.sum(), np.trace(c)
    t, p = c.sum(axis=1), c.sum(axis=0)
    r3 = (correct * s - t @ p) / math.sqrt((s**2 - p @ p) * (s**2 - t @ t))
    assert metrics.matthews_corrcoef(preds, labels) == pytest.approx(r3)


def test_correlations_match_formulas():
    rng = np.random.default_rng(2)
    gold = rng.uniform(0, 5, 200)
    pred = np.clip(gold + rng.normal(0, 1.0, 200), 0, 5)
    assert metrics.pearson(pred, gold) == pytest.approx(np.corrcoef(pred, gold)[0, 1])
    assert metrics.spearman(pred, gold) == pytest.approx(np.corrcoef(rankdata(pred), rankdata(gold))[0, 1])


def test_correlation_of_a_constant_prediction_is_nan():
    assert math.isnan(metrics.pearson([2.5] * 10, np.linspace(0, 5, 10)))


# --- task_metrics ----------------------------------------------------------------------------

def test_task_metrics_percent_and_score(binary):
    preds, labels = binary
    tp, tn, fp, fn = _confusion(preds, labels)
    out = metrics.task_metrics("MRPC", [str(p) for p in preds], [str(y) for y in labels])
    assert list(out) == ["f1", "accuracy", "score"]
    assert out["f1"] == pytest.approx(100 * 2 * tp / (2 * tp + fp + fn))
    assert out["accuracy"] == pytest.approx(100 * (tp + tn) / len(labels))
    assert out["score"] == pytest.approx((out["f1"] + out["accuracy"]) / 2)
    # Label ids (argmax outputs) are the same as label names.
    assert metrics.task_metrics("MRPC", list(preds), list(labels)) == out


def test_task_metrics_for_nli_regression_and_cola():
    names = ["contradiction", "entailment", "neutral", "entailment"]
    assert metrics.task_metrics("MNLI", names, [1, 1, 2, 1]) == {"accuracy": 75.0, "score": 75.0}
    out = metrics.task_metrics("STS-B", [0.5, 2.0, 3.1, 4.9], [1.0, 2.2, 2.9, 5.0])
    assert set(out) == {"pearson", "spearman", "score"} and out["spearman"] == pytest.approx(100.0)
    assert metrics.task_metrics("CoLA", ["1"] * 4, ["0", "1", "1", "0"])["mcc"] == 0.0


def test_task_metrics_rejects_length_mismatch_and_unknown_labels():
    with pytest.raises(ValueError, match="as many predictions as labels"):
        metrics.task_metrics("SST-2", ["1"], ["1", "0"])
    with pytest.raises(ValueError, match=r"SST-2: unknown label\(s\) '1.0'"):
        metrics.task_metrics("SST-2", [1.0, 0], ["1", "0"])


def test_task_score_names_missing_figure():
    with pytest.raises(MinibertsError, match="STS-B: results lack spearman"):
        metrics.task_score("STS-B", {"pearson": 80.0})
