"""Tests for keras_adapters.tasks.squad.postprocessing.

Span extraction runs on small hand-built windows and on real dev contexts;
scores are checked against hand computations and against an independent
re-implementation of the official evaluate-v1.1.py token F1 in this file.
"""

import collections
import dataclasses
import json
import re
import string
from pathlib import Path

import numpy as np
import pytest

from keras_adapters.tasks.squad import postprocessing as sp
from tests.helpers import SQUAD_DEV, require_squad

MAX_SEQ_LENGTH = 32
QUESTION_LENGTH = 3
CONTEXT_START = QUESTION_LENGTH + 2  # [CLS] question [SEP]
LOW = -10.0


@dataclasses.dataclass(frozen=True)
class Example:
    """Stand-in for keras_adapters.tasks.squad.data.SquadExample."""
    qas_id: str
    question: str
    context: str
    answers: tuple = ()


@dataclasses.dataclass(frozen=True)
class Feature:
    """Stand-in for keras_adapters.tasks.squad.data.SquadFeature."""
    example_index: int
    qas_id: str
    window_index: int
    token_offsets: np.ndarray
    token_is_max_context: np.ndarray


def tokenize(text):
    """(start, end) character offsets of words and punctuation marks."""
    return [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]


def make_window(example_index, example, first=0, count=None, max_context=None,
                window_index=0, max_seq_length=MAX_SEQ_LENGTH):
    """A window over context tokens [first, first + count) after the question."""
    spans = tokenize(example.context)[first:None if count is None else first + count]
    offsets = np.full((max_seq_length, 2), -1, np.int32)
    offsets[CONTEXT_START:CONTEXT_START + len(spans)] = spans
    is_max = np.zeros(max_seq_length, bool)
    is_max[CONTEXT_START:CONTEXT_START + len(spans)] = True if max_context is None else max_context
    return Feature(example_index, example.qas_id, window_index, offsets, is_max)


def logits(peaks, max_seq_length=MAX_SEQ_LENGTH):
    """LOW everywhere but at {position: logit}; positions count context tokens."""
    out = np.full(max_seq_length, LOW, np.float32)
    for position, value in peaks.items():
        out[position] = value
    return out


def ctx(token):
    """Sequence position of context token `token` in a window starting at 0."""
    return CONTEXT_START + token


CURIE = Example("q1", "who won it", "Marie Curie won the Nobel Prize in 1903 , and again in 1911 .")


def test_picks_the_best_span_with_exact_character_offsets():
    features = [make_window(0, CURIE)]
    start, end = logits({ctx(4): 8.0}), logits({ctx(5): 7.0})
    predictions, nbest = sp.predict_answers([CURIE], features, [start], [end])
    assert predictions == {"q1": "Nobel Prize"}
    assert nbest["q1"][0] == {"text": "Nobel Prize", "probability": nbest["q1"][0]["probability"],
                              "start_logit": 8.0, "end_logit": 7.0}


def test_unicode_and_punctuation_are_cut_exactly_from_the_context():
    example = Example("u", "was", "Das Zürcher „Großmünster“ (1100–1220) ist  romanisch.")
    tokens = tokenize(example.context)
    first, last = 2, 4  # „ Großmünster “
    predictions, _ = sp.predict_answers(
        [example], [make_window(0, example)],
        [logits({ctx(first): 5.0})], [logits({ctx(last): 5.0})])
    assert predictions["u"] == "„Großmünster“"
    assert predictions["u"] == example.context[tokens[first][0]:tokens[last][1]]


@pytest.mark.parametrize("bad_start", [0, 1, QUESTION_LENGTH + 1])  # [CLS], question, [SEP]
def test_spans_starting_outside_the_context_are_rejected(bad_start):
    start = logits({bad_start: 20.0, ctx(2): 3.0})
    end = logits({ctx(3): 3.0, MAX_SEQ_LENGTH - 1: 20.0})  # padding
    predictions, nbest = sp.predict_answers([CURIE], [make_window(0, CURIE)], [start], [end])
    assert predictions["q1"] == "won the"
    texts = [entry["text"] for entry in nbest["q1"]]
    assert all(entry["start_logit"] < 20 and entry["end_logit"] < 20 for entry in nbest["q1"])
    assert len(texts) == len(set(texts))


def test_end_before_start_is_rejected():
    start = logits({ctx(5): 10.0})
    end = logits({ctx(2): 10.0, ctx(6): 4.0})
    predictions, _ = sp.predict_answers([CURIE], [make_window(0, CURIE)], [start], [end])
    assert predictions["q1"] == "Prize in"


