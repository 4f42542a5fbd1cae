"""In-graph question answering and its SavedModel, against the Python SQuAD path."""

import json

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the SavedModel's tokenizer ops)

from keras_adapters.configuration.adapter_config import AdapterConfig
from keras_adapters.models.adapter_backbone import add_adapters
from keras_adapters.models.freezing import find_adapter_backbone
from keras_adapters.saving.checkpoints import from_pretrained
from keras_adapters.serving import question_answering as squad_serving
from keras_adapters.tasks.squad import data as squad
from keras_adapters.tasks.squad import postprocessing as squad_postprocessing
from keras_adapters.tasks.squad.span_head import build_span_model
from tests.helpers import SQUAD_DEV as DEV
from tests.helpers import UNICODE_CASES, require_squad, serve_in_fresh_process

SETTINGS = dict(max_seq_length=96, doc_stride=32, max_query_length=24, n_best_size=20,
                max_answer_length=30)


@pytest.fixture(scope="module")
def tokenizer():
    return from_pretrained(load_weights=False)[1]


@pytest.fixture(scope="module")
def model(tokenizer):
    """A small random span model on the real vocabulary, adapters switched on."""
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=SETTINGS["max_seq_length"])
    return build_span_model(add_adapters(backbone, AdapterConfig(adapter_size=4,
                                                                 initializer_std=0.3)))


@pytest.fixture(scope="module")
def dev_examples(tokenizer):
    """Dev questions whose contexts need one window and several, plus edge cases."""
    require_squad()
    examples = squad.read_squad(DEV, training=False)
    features = squad.convert_to_features(examples[:600], tokenizer, **_window_settings())
    windows = np.bincount([f.example_index for f in features])
    chosen = list(np.flatnonzero(windows == 1)[:12]) + list(np.flatnonzero(windows > 2)[:12])
    assert max(windows[chosen]) >= 4  # Some contexts span many windows.
    return [examples[i] for i in chosen]


def _window_settings():
    return {k: SETTINGS[k] for k in ("max_seq_length", "doc_stride", "max_query_length")}


def _python_answers(model, tokenizer, examples):
    """The training-time path: features, per-window logits, BERT decoding."""
    features = squad.convert_to_features(examples, tokenizer, **_window_settings())
    inputs = {name: np.stack([getattr(f, name) for f in features])
              for name in ("token_ids", "segment_ids", "padding_mask")}
    logits = model.predict_on_batch(inputs)
    start, end = (np.asarray(logits[name]) for name in ("start_logits", "end_logits"))
    predictions, nbest = squad_postprocessing.predict_answers(
        examples, features, start, end, n_best_size=SETTINGS["n_best_size"],
        max_answer_length=SETTINGS["max_answer_length"])
    return predictions, nbest


def _serve(model, tokenizer, questions, contexts):
    return squad_serving.answer_questions(
        model, squad.OffsetTokenizer(tokenizer), tf.constant(questions), tf.constant(contexts),
        **SETTINGS)


def _compare_graph_tokenization(tokenizer, texts):
    """Assert graph ids equal `__call__`'s; return (same spans, all spans)."""
    offset_tokenizer = squad.OffsetTokenizer(tokenizer)
    ids, starts, ends = tf.function(offset_tokenizer.tokenize_in_graph)(tf.constant(texts))
    same = total = 0
    for text, row_ids, row_starts, row_ends, (want_ids, want_offsets) in zip(
            texts, ids.to_list(), starts.to_list(), ends.to_list(), offset_tokenizer(texts)):
        np.testing.assert_array_equal(row_ids, want_ids)
        data = text.encode()
        for (byte_start, byte_end), (char_start, char_end) in zip(
                zip(row_starts, row_ends), want_offsets):
            graph_span = data[byte_start:byte_end].decode()
            assert text[char_start:char_end] in graph_span  # Whole word at worst.
            same += graph_span == text[char_start:char_end]
            total += 1
    return same, total


def test_graph_tokenization_handles_unicode_like_the_python_path(tokenizer):
    same, total = _compare_graph_tokenization(
        tokenizer, UNICODE_CASES + ["Hello, world: it's 3.5 km² (roughly)."])
    assert total > 40 and same < total  # Accented words fall back to whole-word spans.


