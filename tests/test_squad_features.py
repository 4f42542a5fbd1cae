"""Tests for keras_adapters.tasks.squad.data: reading, offsets tokenization, BERT windows."""

import collections
import json

import numpy as np
import pytest
import tensorflow as tf

from keras_adapters.saving.checkpoints import from_pretrained
from keras_adapters.tasks.squad import data as squad
from keras_adapters.tasks.squad import postprocessing as squad_postprocessing
from tests.helpers import SQUAD_DEV as DEV
from tests.helpers import SQUAD_TRAIN as TRAIN
from tests.helpers import UNICODE_CASES, require_squad


@pytest.fixture(scope="module")
def tokenizer():
    return from_pretrained(load_weights=False)[1]


@pytest.fixture(scope="module")
def dev_examples():
    require_squad()
    return squad.read_squad(DEV, training=True)


@pytest.fixture(scope="module")
def dev_features(dev_examples, tokenizer):
    return squad.convert_to_features(dev_examples, tokenizer, training=True)


def _keras_hub_ids(tokenizer, texts):
    return [list(map(int, ids)) for ids in tokenizer(tf.constant(texts))]


# ----------------------------------------------------------------------------
# Reading


def test_read_real_files():
    require_squad()
    dev = squad.read_squad(DEV, training=False)
    train = squad.read_squad(TRAIN, training=True)
    assert (len(dev), len(train)) == (10_570, 11_877)
    assert dev[0].qas_id == "56be4db0acb8001400a502ec"
    assert dev[0].question == "Which NFL team represented the AFC at Super Bowl 50?"
    assert dev[0].answers == ("Denver Broncos",) * 3
    assert dev[0].answer_start is None and dev[0].answer_text is None
    first = train[0]
    assert first.question == "To whom did the Virgin Mary allegedly appear in 1858 in Lourdes France?"
    assert (first.answer_text, first.answer_start) == ("Saint Bernadette Soubirous", 515)
    assert first.context[515:541] == first.answer_text and first.answers == (first.answer_text,)


def _write(tmp_path, qa, context="Paris is in France."):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"version": "1.1", "data": [
        {"title": "t", "paragraphs": [{"context": "ok", "qas": []}, {"context": context, "qas": [qa]}]}
    ]}))
    return path


GOOD_QA = {"id": "q1", "question": "Where is Paris?",
           "answers": [{"text": "France", "answer_start": 12}]}


@pytest.mark.parametrize("change, field", [
    ({"answers": [{"text": "France", "answer_start": 11}]}, "'answer_start' 11 does not point"),
    ({"question": "  "}, "field 'question' is empty"),
    ({"question": None}, "field 'question' is NoneType, not str"),
    ({"answers": []}, "field 'answers' is empty"),
    ({"answers": [{"text": "France"}]}, r"answers\[0\]: missing field 'answer_start'"),
])
def test_bad_inputs_name_file_location_id_and_field(tmp_path, change, field):
    path = _write(tmp_path, {**GOOD_QA, **change})
    where = r"data\[0\]\.paragraphs\[1\]\.qas\[0\] \(id 'q1'\)"
    with pytest.raises(squad.SquadFormatError, match=f"bad.json: {where}.*{field}"):
        squad.read_squad(path, training=True)


def test_missing_fields_and_empty_context(tmp_path):
    qa = {k: v for k, v in GOOD_QA.items() if k != "question"}
    with pytest.raises(squad.SquadFormatError, match=r"qas\[0\] \(id 'q1'\): missing field 'question'"):
        squad.read_squad(_write(tmp_path, qa), training=False)
    with pytest.raises(squad.SquadFormatError, match=r"bad.json: data\[0\]\.paragraphs\[1\]: .*'context' is empty"):
        squad.read_squad(_write(tmp_path, GOOD_QA, context=""), training=False)
    no_answers = {k: v for k, v in GOOD_QA.items() if k != "answers"}
    assert squad.read_squad(_write(tmp_path, no_answers), training=False)[0].answers == ()
    with pytest.raises(squad.SquadFormatError, match="missing field 'answers'"):
        squad.read_squad(_write(tmp_path, no_answers), training=True)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(squad.SquadFormatError, match="broken.json: invalid JSON"):
        squad.read_squad(tmp_path / "broken.json", training=False)