def test_too_long_answers_are_rejected():
    start = logits({ctx(0): 10.0})
    end = logits({ctx(4): 10.0, ctx(2): 4.0})  # 5 tokens vs 3 tokens
    args = ([CURIE], [make_window(0, CURIE)], [start], [end])
    assert sp.predict_answers(*args, max_answer_length=5)[0]["q1"] == "Marie Curie won the Nobel"
    assert sp.predict_answers(*args, max_answer_length=4)[0]["q1"] == "Marie Curie won"


def test_start_without_max_context_is_rejected_but_such_an_end_is_allowed():
    max_context = np.ones(len(tokenize(CURIE.context)), bool)
    max_context[[1, 5]] = False
    features = [make_window(0, CURIE, max_context=max_context)]
    start = logits({ctx(1): 10.0, ctx(3): 5.0})
    end = logits({ctx(5): 10.0})
    predictions, _ = sp.predict_answers([CURIE], features, [start], [end])
    assert predictions["q1"] == "the Nobel Prize"


def two_windows(score_a, score_b):
    """Windows over tokens 0-7 and 4-11; each holds the max context of its half."""
    features = [make_window(0, CURIE, 0, 8, max_context=[True] * 6 + [False] * 2),
                make_window(0, CURIE, 4, 8, max_context=[False] * 2 + [True] * 6,
                            window_index=1)]
    starts = [logits({ctx(1): score_a}), logits({ctx(7 - 4): score_b})]
    ends = [logits({ctx(1): score_a}), logits({ctx(9 - 4): score_b})]
    return sp.predict_answers([CURIE], features, starts, ends)


@pytest.mark.parametrize("score_a, score_b, expected", [(6.0, 9.0, "1903 , and"),
                                                        (9.0, 6.0, "Curie")])
def test_the_better_window_wins(score_a, score_b, expected):
    predictions, nbest = two_windows(score_a, score_b)
    assert predictions["q1"] == expected
    assert {"Curie", "1903 , and"} <= {entry["text"] for entry in nbest["q1"]}


def test_nbest_is_sorted_softmaxed_and_limited_to_n_best_size():
    rng = np.random.default_rng(0)
    start, end = np.full((2, 1, MAX_SEQ_LENGTH), LOW, np.float32)
    num_tokens = len(tokenize(CURIE.context))  # 15: 120 spans, 119 distinct texts
    start[0, ctx(0):ctx(num_tokens)] = rng.normal(size=num_tokens)
    end[0, ctx(0):ctx(num_tokens)] = rng.normal(size=num_tokens)
    _, nbest = sp.predict_answers([CURIE], [make_window(0, CURIE)], start, end, n_best_size=20)
    entries = nbest["q1"]
    assert len(entries) == 20
    scores = np.array([e["start_logit"] + e["end_logit"] for e in entries])
    assert np.all(np.diff(scores) <= 0)
    expected = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    np.testing.assert_allclose([e["probability"] for e in entries], expected, rtol=1e-12)
    assert sum(e["probability"] for e in entries) == pytest.approx(1.0)
    assert all(type(e["probability"]) is float and type(e["start_logit"]) is float
               for e in entries)


def test_identical_answer_texts_are_deduplicated():
    example = Example("ny", "where", "New York or New York ?")
    start = logits({ctx(0): 9.0, ctx(3): 8.0, ctx(4): 1.0})
    end = logits({ctx(1): 9.0, ctx(4): 8.0})
    # The same window twice: every span of the second copy repeats a text.
    features = [make_window(0, example), make_window(0, example, window_index=1)]
    _, nbest = sp.predict_answers([example], features, [start, start], [end, end])
    texts = [entry["text"] for entry in nbest["ny"]]
    assert texts[0] == "New York"
    assert len(texts) == len(set(texts))
    assert "York" in texts and "New York or New York" in texts


def test_no_valid_span_predicts_the_empty_string():
    other = Example("q2", "when", "In 1911 .")
    features = [make_window(0, CURIE, max_context=False)]  # q2 has no window at all
    start, end = logits({ctx(0): 5.0}), logits({ctx(1): 5.0})
    predictions, nbest = sp.predict_answers([CURIE, other], features, [start], [end])
    assert predictions == {"q1": "", "q2": ""}
    empty = [{"text": "", "probability": 1.0, "start_logit": 0.0, "end_logit": 0.0}]
    assert nbest == {"q1": empty, "q2": empty}