def test_graph_tokenization_offsets_match_on_real_contexts(tokenizer):
    require_squad()
    contexts = [p["context"] for a in json.loads(DEV.read_text())["data"][:5]
                for p in a["paragraphs"]]
    same, total = _compare_graph_tokenization(tokenizer, contexts)
    assert total > 1000 and same / total > 0.99


def test_answers_equal_the_python_path_across_windows(model, tokenizer, dev_examples):
    predictions, nbest = _python_answers(model, tokenizer, dev_examples)
    outputs = _serve(model, tokenizer, [e.question for e in dev_examples],
                     [e.context for e in dev_examples])
    answers = [a.decode() for a in outputs["answer"].numpy()]
    assert answers == [predictions[e.qas_id] for e in dev_examples]
    assert len(set(answers)) > 10  # The random model still picks varied spans.
    for example, score, start, end, offsets, start_logits, end_logits in zip(
            dev_examples, outputs["score"].numpy(), outputs["answer_start"].numpy(),
            outputs["answer_end"].numpy(), outputs["token_offsets"].numpy(),
            outputs["start_logits"].numpy(), outputs["end_logits"].numpy()):
        best = nbest[example.qas_id][0]
        assert score == pytest.approx(best["start_logit"] + best["end_logit"], abs=1e-4)
        assert example.context[start:end] == best["text"]
        # The returned window is the answer's: its logits hold the answer's own.
        assert np.abs(start_logits[offsets[:, 0] == start] - best["start_logit"]).min() < 1e-4
        assert np.abs(end_logits[offsets[:, 1] == end] - best["end_logit"]).min() < 1e-4


def test_edge_cases_give_empty_answers_not_errors(model, tokenizer):
    contexts = ["", "Paris is the capital of France.", "Café déjà vu in 東京 " * 40, "¿?"]
    outputs = _serve(model, tokenizer, ["Where?", "", "Which café?", "What?"], contexts)
    answers = [a.decode() for a in outputs["answer"].numpy()]
    assert answers[0] == "" and outputs["answer_start"][0] == -1
    assert outputs["score"][0] == -np.inf
    for context, answer, start, end in zip(contexts[1:], answers[1:],
                                           outputs["answer_start"].numpy()[1:],
                                           outputs["answer_end"].numpy()[1:]):
        assert answer and context[start:end] == answer


def test_saved_model_serves_the_same_answers(model, tokenizer, tmp_path):
    questions = ["Where is the cat?", "What did the dog do?"]
    contexts = ["The cat sat on the mat near the door. " * 6, "The dog barked at the moon."]
    eager = _serve(model, tokenizer, questions, contexts)
    backbone = find_adapter_backbone(model)
    backbone.set_drop_first_n(2)  # No adapter runs.
    try:
        dropped = _serve(model, tokenizer, questions, contexts)
    finally:
        backbone.set_drop_first_n(0)
    assert not np.allclose(dropped["score"], eager["score"], rtol=0, atol=1e-5)
    squad_serving.export_question_answerer(model, tokenizer, str(tmp_path / "qa"), **SETTINGS)
    texts = dict(question=questions, context=contexts)
    served = serve_in_fresh_process(
        (tmp_path / "qa", "serving_default", texts),
        (tmp_path / "qa", "serving_adapter_drop", {**texts, "drop_first_n": 2}))
    for served, expected in zip(served, (eager, dropped)):
        assert served.pop("__signatures__") == ["serving_adapter_drop", "serving_default"]
        assert set(served) == set(expected)
        for name, value in expected.items():
            if value.dtype == tf.string:
                assert served[name] == [v.decode() for v in value.numpy().tolist()]
            else:
                np.testing.assert_allclose(served[name], value, atol=1e-5)
    serve = tf.saved_model.load(str(tmp_path / "qa")).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="context must hold as many texts as question"):
        serve(question=tf.constant(questions), context=tf.constant(contexts[:1]))
    broken = serve(question=tf.constant([b"Where is the \xff cat?"]),
                   context=tf.constant([contexts[0].encode() + b"\xfe"]))
    fixed = _serve(model, tokenizer, ["Where is the \ufffd cat?"], [contexts[0] + "\ufffd"])
    assert broken["answer"].numpy().tolist() == fixed["answer"].numpy().tolist()


def test_export_rejects_settings_without_room_for_context(model, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="no room for context"):
        squad_serving.export_question_answerer(model, tokenizer, str(tmp_path / "qa"),
                                               max_seq_length=64, max_query_length=64)
