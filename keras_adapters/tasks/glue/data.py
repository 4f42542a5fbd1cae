"""GLUE task specifications and example readers.

The General Language Understanding Evaluation benchmark (Wang et al., 2019,
"GLUE: A Multi-Task Benchmark and Analysis Platform for Natural Language
Understanding", ICLR; Table 1) has nine tasks. Each is described once, in the
`TASKS` table, and read by shared code either from the original GLUE
distribution (`<data_dir>/<Folder>/<split>.tsv`) or through TensorFlow
Datasets (`glue/<name>`).
"""

import csv
import dataclasses
import math
import os

import numpy as np


class GlueFormatError(ValueError):
    """A GLUE data file does not have the expected format."""


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """Static description of one GLUE task.

    Attributes:
        name: Task name as used in the literature and by TFDS (`"sst2"`).
        folder: Folder of the task in the GLUE distribution (`"SST-2"`).
        label_names: Labels as written in the TSV files, in class-index
            order. Empty for the regression task STS-B.
        metric_names: Official metrics (GLUE paper, Table 1); the first is
            the one used for model selection.
        text_a_column: Header name of the first text column.
        text_b_column: Header name of the second text column, or `None` for
            single-sentence tasks.
        label_column: Header name of the label (or score) column.
        tfds_text_features: TFDS feature names of text a (and text b).
        dev_splits: Names of the labelled evaluation splits.
        test_splits: Names of the unlabelled test splits.
        headerless_columns: Column names of labelled files that have no
            header row (CoLA train/dev: label is column 1, sentence column 3).
        tfds_label_names: `label_names` in TFDS class-index order, when it
            differs from the TSV order (MNLI).
    """

    name: str
    folder: str
    label_names: tuple[str, ...]
    metric_names: tuple[str, ...]
    text_a_column: str
    text_b_column: str | None
    label_column: str
    tfds_text_features: tuple[str, ...]
    dev_splits: tuple[str, ...] = ("dev",)
    test_splits: tuple[str, ...] = ("test",)
    headerless_columns: tuple[str, ...] | None = None
    tfds_label_names: tuple[str, ...] | None = None

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_classes(self) -> int:
        """Number of model outputs: the class count, or 1 for regression."""
        return len(self.label_names) or 1

    @property
    def is_pair(self) -> bool:
        return self.text_b_column is not None

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train",) + self.dev_splits + self.test_splits


@dataclasses.dataclass(frozen=True, eq=False)
class GlueExamples:
    """The examples of one split.

    Attributes:
        text_a: First sentences, one `str` per example.
        text_b: Second sentences, or `None` for single-sentence tasks.
        labels: Array of shape `(num_examples,)`: int32 class indices into
            `GlueTask.label_names`, float32 scores for STS-B, or `None` for
            unlabelled test splits.
    """

    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.text_a)

    def head(self, n: int) -> "GlueExamples":
        """The first `n` examples (all of them if there are fewer)."""
        return GlueExamples(
            self.text_a[:n],
            None if self.text_b is None else self.text_b[:n],
            None if self.labels is None else self.labels[:n],
        )


_BINARY = ("0", "1")
_NLI = ("entailment", "not_entailment")
_PAIR = ("sentence1", "sentence2")

TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask("cola", "CoLA", _BINARY, ("matthews_corrcoef",),
                 "sentence", None, "label", ("sentence",),
                 headerless_columns=("source", "label", "original_label", "sentence")),
        GlueTask("sst2", "SST-2", _BINARY, ("accuracy",),
                 "sentence", None, "label", ("sentence",)),
        GlueTask("mrpc", "MRPC", _BINARY, ("f1", "accuracy"),
                 "#1 String", "#2 String", "Quality", _PAIR),
        GlueTask("stsb", "STS-B", (), ("pearson", "spearman"),
                 "sentence1", "sentence2", "score", _PAIR),
        GlueTask("qqp", "QQP", _BINARY, ("f1", "accuracy"),
                 "question1", "question2", "is_duplicate", ("question1", "question2")),
        GlueTask("mnli", "MNLI", ("contradiction", "entailment", "neutral"), ("accuracy",),
                 "sentence1", "sentence2", "gold_label", ("premise", "hypothesis"),
                 dev_splits=("dev_matched", "dev_mismatched"),
                 test_splits=("test_matched", "test_mismatched"),
                 tfds_label_names=("entailment", "neutral", "contradiction")),
        GlueTask("qnli", "QNLI", _NLI, ("accuracy",),
                 "question", "sentence", "label", ("question", "sentence")),
        GlueTask("rte", "RTE", _NLI, ("accuracy",), "sentence1", "sentence2", "label", _PAIR),
        GlueTask("wnli", "WNLI", _BINARY, ("accuracy",), "sentence1", "sentence2", "label", _PAIR),
    )
}