def test_invalid_arguments_raise():
    features = [make_window(0, CURIE)]
    good = [logits({})]
    with pytest.raises(ValueError, match="shape"):
        sp.predict_answers([CURIE], features, good, [logits({}, MAX_SEQ_LENGTH + 1)])
    with pytest.raises(ValueError, match="shape"):
        sp.predict_answers([CURIE], features, good * 2, good * 2)
    with pytest.raises(ValueError, match="example_index"):
        sp.predict_answers([CURIE], [make_window(1, CURIE)], good, good)
    with pytest.raises(ValueError, match="positive"):
        sp.predict_answers([CURIE], features, good, good, n_best_size=0)


def bert_nbest(examples, features, starts, ends, n_best_size, max_answer_length):
    """A literal port of the loops of BERT run_squad.py write_predictions."""
    def best_indexes(values):
        ranked = sorted(enumerate(values), key=lambda x: x[1], reverse=True)
        return [index for index, _ in ranked[:n_best_size]]

    prelim = collections.defaultdict(list)
    for feature, start_logits, end_logits in zip(features, starts, ends):
        for s in best_indexes(start_logits.tolist()):
            for e in best_indexes(end_logits.tolist()):
                if (feature.token_offsets[s][0] == -1 or feature.token_offsets[e][0] == -1
                        or not feature.token_is_max_context[s] or e < s
                        or e - s + 1 > max_answer_length):
                    continue
                text = examples[feature.example_index].context[
                    feature.token_offsets[s][0]:feature.token_offsets[e][1]]
                prelim[feature.example_index].append(
                    (text, float(start_logits[s]), float(end_logits[e])))
    nbest = {}
    for index, example in enumerate(examples):
        kept, seen = [], set()
        for text, start_logit, end_logit in sorted(prelim[index], key=lambda x: x[1] + x[2],
                                                   reverse=True):
            if len(kept) < n_best_size and text not in seen:
                seen.add(text)
                kept.append((text, start_logit, end_logit))
        nbest[example.qas_id] = kept or [("", 0.0, 0.0)]
    return nbest


def test_matches_a_literal_port_of_bert_including_ties():
    rng = np.random.default_rng(3)
    contexts = ["Marie Curie won the Nobel Prize in 1903 , and again in 1911 .",
                "a b a b a b c d e f g h i j k l m n o p q r s t u v w x y z"]
    examples = [Example(f"e{i}", "?", contexts[i % 2]) for i in range(6)]
    features = []
    for index, example in enumerate(examples):
        num_tokens = len(tokenize(example.context))
        for w, first in enumerate(range(0, num_tokens, 10)):
            count = min(20, num_tokens - first)
            features.append(make_window(index, example, first, count,
                                        rng.random(count) < 0.8, w))
    # Small integers: many ties, in indices and in summed scores.
    starts, ends = rng.integers(-3, 4, size=(2, len(features), MAX_SEQ_LENGTH)).astype(np.float32)
    for n_best_size, max_answer_length in [(20, 30), (4, 3)]:
        predictions, nbest = sp.predict_answers(examples, features, starts, ends,
                                                n_best_size, max_answer_length)
        expected = bert_nbest(examples, features, starts, ends, n_best_size, max_answer_length)
        assert {k: [(e["text"], e["start_logit"], e["end_logit"]) for e in v]
                for k, v in nbest.items()} == expected
        assert predictions == {k: v[0][0] for k, v in expected.items()}


# --- Scoring ---------------------------------------------------------------

