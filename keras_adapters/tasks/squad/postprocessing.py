"""SQuAD v1.1 answer extraction from span logits, and official scoring.

`predict_answers` follows `write_predictions` of google-research/bert
`run_squad.py` (Devlin et al., 2019): the top `n_best_size` start and end
indices of every window are paired, invalid spans are dropped, the candidates
of all windows of a question are ranked by `start_logit + end_logit`, answer
texts are de-duplicated and a softmax over the kept n-best gives
probabilities. Answer texts are cut from the original context with the
tokens' character offsets, so no detokenisation is needed.

`score_predictions` computes the official exact match and token F1 with
`official.nlp.tools.squad_evaluate_v1_1` (a copy of the official
`evaluate-v1.1.py`), reported in percent like the official script.
"""

import json
import os

import numpy as np
from official.nlp.tools import squad_evaluate_v1_1

from keras_adapters.utils.atomic import write_json

PREDICTIONS_FILE = "predictions.json"
NBEST_FILE = "nbest_predictions.json"
_EMPTY_NBEST = ({"text": "", "probability": 1.0, "start_logit": 0.0, "end_logit": 0.0},)


def _top_indices(logits: np.ndarray, n_best_size: int) -> np.ndarray:
    """Indices of the `n_best_size` largest logits per row, best first.

    Ties keep the lower index first, as Python's stable `sorted` in BERT.
    """
    return np.argsort(-logits, axis=1, kind="stable")[:, :n_best_size]


def _candidate_spans(features, start_logits, end_logits, n_best_size, max_answer_length):
    """All valid answer spans of all windows.

    Returns:
        int arrays `feature, char_start, char_end` and float64 `start_logit,
        end_logit`, all of shape `(num_candidates,)`, in BERT's enumeration
        order (feature, then start rank, then end rank).

    Raises:
        ValueError: if the logits do not have shape `(F, max_seq_length)`.
    """
    offsets = np.stack([f.token_offsets for f in features])  # (F, L, 2)
    if start_logits.shape != offsets.shape[:2] or end_logits.shape != offsets.shape[:2]:
        raise ValueError(f"start and end logits must have shape {offsets.shape[:2]}, got "
                         f"{start_logits.shape} and {end_logits.shape}")
    max_context = np.stack([f.token_is_max_context for f in features]).astype(bool)
    starts = _top_indices(start_logits, n_best_size)[:, :, None]  # (F, n, 1)
    ends = _top_indices(end_logits, n_best_size)[:, None, :]  # (F, 1, n)
    rows = np.arange(len(features))[:, None, None]
    is_context = offsets[:, :, 0] >= 0
    valid = (is_context[rows, starts] & is_context[rows, ends]
             & max_context[rows, starts]
             & (ends >= starts) & (ends - starts + 1 <= max_answer_length))
    feature, i, j = np.nonzero(valid)
    start, end = starts[feature, i, 0], ends[feature, 0, j]
    return (feature, offsets[feature, start, 0], offsets[feature, end, 1],
            start_logits[feature, start].astype(np.float64),
            end_logits[feature, end].astype(np.float64))


def _ranked_spans_by_example(examples, features, start_logits, end_logits, n_best_size,
                             max_answer_length):
    """Valid spans grouped by example, each group best first.

    Returns:
        Dict `example_index -> iterator of (char_start, char_end,
        start_logit, end_logit)` in descending order of the summed logits;
        equal scores keep BERT's enumeration order (a stable sort).
    """
    example_of_feature = np.array([f.example_index for f in features], dtype=np.int64)
    if example_of_feature.min() < 0 or example_of_feature.max() >= len(examples):
        raise ValueError(f"feature example_index must be in [0, {len(examples)})")
    feature, char_start, char_end, start_logit, end_logit = _candidate_spans(
        features, start_logits, end_logits, n_best_size, max_answer_length)
    columns = (char_start, char_end, start_logit, end_logit)
    example = example_of_feature[feature]
    order = np.lexsort((-(start_logit + end_logit), example))
    groups = np.split(order, np.flatnonzero(np.diff(example[order])) + 1)
    return {int(example[group[0]]): zip(*(column[group] for column in columns))
            for group in groups if len(group)}


def _nbest_of_example(context, spans, n_best_size):
    """The n-best list of one example from its spans, ranked best first.

    Args:
        context: The example's context string.
        spans: Iterable of `(char_start, char_end, start_logit, end_logit)`
            in descending order of `start_logit + end_logit`.
        n_best_size: Maximum number of distinct answer texts to keep.
    """
    nbest, seen = [], set()
    for char_start, char_end, start_logit, end_logit in spans:
        if len(nbest) == n_best_size:
            break
        text = context[char_start:char_end]
        if text not in seen:
            seen.add(text)
            nbest.append({"text": text, "start_logit": float(start_logit),
                          "end_logit": float(end_logit)})
    if not nbest:
        return [dict(entry) for entry in _EMPTY_NBEST]
    scores = np.array([e["start_logit"] + e["end_logit"] for e in nbest])
    exp = np.exp(scores - scores.max())  # softmax over the kept n-best
    for entry, probability in zip(nbest, exp / exp.sum()):
        entry["probability"] = float(probability)
    return nbest