def get_task(task: str | GlueTask) -> GlueTask:
    """Returns the `GlueTask` for a name (case-insensitive); passes specs through.

    Raises:
        ValueError: if the name is not one of the nine GLUE tasks.
    """
    if isinstance(task, GlueTask):
        return task
    try:
        return TASKS[task.lower()]
    except KeyError:
        raise ValueError(f"Unknown GLUE task {task!r}; valid names: {', '.join(TASKS)}") from None


def _check_split(task: GlueTask, split: str) -> None:
    if split not in task.splits:
        raise ValueError(f"Unknown split {split!r} for GLUE task {task.name!r}; "
                         f"valid splits: {', '.join(task.splits)}")


def _parse_label(task: GlueTask, value: str, where: str) -> int | float:
    if task.is_regression:
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise GlueFormatError(f"{where}: field {task.label_column!r} must be a finite "
                                  f"number, got {value!r}")
        return score
    if value not in task.label_names:
        raise GlueFormatError(f"{where}: field {task.label_column!r} has unknown label "
                              f"{value!r}; expected one of {task.label_names}")
    return task.label_names.index(value)


def _labels_array(task: GlueTask, labels: list) -> np.ndarray:
    return np.asarray(labels, np.float32 if task.is_regression else np.int32)


def read_tsv_split(data_dir: str | os.PathLike, task: str | GlueTask,
                   split: str) -> GlueExamples:
    """Reads one split of a task from the original GLUE TSV distribution.

    The file is `<data_dir>/<task.folder>/<split>.tsv`, read as UTF-8 (a
    leading byte-order mark is dropped) with tab delimiters and no quoting.
    Columns are found by header name, except in the header-less CoLA
    train/dev files (`GlueTask.headerless_columns`). Every row must have
    exactly as many fields as the header.

    Args:
        data_dir: Folder holding the task folders (`CoLA/`, `SST-2/`, ...).
        task: Task name (see `TASKS`) or `GlueTask`.
        split: One of `GlueTask.splits`, e.g. `"train"`, `"dev"`,
            `"dev_matched"` (MNLI) or `"test"` (returned without labels).

    Returns:
        A `GlueExamples`, in file order.

    Raises:
        ValueError: for an unknown task or split.
        FileNotFoundError: if the file does not exist (message names it).
        GlueFormatError: for an empty file, a missing header column, a row
            with the wrong number of fields, an unknown label or a
            non-numeric score; the message names `file:line` and the field.
    """
    task = get_task(task)
    _check_split(task, split)
    path = os.path.join(os.fspath(data_dir), task.folder, f"{split}.tsv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GLUE {task.name} {split} file not found: {path}")
    labelled = split not in task.test_splits
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            return _read_rows(task, path, reader, labelled)
        except (UnicodeDecodeError, csv.Error) as e:
            raise GlueFormatError(f"{path}:{reader.line_num + 1}: unreadable line: {e}") from e