def reference_normalize(text):
    """evaluate-v1.1.py normalize_answer, written independently of the library."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def reference_f1(prediction, truth):
    predicted, gold = reference_normalize(prediction).split(), reference_normalize(truth).split()
    same = sum((collections.Counter(predicted) & collections.Counter(gold)).values())
    return 0.0 if same == 0 else 2 * same / (len(predicted) + len(gold))


def reference_scores(dataset, predictions):
    """Official percentages: mean over questions of the max over references."""
    em = f1 = total = 0.0
    for qa in questions(dataset):
        total += 1
        truths = [answer["text"] for answer in qa["answers"]]
        prediction = predictions.get(qa["id"])
        if prediction is not None:
            em += max(reference_normalize(prediction) == reference_normalize(t) for t in truths)
            f1 += max(reference_f1(prediction, t) for t in truths)
    return {"exact_match": 100 * em / total, "f1": 100 * f1 / total}


def questions(dataset):
    return [qa for article in dataset["data"] for p in article["paragraphs"] for qa in p["qas"]]


def squad_json(*qas, context="unused"):
    """A SQuAD v1.1 dataset with one paragraph; qas are (id, [answer texts])."""
    paragraph = {"context": context, "qas": [
        {"id": qid, "question": "?", "answers": [{"answer_start": 0, "text": t} for t in texts]}
        for qid, texts in qas]}
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [paragraph]}]}


@pytest.fixture(scope="module")
def dev_path():
    require_squad()
    return SQUAD_DEV


@pytest.fixture(scope="module")
def dev(dev_path):
    return json.loads(dev_path.read_text(encoding="utf-8"))


def test_hand_computed_partial_credit():
    dataset = squad_json(("a", ["the Eiffel Tower"]),
                         ("b", ["Albert Einstein's theory of relativity", "relativity"]),
                         ("c", ["An apple."]))
    predictions = {"a": "Eiffel Tower in Paris",  # P = 2/4, R = 2/2 -> F1 = 2/3
                   "b": "theory of relativity",   # P = 3/3, R = 3/5 -> 3/4 (vs 1/2 for ref 2)
                   "c": "apple"}                  # exact after normalisation
    scores = sp.score_predictions(dataset, predictions)
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (2 / 3 + 3 / 4 + 1) / 3)
    assert set(scores) == {"exact_match", "f1"}


def test_articles_punctuation_case_and_spaces_do_not_matter():
    dataset = squad_json(("a", ["the Eiffel Tower"]), ("b", ["U.S. dollars"]),
                         ("c", ["a  cat"]))
    predictions = {"a": "Eiffel tower!", "b": "US   Dollars", "c": "The cat."}
    assert sp.score_predictions(dataset, predictions) == {"exact_match": 100.0, "f1": 100.0}


def test_unanswered_questions_score_zero():
    dataset = squad_json(("a", ["x"]), ("b", ["y"]))
    assert sp.score_predictions(dataset, {"a": "x", "zzz": "y"}) == pytest.approx(
        {"exact_match": 50.0, "f1": 50.0})


def test_invalid_dataset_raises():
    with pytest.raises(ValueError, match="data"):
        sp.score_predictions({"version": "1.1"}, {})
    with pytest.raises(ValueError, match="data"):
        sp.score_predictions({"data": []}, {})


def test_dev_gold_answers_score_100_and_empty_answers_0(dev, dev_path):
    qas = questions(dev)
    assert len(qas) == 10570
    gold = {qa["id"]: qa["answers"][0]["text"] for qa in qas}
    assert sp.score_predictions(dev_path, gold) == {"exact_match": 100.0, "f1": 100.0}
    # Three dev questions list "." among their references: it normalises to
    # "", so the empty answer matches it exactly (F1 stays 0: no tokens).
    dot_questions = [qa["id"] for qa in qas if any(a["text"] == "." for a in qa["answers"])]
    assert len(dot_questions) == 3
    empty = sp.score_predictions(dev, dict.fromkeys(gold, ""))
    assert empty == {"exact_match": pytest.approx(100 * 3 / 10570), "f1": 0.0}


def perturb(qa, context, rng):
    """A prediction near the first gold answer: cut, extended or replaced."""
    answer = qa["answers"][0]
    start, text = answer["answer_start"], answer["text"]
    words = text.split()
    kind = rng.integers(6)
    if kind == 0 and len(words) > 1:
        return " ".join(words[1:])
    if kind == 1:
        following = context[start + len(text):].split()
        return f"{text} {following[0]}" if following else text
    if kind == 2:
        return context[max(0, start - 15):start + len(text)]
    if kind == 3:
        return f"The {text.upper()}!"
    if kind == 4:
        begin = rng.integers(len(context))
        return context[begin:begin + 30]
    return text


def test_matches_independent_reference_on_perturbed_dev_questions(dev):
    rng = np.random.default_rng(1)
    paragraphs = [p for article in dev["data"][:6] for p in article["paragraphs"][:12]]
    subset = {"version": "1.1", "data": [{"title": "subset", "paragraphs": paragraphs}]}
    predictions = {qa["id"]: perturb(qa, p["context"], rng)
                   for p in paragraphs for qa in p["qas"]}
    assert len(predictions) >= 300
    expected = reference_scores(subset, predictions)
    assert 20 < expected["exact_match"] < 80 and expected["exact_match"] < expected["f1"] < 95
    assert sp.score_predictions(subset, predictions) == pytest.approx(expected, abs=1e-9)


# --- Real dev contexts end to end ----------------------------------------------

def max_context_flags(window_starts, window_length, num_tokens):
    """BERT's _check_is_max_context: min(left, right) context + 0.01 * length."""
    best = {}
    for w, first in enumerate(window_starts):
        last = min(first + window_length, num_tokens) - 1
        for t in range(first, last + 1):
            score = min(t - first, last - t) + 0.01 * (last - first + 1)
            if t not in best or score > best[t][0]:
                best[t] = (score, w)
    return [[best[t][1] == w for t in range(first, min(first + window_length, num_tokens))]
            for w, first in enumerate(window_starts)]


