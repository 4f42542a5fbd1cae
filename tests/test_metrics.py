"""Tests for keras_adapters.tasks.glue.metrics against independently computed references."""

import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as sk_metrics

from keras_adapters.tasks.glue import metrics


def random_binary(seed, n=300):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    # Predictions agree with the labels 75% of the time.
    predictions = np.where(rng.random(n) < 0.75, labels, 1 - labels)
    return labels, predictions


def confusion(labels, predictions):
    tp = np.sum((labels == 1) & (predictions == 1))
    tn = np.sum((labels == 0) & (predictions == 0))
    fp = np.sum((labels == 0) & (predictions == 1))
    fn = np.sum((labels == 1) & (predictions == 0))
    return float(tp), float(tn), float(fp), float(fn)


def average_ranks(values):
    """1-based ranks; tied values share the mean of their positions."""
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def test_matthews_matches_confusion_matrix_formula():
    labels, predictions = random_binary(0)
    tp, tn, fp, fn = confusion(labels, predictions)
    expected = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    result = metrics.compute_metrics("cola", labels, predictions)
    assert list(result) == ["matthews_corrcoef"]
    assert result["matthews_corrcoef"] == pytest.approx(expected, abs=1e-12)
    assert 0.3 < expected < 0.7  # a non-trivial case
    reference = sk_metrics.matthews_corrcoef(labels, predictions)
    assert result["matthews_corrcoef"] == pytest.approx(reference)