# ----------------------------------------------------------------------------
# Tokenization with offsets


def test_token_ids_equal_keras_hub_on_real_contexts_and_unicode(tokenizer):
    require_squad()
    data = json.loads(DEV.read_text(encoding="utf-8"))["data"]
    texts = [p["context"] for a in data for p in a["paragraphs"]] + UNICODE_CASES
    ours = [list(ids) for ids, _ in squad.OffsetTokenizer(tokenizer)(texts)]
    assert ours == _keras_hub_ids(tokenizer, texts)


def test_character_offsets_on_unicode(tokenizer):
    pieces = [[(tokenizer.id_to_token(int(i)), text[s:e]) for i, (s, e) in zip(ids, offsets)]
              for text, (ids, offsets) in zip(UNICODE_CASES, squad.OffsetTokenizer(tokenizer)(UNICODE_CASES))]
    assert pieces[0] == [("cafe", "Café"), ("de", "dé"), ("##ja", "jà"), ("vu", "vu"), (",", ","),
                         ("frederic", "Frédéric"), ("!", "!")]
    assert pieces[1] == [("naive", "naïve"), ("abc", "ＡＢＣ"), ("fine", "ﬁne")]
    assert [p for _, p in pieces[2]] == ["北", "京", "大", "学", "in", "東", "京"]
    assert pieces[3] == [("i", "I"), ("[UNK]", "❤️"), ("[UNK]", "🎉"), ("em", "em"), ("##oj", "oj"),
                         ("##i", "i"), ("[UNK]", "👍🏽"), ("!", "!")]
    assert [p for _, p in pieces[4]] == ["zero", "width", "join", "soft"]
    # keras-hub does not split on no-break spaces; "non breaking" is one unknown word.
    assert pieces[5] == [("[UNK]", "non\u00a0breaking"), ("space", "space")]
    assert pieces[6] == [("a", "a"), ("=", "≠"), ("b", "b"), ("...", "…"), ("′", "″"), ("##′", "″"),
                         ("ss", "ß"), ("istanbul", "İstanbul")]
    assert [p for _, p in pieces[7]] == ["tab", "new", "line"] and pieces[8] == []


# ----------------------------------------------------------------------------
# Features on real data


def test_dev_answers_round_trip(dev_examples, dev_features, tokenizer):
    contexts = list(dict.fromkeys(e.context for e in dev_examples))
    context_offsets = {c: o for c, (_, o) in zip(contexts, squad.OffsetTokenizer(tokenizer)(contexts))}
    by_example = collections.defaultdict(list)
    for feature in dev_features:
        by_example[feature.example_index].append(feature)
    exact = labelled = 0
    for index, example in enumerate(dev_examples):
        windows = by_example[index]
        labelled_windows = [f for f in windows if f.start_position]
        labelled += bool(labelled_windows)
        exact += bool(labelled_windows) and all(
            squad.answer_from_offsets(example.context, f, f.start_position, f.end_position)
            == example.answer_text for f in labelled_windows)
        # Every context token is max-context in exactly one window.
        chosen = np.concatenate([f.token_offsets[f.token_is_max_context] for f in windows])
        assert sorted(map(tuple, chosen)) == sorted(map(tuple, context_offsets[example.context]))
    rate = exact / labelled
    print(f"dev round trip: {exact}/{labelled} = {rate:.4%} ({len(dev_examples)} questions, "
          f"{len(dev_features)} features)")
    assert labelled == len(dev_examples) and rate >= 0.99