def dev_features(dev, window_length=24, stride=12, max_questions=200):
    """Windows over real contexts; logits peak on the first gold answer's tokens."""
    rng = np.random.default_rng(2)
    examples, features, starts, ends = [], [], [], []
    max_seq_length = CONTEXT_START + window_length + 1
    for paragraph in (p for article in dev["data"] for p in article["paragraphs"]):
        context, spans = paragraph["context"], tokenize(paragraph["context"])
        window_starts = list(range(0, max(1, len(spans) - window_length + stride), stride))
        flags = max_context_flags(window_starts, window_length, len(spans))
        for qa in paragraph["qas"]:
            gold = qa["answers"][0]
            char_start, char_end = gold["answer_start"], gold["answer_start"] + len(gold["text"])
            token_starts, token_ends = [s for s, _ in spans], [e for _, e in spans]
            if char_start not in token_starts or char_end not in token_ends:
                continue  # gold boundary inside a token of this simple tokenizer
            first, last = token_starts.index(char_start), token_ends.index(char_end)
            if last - first >= stride // 2:
                continue  # may not fit in the window where its start has max context
            example = Example(qa["id"], qa["question"], context)
            for w, window_first in enumerate(window_starts):
                feature = make_window(len(examples), example, window_first, window_length,
                                      flags[w], w, max_seq_length)
                start, end = rng.normal(size=(2, max_seq_length)).astype(np.float32)
                if window_first <= first < window_first + window_length:
                    start[ctx(first - window_first)] += 12
                if window_first <= last < window_first + window_length:
                    end[ctx(last - window_first)] += 12
                features.append(feature)
                starts.append(start)
                ends.append(end)
            examples.append(example)
            if len(examples) == max_questions:
                return examples, features, np.stack(starts), np.stack(ends)
    raise AssertionError("not enough dev questions")


def test_real_dev_contexts_recover_the_gold_answers_and_round_trip(dev, tmp_path):
    examples, features, starts, ends = dev_features(dev)
    assert len(features) > 2 * len(examples)  # several windows per question
    predictions, nbest = sp.predict_answers(examples, features, starts, ends)
    ids = {example.qas_id for example in examples}
    subset = {"data": [{"paragraphs": [{"qas": [qa for qa in p["qas"] if qa["id"] in ids]}
                                       for article in dev["data"] for p in article["paragraphs"]]}]}
    assert sp.score_predictions(subset, predictions) == {"exact_match": 100.0, "f1": 100.0}

    predictions_path, nbest_path = sp.write_predictions(predictions, nbest, tmp_path / "out")
    assert Path(predictions_path).name == "predictions.json"
    assert Path(nbest_path).name == "nbest_predictions.json"
    written = json.loads(Path(predictions_path).read_text(encoding="utf-8"))
    assert written == predictions
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in written.items())
    assert json.loads(Path(nbest_path).read_text(encoding="utf-8")) == nbest
    assert sp.score_predictions(subset, written) == sp.score_predictions(subset, predictions)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "nbest_predictions.json", "predictions.json"]


def test_rescoring_a_written_file_with_perturbed_answers_gives_the_same_numbers(tmp_path):
    dataset = squad_json(("a", ["the Eiffel Tower"]), ("b", ["relativity"]))
    predictions = {"a": "Eiffel Tower in Paris", "b": "général relativity – “theory”"}
    path, _ = sp.write_predictions(predictions, {}, tmp_path)
    written = json.loads(Path(path).read_text(encoding="utf-8"))
    assert written == predictions
    assert sp.score_predictions(dataset, written) == sp.score_predictions(dataset, predictions)
    assert sp.score_predictions(dataset, written) == pytest.approx(
        reference_scores(dataset, predictions))