def test_matthews_of_constant_predictions_is_zero():
    result = metrics.compute_metrics("cola", np.array([0, 1, 1, 0]), np.array([1, 1, 1, 1]))
    assert result == {"matthews_corrcoef": 0.0}


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_f1_and_accuracy_match_hand_counts(task):
    labels, predictions = random_binary(1)
    tp, tn, fp, fn = confusion(labels, predictions)
    result = metrics.compute_metrics(task, labels, predictions)
    assert list(result) == ["f1", "accuracy"]
    assert result["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    assert result["accuracy"] == pytest.approx((tp + tn) / len(labels), abs=1e-12)


def test_f1_positive_class_is_one():
    labels = np.array([1, 1, 0, 0, 0])
    predictions = np.array([1, 0, 1, 0, 0])
    # TP=1, FP=1, FN=1 for class 1 -> 0.5; for class 0 it would be 2/3.
    assert metrics.compute_metrics("mrpc", labels, predictions)["f1"] == pytest.approx(0.5)
    assert metrics.compute_metrics("mrpc", labels, np.zeros(5, int))["f1"] == 0.0


@pytest.mark.parametrize("task", ["sst2", "mnli", "qnli", "rte", "wnli"])
def test_accuracy_tasks(task):
    rng = np.random.default_rng(2)
    num_classes = 3 if task == "mnli" else 2
    labels = rng.integers(0, num_classes, 500)
    predictions = rng.integers(0, num_classes, 500)
    result = metrics.compute_metrics(task, labels, predictions)
    assert result == {"accuracy": pytest.approx(np.mean(labels == predictions), abs=1e-12)}


def test_stsb_pearson_and_spearman_match_numpy():
    rng = np.random.default_rng(3)
    labels = np.round(rng.uniform(0, 5, 400), 1)  # rounding creates ties
    predictions = labels + rng.normal(0, 1.0, 400)
    result = metrics.compute_metrics("stsb", labels, predictions)
    assert list(result) == ["pearson", "spearman"]
    assert result["pearson"] == pytest.approx(np.corrcoef(labels, predictions)[0, 1], abs=1e-10)
    expected_spearman = np.corrcoef(average_ranks(labels), average_ranks(predictions))[0, 1]
    assert result["spearman"] == pytest.approx(expected_spearman, abs=1e-10)
    assert result["pearson"] != pytest.approx(result["spearman"], abs=1e-4)
    assert result["pearson"] == pytest.approx(scipy.stats.pearsonr(labels, predictions)[0])
    assert result["spearman"] == pytest.approx(scipy.stats.spearmanr(labels, predictions)[0])


def test_spearman_averages_tied_ranks():
    # Ranks [1, 2.5, 2.5, 4] vs [1, 2, 3, 4]: covariance 4.5 / sqrt(4.5 * 5).
    result = metrics.compute_metrics("stsb", [1.0, 2.0, 2.0, 3.0], [0.1, 0.2, 0.3, 0.4])
    assert result["spearman"] == pytest.approx(4.5 / np.sqrt(4.5 * 5.0), abs=1e-12)
    assert result["spearman"] < 1.0


def test_stsb_constant_predictions_give_nan():
    with pytest.warns(scipy.stats.ConstantInputWarning):
        result = metrics.compute_metrics("stsb", [1.0, 2.0, 3.0], [2.5, 2.5, 2.5])
    assert np.isnan(result["pearson"]) and np.isnan(result["spearman"])


def test_values_are_python_floats():
    labels, predictions = random_binary(4, n=20)
    for task in ("cola", "mrpc", "rte"):
        result = metrics.compute_metrics(task, labels, predictions)
        assert all(type(v) is float for v in result.values())
    result = metrics.compute_metrics("stsb", np.float32([1, 2, 3]), np.float32([1, 3, 2]))
    assert all(type(v) is float for v in result.values())


@pytest.mark.parametrize("labels, predictions, pattern", [
    ([0, 1, 1], [0, 1], "differ in length: 3 != 2"),
    ([], [], "empty"),
    ([0, 1], [[0.2, 0.8], [0.9, 0.1]], r"predictions must have shape \(n,\), got \(2, 2\)"),
    ([0, 1], [0.0, 1.0], "must be integer class indices"),
    ([0, 1], [0, 2], r"predictions for rte must be in \[0, 2\), got 0..2"),
    ([-1, 1], [0, 1], r"labels for rte must be in \[0, 2\)"),
])
def test_invalid_inputs_raise(labels, predictions, pattern):
    with pytest.raises(ValueError, match=pattern):
        metrics.compute_metrics("rte", np.asarray(labels, dtype=int), predictions)


def test_unknown_task_raises():
    with pytest.raises(ValueError, match="Unknown GLUE task"):
        metrics.compute_metrics("squad", [0], [0])
    with pytest.raises(ValueError, match="Unknown GLUE task"):
        metrics.primary_metric("squad")


def test_primary_metric():
    expected = {"cola": "matthews_corrcoef", "mrpc": "f1", "qqp": "f1", "stsb": "pearson",
                "sst2": "accuracy", "mnli": "accuracy", "qnli": "accuracy", "rte": "accuracy",
                "wnli": "accuracy"}
    assert {task: metrics.primary_metric(task) for task in expected} == expected


def test_predictions_from_classification_outputs():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.1, -3.0], [-1.0, -2.0, 4.0]])
    predictions = metrics.predictions_from_outputs("mnli", logits)
    assert predictions.tolist() == [0, 1, 2] and np.issubdtype(predictions.dtype, np.integer)
    probabilities = np.array([[0.3, 0.7], [0.6, 0.4]], np.float32)
    assert metrics.predictions_from_outputs("mrpc", probabilities).tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"shape \(batch, 2\), got \(2, 3\)"):
        metrics.predictions_from_outputs("rte", logits[:2])
    with pytest.raises(ValueError, match=r"got \(3,\)"):
        metrics.predictions_from_outputs("rte", [0.1, 0.2, 0.3])


def test_predictions_from_regression_outputs():
    scores = metrics.predictions_from_outputs("stsb", np.array([[1.5], [4.0]]))
    assert scores.shape == (2,) and scores.dtype == np.float32 and scores.tolist() == [1.5, 4.0]
    assert metrics.predictions_from_outputs("stsb", [0.5, 2.0]).tolist() == [0.5, 2.0]
    with pytest.raises(ValueError, match=r"got \(2, 2\)"):
        metrics.predictions_from_outputs("stsb", np.ones((2, 2)))


def test_outputs_to_metrics_end_to_end():
    labels = np.array([0, 1, 1, 0])
    logits = np.array([[3.0, 1.0], [0.0, 2.0], [1.0, 0.0], [0.5, 0.4]])
    predictions = metrics.predictions_from_outputs("rte", logits)
    assert metrics.compute_metrics("rte", labels, predictions) == {"accuracy": 0.75}