def test_feature_layout(dev_examples, dev_features, tokenizer):
    feature = dev_features[0]
    example = dev_examples[feature.example_index]
    question = _keras_hub_ids(tokenizer, [example.question])[0]
    context = _keras_hub_ids(tokenizer, [example.context])[0]
    n, q = len(context), len(question)
    assert feature.token_ids.shape == feature.segment_ids.shape == (384,)
    assert feature.token_offsets.shape == (384, 2) and feature.token_offsets.dtype == np.int32
    expected = [tokenizer.cls_token_id, *question, tokenizer.sep_token_id, *context, tokenizer.sep_token_id]
    assert list(feature.token_ids[: len(expected)]) == expected and not feature.token_ids[len(expected):].any()
    assert list(feature.segment_ids[: len(expected)]) == [0] * (q + 2) + [1] * (n + 1)
    assert feature.padding_mask.sum() == len(expected) and not feature.segment_ids[len(expected):].any()
    assert (feature.token_offsets[: q + 2] == -1).all() and (feature.token_offsets[q + 2 + n:] == -1).all()
    assert (feature.token_offsets[q + 2: q + 2 + n] >= 0).all() and feature.token_is_max_context.sum() == n
    assert (feature.start_position, feature.end_position) != (0, 0)


# ----------------------------------------------------------------------------
# Windows, max context and labels on synthetic contexts


def _bert_doc_spans(num_tokens, max_tokens, doc_stride):
    """google-research/bert run_squad.py, `convert_examples_to_features`."""
    doc_spans, start_offset = [], 0
    while start_offset < num_tokens:
        length = num_tokens - start_offset
        if length > max_tokens:
            length = max_tokens
        doc_spans.append((start_offset, length))
        if start_offset + length == num_tokens:
            break
        start_offset += min(length, doc_stride)
    return doc_spans


def _bert_check_is_max_context(doc_spans, cur_span_index, position):
    """google-research/bert run_squad.py, `_check_is_max_context`."""
    best_score, best_span_index = None, None
    for span_index, (start, length) in enumerate(doc_spans):
        end = start + length - 1
        if position < start or position > end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best_span_index = score, span_index
    return cur_span_index == best_span_index


def _synthetic(num_tokens, answer_at=None):
    words = ["the"] * num_tokens  # One token each, 4 characters apart.
    if answer_at is not None:
        words[answer_at] = "zebra"
    context = " ".join(words)
    start = None if answer_at is None else 4 * answer_at
    return squad.SquadExample("s", "what?", context, ("zebra",), start,
                              None if answer_at is None else "zebra")


@pytest.mark.parametrize("num_tokens, max_seq_length, doc_stride", [
    (1000, 128, 32), (123, 128, 32), (124, 128, 32), (300, 64, 100), (5, 64, 16)])
def test_windows_and_max_context_follow_bert(tokenizer, num_tokens, max_seq_length, doc_stride):
    features = squad.convert_to_features([_synthetic(num_tokens)], tokenizer, max_seq_length,
                                         doc_stride)
    max_tokens = max_seq_length - 2 - 3  # "what?" is 2 tokens.
    spans = _bert_doc_spans(num_tokens, max_tokens, doc_stride)
    assert squad.window_spans(num_tokens, max_tokens, doc_stride) == spans
    assert [f.window_index for f in features] == list(range(len(spans)))
    chosen = np.zeros(num_tokens, int)
    for feature, (start, length) in zip(features, spans):
        context = feature.token_offsets[:, 0] >= 0
        assert context.sum() == length == feature.segment_ids.sum() - 1
        positions = feature.token_offsets[context, 0] // 4
        assert list(positions) == list(range(start, start + length))
        expected = [_bert_check_is_max_context(spans, feature.window_index, p) for p in positions]
        assert list(feature.token_is_max_context[context]) == expected
        chosen[positions[feature.token_is_max_context[context]]] += 1
    assert (chosen == 1).all()
    assert squad.window_spans(0, max_tokens, doc_stride) == [(0, 0)]


def test_training_labels(tokenizer):
    example = _synthetic(200, answer_at=170)  # Windows of 59 tokens start at 0, 32, ..., 160.
    features = squad.convert_to_features([example], tokenizer, 64, 32, training=True)
    labels = [(f.start_position, f.end_position) for f in features]
    assert len(features) == 6 and labels[:4] == [(0, 0)] * 4  # Windows ending before 170.
    for feature, (start, end) in zip(features[4:], labels[4:]):
        assert start == end > 0 and feature.token_ids[start] == tokenizer.token_to_id("zebra")
        assert squad.answer_from_offsets(example.context, feature, start, end) == "zebra"
    unlabelled = squad.convert_to_features([example], tokenizer, 64, 32, training=False)
    assert all(f.start_position == f.end_position == 0 for f in unlabelled)
    with pytest.raises(ValueError, match="no answer_start"):
        squad.convert_to_features([_synthetic(10)], tokenizer, training=True)
    with pytest.raises(ValueError, match="leaves no room"):
        squad.convert_to_features([example], tokenizer, max_seq_length=5)


