"""Random unicode through the readers and the preprocessing: only our documented errors.

Hypothesis writes GLUE TSV files and SQuAD JSON of arbitrary text (and
bytes), and feeds arbitrary sentence pairs and questions/contexts to the
tokenization. The readers may raise `GlueFormatError` / `SquadFormatError`
and nothing else; the preprocessing must not raise at all. Examples are
derandomized, so CI runs the same ones every time; a run with 25x as many
(1,500 per reader test, 600 per tokenization test) passed on 2026-11-22.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_adapters.data.pipeline import make_preprocessor, tokenize
from keras_adapters.saving.checkpoints import from_pretrained
from keras_adapters.tasks.glue import data as glue
from keras_adapters.tasks.squad import data as squad

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
FIELD = st.text(st.characters(codec="utf-8", exclude_characters="\t\r\n"), max_size=12)


@pytest.fixture(scope="module")
def tokenizer():
    return from_pretrained(load_weights=False)[1]


@FUZZ
@given(rows=st.lists(st.one_of(st.lists(FIELD, min_size=0, max_size=7).map("\t".join), TEXT),
                     max_size=6),
       header=st.booleans())
def test_glue_reader_raises_only_its_format_error(rows, header, tmp_path):
    folder = tmp_path / "MRPC"
    folder.mkdir(exist_ok=True)
    lines = (["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"] if header else []) + rows
    (folder / "train.tsv").write_text("\n".join(lines), encoding="utf-8")
    try:
        examples = glue.read_tsv_split(tmp_path, "mrpc", "train")
    except glue.GlueFormatError as e:
        assert "train.tsv:" in str(e)
    else:
        assert len(examples.text_a) == len(examples.text_b) == len(examples.labels) > 0


@FUZZ
@given(raw=st.binary(max_size=80))
def test_glue_reader_names_undecodable_bytes(raw, tmp_path):
    folder = tmp_path / "SST-2"
    folder.mkdir(exist_ok=True)
    (folder / "train.tsv").write_bytes(b"sentence\tlabel\n" + raw)
    try:
        glue.read_tsv_split(tmp_path, "sst2", "train")
    except glue.GlueFormatError as e:
        assert "train.tsv:" in str(e)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 50) | TEXT,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["data", "paragraphs", "context", "qas", "id", "question",
                                       "answers", "text", "answer_start"]), children,
                      max_size=5),
    max_leaves=20)


@FUZZ
@given(data=JSON, training=st.booleans())
def test_squad_reader_raises_only_its_format_error(data, training, tmp_path):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    try:
        examples = squad.read_squad(str(path), training=training)
    except squad.SquadFormatError as e:
        assert str(path) in str(e)
    else:
        assert examples and all(e.question.strip() and e.context.strip() for e in examples)


@FUZZ
@given(raw=st.binary(max_size=60))
def test_squad_reader_names_undecodable_bytes(raw, tmp_path):
    path = tmp_path / "squad.json"
    path.write_bytes(raw)
    with pytest.raises(squad.SquadFormatError, match="squad.json"):
        squad.read_squad(str(path), training=False)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=4))
def test_sentence_pair_tokenization_never_fails(pairs, tokenizer):
    preprocessor = make_preprocessor(tokenizer, 24)
    features = tokenize(preprocessor, tf.constant([a for a, _ in pairs]),
                        tf.constant([b for _, b in pairs]))
    mask = features["padding_mask"].numpy()
    assert mask.shape == (len(pairs), 24)
    assert (mask.sum(1) >= 3).all()  # [CLS] a [SEP] b [SEP], even for empty texts


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(question=TEXT.filter(str.strip), context=TEXT.filter(str.strip), data=st.data())
def test_squad_features_never_fail_and_keep_the_answer(question, context, data, tokenizer):
    start = data.draw(st.integers(0, len(context) - 1))
    end = data.draw(st.integers(start + 1, len(context)))
    example = squad.SquadExample("q", question, context, (context[start:end],), start,
                                 context[start:end])
    features = squad.convert_to_features([example], tokenizer, max_seq_length=32,
                                         doc_stride=8, max_query_length=8, training=True)
    assert features  # even a context without tokens gets a (question-only) window
    for feature in features:
        assert feature.token_ids.shape == (32,)
        if feature.start_position:  # The answer is in this window: its tokens cover it.
            s, e = feature.token_offsets[feature.start_position][0], \
                feature.token_offsets[feature.end_position][1]
            assert s < end and e > start
            assert np.all(feature.token_offsets[feature.start_position:feature.end_position + 1]
                          >= 0)
