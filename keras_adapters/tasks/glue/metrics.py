"""Official GLUE evaluation metrics.

The metric of each task follows the GLUE paper (Wang et al., 2019, Table 1
and Section 3): Matthews correlation for CoLA, F1 and accuracy for MRPC and
QQP, Pearson and Spearman correlation for STS-B, accuracy otherwise. The
metrics themselves are computed by scikit-learn and SciPy.
"""

import numpy as np
import scipy.stats
from sklearn import metrics as sk_metrics

from keras_adapters.tasks.glue.data import GlueTask, get_task

# F1 is binary with the positive class 1 (paraphrase / duplicate); it is 0.0,
# without a warning, when there is no positive label or prediction.
_METRICS = {
    "accuracy": sk_metrics.accuracy_score,
    "f1": lambda y, p: sk_metrics.f1_score(y, p, pos_label=1, zero_division=0.0),
    "matthews_corrcoef": sk_metrics.matthews_corrcoef,
    "pearson": lambda y, p: scipy.stats.pearsonr(y, p).statistic,
    "spearman": lambda y, p: scipy.stats.spearmanr(y, p).statistic,
}


def primary_metric(task_name: str | GlueTask) -> str:
    """Returns the name of the metric used to select the best model.

    `"matthews_corrcoef"` for CoLA, `"f1"` for MRPC and QQP, `"pearson"` for
    STS-B and `"accuracy"` for the other tasks.

    Raises:
        ValueError: for an unknown task name.
    """
    return get_task(task_name).metric_names[0]


def predictions_from_outputs(task: str | GlueTask, outputs) -> np.ndarray:
    """Turns model outputs into the predictions `compute_metrics` expects.

    Args:
        task: Task name or `GlueTask`.
        outputs: Array-like (NumPy array or eager tensor). For classification,
            logits or probabilities of shape `(batch, num_classes)`; for
            STS-B, scores of shape `(batch,)` or `(batch, 1)`.

    Returns:
        Shape `(batch,)`: int64 class indices (argmax over the last axis) for
        classification, float32 scores for regression.

    Raises:
        ValueError: for an unknown task or outputs of the wrong shape.
    """
    task = get_task(task)
    outputs = np.asarray(outputs)
    if task.is_regression:
        if outputs.ndim == 2 and outputs.shape[1] == 1:
            outputs = outputs[:, 0]
        if outputs.ndim != 1:
            raise ValueError(f"{task.name} outputs must have shape (batch,) or (batch, 1), "
                             f"got {outputs.shape}")
        return outputs.astype(np.float32)
    if outputs.ndim != 2 or outputs.shape[1] != task.num_classes:
        raise ValueError(f"{task.name} outputs must have shape (batch, {task.num_classes}), "
                         f"got {outputs.shape}")
    return np.argmax(outputs, axis=-1)


def _as_vector(values, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{what} must have shape (n,), got {values.shape}; "
                         "use predictions_from_outputs() for model outputs")
    return values


def compute_metrics(task_name: str | GlueTask, labels, predictions) -> dict[str, float]:
    """Computes the official GLUE metrics of a task.

    Args:
        task_name: Task name (see `keras_adapters.tasks.glue.data.TASKS`) or `GlueTask`.
        labels: Shape `(n,)`. Integer class indices, or float scores for
            STS-B.
        predictions: Shape `(n,)`, same kind as `labels` (see
            `predictions_from_outputs`).

    Returns:
        `{metric_name: value}` as Python floats, for the names in
        `GlueTask.metric_names`: `matthews_corrcoef` (CoLA), `f1` and
        `accuracy` (MRPC, QQP), `pearson` and `spearman` (STS-B), `accuracy`
        (others). F1 is binary with positive class 1. Correlations of a
        constant input are NaN (SciPy); Matthews correlation is then 0.0.

    Raises:
        ValueError: for an unknown task, inputs that are empty, not 1-D, of
            different lengths, or (classification) not integer class indices
            in `[0, num_classes)`.
    """
    task = get_task(task_name)
    labels, predictions = _as_vector(labels, "labels"), _as_vector(predictions, "predictions")
    if len(labels) != len(predictions):
        raise ValueError(f"labels and predictions differ in length: "
                         f"{len(labels)} != {len(predictions)}")
    if not len(labels):
        raise ValueError("labels and predictions are empty")
    for what, values in (("labels", labels), ("predictions", predictions)):
        if task.is_regression:
            continue
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{what} for {task.name} must be integer class indices, "
                             f"got dtype {values.dtype}")
        if values.min() < 0 or values.max() >= task.num_classes:
            raise ValueError(f"{what} for {task.name} must be in [0, {task.num_classes}), "
                             f"got {values.min()}..{values.max()}")
    return {name: float(_METRICS[name](labels, predictions)) for name in task.metric_names}