def _read_rows(task: GlueTask, path: str, reader, labelled: bool) -> GlueExamples:
    """The examples of an open GLUE TSV `reader` (see `read_tsv_split`)."""
    header = (task.headerless_columns if labelled and task.headerless_columns
              else next(reader, None))
    if header is None:
        raise GlueFormatError(f"{path}:1: empty file, expected a header row")
    wanted = [task.text_a_column, task.text_b_column, task.label_column if labelled else None]
    for name in filter(None, wanted):
        if name not in header:
            raise GlueFormatError(f"{path}:1: header has no column {name!r}; found {header}")
    a, b, y = (header.index(name) if name else None for name in wanted)
    text_a, text_b, labels = [], [], []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if len(row) != len(header):
            raise GlueFormatError(f"{where}: expected {len(header)} tab-separated fields "
                                  f"{tuple(header)}, found {len(row)}")
        text_a.append(row[a])
        if b is not None:
            text_b.append(row[b])
        if y is not None:
            labels.append(_parse_label(task, row[y], where))
    if not text_a:
        problem = "empty file" if reader.line_num == 0 else "no examples after the header"
        raise GlueFormatError(f"{path}:{reader.line_num + 1}: {problem}")
    return GlueExamples(text_a, text_b if task.is_pair else None,
                        _labels_array(task, labels) if labelled else None)


def load_tfds_split(task: str | GlueTask, split: str,
                    data_dir: str | os.PathLike | None = None) -> GlueExamples:
    """Reads one split of a task through TensorFlow Datasets (`glue/<name>`).

    Our split names map to TFDS ones (`"dev"` -> `"validation"`,
    `"dev_matched"` -> `"validation_matched"`, ...). Text is decoded to
    `str`, and class indices are remapped to `GlueTask.label_names` order
    (for MNLI TFDS uses entailment/neutral/contradiction, the TSV files sort
    alphabetically), so both sources give identical labels.

    Args:
        task: Task name (see `TASKS`) or `GlueTask`.
        split: One of `GlueTask.splits`; test splits are returned without labels.
        data_dir: TFDS data folder; `None` uses the TFDS default.

    Returns:
        A `GlueExamples`, in TFDS order.

    Raises:
        ValueError: for an unknown task or split.
        GlueFormatError: if a labelled split holds an out-of-range class index.
    """
    import tensorflow_datasets as tfds  # Heavy (imports TensorFlow): only on this path.

    task = get_task(task)
    _check_split(task, split)
    tfds_split = "validation" + split[len("dev"):] if split.startswith("dev") else split
    dataset = tfds.load(f"glue/{task.name}", split=tfds_split, data_dir=data_dir)
    columns = {key: [] for key in task.tfds_text_features + ("label",)}
    for batch in tfds.as_numpy(dataset.batch(4096)):
        for key, values in columns.items():
            values.extend(batch[key])
    texts = [[s.decode("utf-8") for s in columns[key]] for key in task.tfds_text_features]
    labels = None
    if split not in task.test_splits:
        labels = _labels_array(task, columns["label"])
        if not task.is_regression:
            order = task.tfds_label_names or task.label_names
            if labels.size and not 0 <= labels.min() <= labels.max() < len(order):
                raise GlueFormatError(f"TFDS glue/{task.name} {tfds_split}: label outside "
                                      f"[0, {len(order)}): {labels.min()}..{labels.max()}")
            remap = np.array([task.label_names.index(name) for name in order], np.int32)
            labels = remap[labels]
    return GlueExamples(texts[0], texts[1] if task.is_pair else None, labels)


def load_examples(task: str | GlueTask, split: str, data_dir: str | os.PathLike | None,
                  source: str = "tsv") -> GlueExamples:
    """Loads one split of a GLUE task from TSV files or TFDS.

    Args:
        task: Task name (see `TASKS`) or `GlueTask`.
        split: One of `GlueTask.splits` (`"train"`, `"dev"`, ...).
        data_dir: For `"tsv"`, the GLUE folder (required); for `"tfds"`, the
            TFDS data folder or `None` for the TFDS default.
        source: `"tsv"` (`read_tsv_split`) or `"tfds"` (`load_tfds_split`).

    Returns:
        A `GlueExamples`.

    Raises:
        ValueError: for an unknown source, task or split, or a missing TSV
            `data_dir`; otherwise what the chosen reader raises.
    """
    if source == "tfds":
        return load_tfds_split(task, split, data_dir)
    if source != "tsv":
        raise ValueError(f"Unknown source {source!r}; expected 'tsv' or 'tfds'")
    if data_dir is None:
        raise ValueError("data_dir is required when source='tsv'")
    return read_tsv_split(data_dir, task, split)