def predict_answers(examples, features, start_logits, end_logits,
                    n_best_size: int = 20, max_answer_length: int = 30):
    """Extracts the best answer span of every example (BERT's recipe).

    Args:
        examples: Sequence of objects with `qas_id: str` and `context: str`
            (e.g. `keras_adapters.tasks.squad.data.SquadExample`).
        features: Sequence of windows with `example_index: int` (into
            `examples`), `token_offsets` (int array `(max_seq_length, 2)` of
            `(start_char, end_char)` into the context, `(-1, -1)` for
            non-context tokens) and `token_is_max_context` (bool array
            `(max_seq_length,)`), e.g. `keras_adapters.tasks.squad.data.SquadFeature`.
        start_logits: Float array-like `(num_features, max_seq_length)`.
        end_logits: Float array-like `(num_features, max_seq_length)`.
        n_best_size: Start and end indices kept per window, and answers kept
            per example. Default 20 (as BERT).
        max_answer_length: Longest answer in tokens. Default 30 (as BERT).

    Returns:
        `(predictions, nbest)`: `predictions` maps every `qas_id` to its best
        answer text (`""` when no valid span exists); `nbest` maps it to a
        list of dicts `text`, `probability`, `start_logit`, `end_logit`,
        best first, with probabilities summing to 1.

    Raises:
        ValueError: if the logits do not have shape
            `(len(features), max_seq_length)`, a feature's `example_index` is
            out of range, or `n_best_size` or `max_answer_length` is not
            positive.
    """
    if n_best_size < 1 or max_answer_length < 1:
        raise ValueError(f"n_best_size ({n_best_size}) and max_answer_length "
                         f"({max_answer_length}) must be positive")
    groups = {}
    if len(features):
        groups = _ranked_spans_by_example(
            examples, features, np.asarray(start_logits), np.asarray(end_logits),
            n_best_size, max_answer_length)
    nbest = {example.qas_id: _nbest_of_example(example.context, groups.get(i, ()), n_best_size)
             for i, example in enumerate(examples)}
    return {qas_id: entries[0]["text"] for qas_id, entries in nbest.items()}, nbest


def write_predictions(predictions, nbest, output_dir):
    """Writes `predictions.json` and `nbest_predictions.json` atomically.

    Args:
        predictions: Dict `qas_id -> answer text`, the official format read
            by `evaluate-v1.1.py`.
        nbest: Dict `qas_id -> list of n-best dicts` from `predict_answers`.
        output_dir: str or os.PathLike; created if missing.

    Returns:
        `(predictions_path, nbest_path)` as strings.
    """
    paths = tuple(os.path.join(os.fspath(output_dir), name)
                  for name in (PREDICTIONS_FILE, NBEST_FILE))
    for path, obj in zip(paths, (predictions, nbest)):
        write_json(path, obj)
    return paths


def score_predictions(dataset, predictions) -> dict[str, float]:
    """Official SQuAD v1.1 exact match and F1, in percent (0-100).

    Scores come from `official.nlp.tools.squad_evaluate_v1_1.evaluate`
    (answer normalisation: lower case, no punctuation, no a/an/the, single
    spaces; maximum over the reference answers), which returns fractions;
    they are scaled by 100 as the official `evaluate-v1.1.py` prints them.
    Unanswered questions score 0; predictions of unknown ids are ignored.

    Args:
        dataset: Path (str or os.PathLike) of an official SQuAD v1.1 JSON
            file, or its parsed content (a dict with a `"data"` list).
        predictions: Dict `qas_id -> answer text`.

    Returns:
        `{"exact_match": float, "f1": float}`.

    Raises:
        ValueError: if the dataset has no `"data"` or no questions.
    """
    if not isinstance(dataset, dict):
        with open(dataset, encoding="utf-8") as f:
            dataset = json.load(f)
    articles = dataset.get("data") if isinstance(dataset, dict) else None
    if not any(p["qas"] for article in articles or () for p in article["paragraphs"]):
        raise ValueError("dataset must be SQuAD JSON with questions under 'data'")
    scores = squad_evaluate_v1_1.evaluate(articles, predictions)
    return {"exact_match": 100.0 * scores["exact_match"], "f1": 100.0 * scores["final_f1"]}