def test_features_to_dataset(tokenizer):
    features = squad.convert_to_features([_synthetic(200, answer_at=170)], tokenizer, 64, 32,
                                         training=True)
    assert len(features) == 6 and features[-1].padding_mask.sum() < 48
    x, y = next(iter(squad.features_to_dataset(features, 4, training=True, seed=1,
                                               static_shapes=True)))
    assert set(x) == {"token_ids", "segment_ids", "padding_mask"}
    assert all(v.shape == (4, 64) and v.dtype == tf.int32 for v in x.values())
    assert set(y) == {"start_positions", "end_positions"} and y["start_positions"].shape == (4,)
    static = squad.features_to_dataset(features, 4, training=True, static_shapes=True)
    assert [int(x["token_ids"].shape[0]) for x, _ in static] == [4]  # Remainder dropped.
    trimmed = list(squad.features_to_dataset(features, 4, training=True, seed=1))
    assert sorted(int(x["token_ids"].shape[0]) for x, _ in trimmed) == [2, 4]
    rows = []
    for x, y in trimmed:  # Each batch is cut to its longest window, rounded up to 16.
        longest = int(tf.reduce_max(tf.reduce_sum(x["padding_mask"], 1)))
        assert x["token_ids"].shape[1] == min(64, -(-longest // 16) * 16)
        ids = np.pad(x["token_ids"].numpy(), ((0, 0), (0, 64 - x["token_ids"].shape[1])))
        rows += zip(map(tuple, ids), y["start_positions"].numpy(), y["end_positions"].numpy())
    expected = [(tuple(f.token_ids), f.start_position, f.end_position) for f in features]
    assert sorted(rows) == sorted(expected)  # Every window once, with its own labels.

    # Prediction, in order (shortest first, as run_squad.py sorts them): full batches, each
    # cut to the shortest bucket its longest window fits, the last one filled.
    short = squad.convert_to_features([_synthetic(10)], tokenizer, 64, 32, training=False)
    ordered = short * 2 + features[:3]  # Five windows: two short, three full.
    static = list(squad.features_to_dataset(ordered, 2, static_shapes=True))
    longest = [max(f.padding_mask.sum() for f in ordered[i:i + 2]) for i in (0, 2, 4)]
    assert [tuple(x["token_ids"].shape) for x in static] == \
        [(2, min(b for b in (16, 32, 64) if b >= n)) for n in longest]
    assert static[0]["token_ids"].shape[1] < 64  # The short windows' batch is cut.
    for name in ("token_ids", "segment_ids", "padding_mask"):
        rows = [np.pad(row, (0, 64 - len(row))) for x in static for row in x[name].numpy()]
        assert not np.any(rows[5:])  # The filling row is empty.
        np.testing.assert_array_equal(rows[:5], [getattr(f, name) for f in ordered])
    batches = list(squad.features_to_dataset(features, 4))
    assert [b["token_ids"].shape[0] for b in batches] == [4, 2]
    np.testing.assert_array_equal(batches[0]["token_ids"][0], features[0].token_ids)


def test_context_without_tokens_still_gets_an_empty_prediction(tokenizer):
    example = squad.SquadExample("q", "What?", "\x1b\x07", ("\x1b",), 0, "\x1b")
    features = squad.convert_to_features([example], tokenizer, max_seq_length=16,
                                         doc_stride=4, max_query_length=8, training=True)
    assert len(features) == 1 and (features[0].token_offsets == -1).all()
    assert features[0].start_position == features[0].end_position == 0  # [CLS]
    logits = np.random.default_rng(0).normal(size=(1, 16)).astype("float32")
    predictions, _ = squad_postprocessing.predict_answers(
        [example], features, logits, logits, n_best_size=5, max_answer_length=4)
    assert predictions == {"q": ""}
