"""SQuAD question answering from raw text inside one TensorFlow graph, for serving.

`answer_questions` repeats the Python path of `squad.convert_to_features`
and `squad_postprocessing.predict_answers` with TensorFlow ops: tokenize
question and context with offsets, cut the context into BERT's windows, run
the span model on every window, pair the top `n_best_size` start and end
logits of each window, keep valid spans (context tokens, start in its
max-context window, at most `max_answer_length` tokens) and return the best
one across windows, cut from the context. `export_question_answerer` writes
it as a SavedModel.
"""

import tensorflow as tf

from keras_adapters.serving.export import checked_texts, write_serving_archive
from keras_adapters.tasks.squad.data import OffsetTokenizer

_TIE_BREAK = 0.01  # BERT's max-context score: min(left, right) + 0.01 * length.


def _windows(question_ids, context_ids, max_seq_length, doc_stride):
    """BERT's context windows, flattened over the batch.

    Returns `(example, start, length)`, int64 `(W,)` each: the example of
    every window, and its first context token and token count. An example
    gets `1 + ceil((T - C) / min(C, doc_stride))` windows (at least one)
    for T context tokens and room for C per window.
    """
    room = max_seq_length - 3 - question_ids.row_lengths()
    step = tf.minimum(room, doc_stride)
    tokens = context_ids.row_lengths()
    count = 1 + tf.maximum(-(-(tokens - room) // step), 0)
    example = tf.repeat(tf.range(tf.size(count, tf.int64)), count)
    start = tf.ragged.range(count).flat_values * tf.gather(step, example)
    length = tf.minimum(tf.gather(room, example), tf.gather(tokens, example) - start)
    return example, start, length


def _max_context(example, start, length, context_ids):
    """Ragged `(W, None)` bool: a window's context token is in its best window.

    BERT's `_check_is_max_context`, ties to the earlier window.
    """
    positions = tf.ragged.range(start, start + length)
    window = tf.cast(positions.value_rowids(), tf.int64)
    token = tf.gather(context_ids.row_starts(), tf.gather(example, window)) + positions.values
    left = positions.values - tf.gather(start, window)
    right = tf.gather(start + length - 1, window) - positions.values
    score = (tf.cast(tf.minimum(left, right), tf.float64)
             + _TIE_BREAK * tf.cast(tf.gather(length, window), tf.float64))
    segments = tf.size(context_ids.flat_values)
    best = tf.gather(tf.math.unsorted_segment_max(score, token, segments), token)
    first = tf.math.unsorted_segment_min(
        tf.where(score == best, window, tf.int64.max), token, segments)
    return positions.with_values(tf.gather(first, token) == window)


def _column(value, rows, dtype):
    """Ragged `(rows, 1)` filled with `value`."""
    return tf.RaggedTensor.from_tensor(tf.fill(tf.stack([rows, 1]), tf.cast(value, dtype)))


def _context_only(query, context, outside):
    """Per window `[outside, outside * len(query), outside, context..., outside]`."""
    mark = _column(outside, query.nrows(), context.dtype)
    question = tf.ragged.map_flat_values(
        lambda values: tf.fill(tf.shape(values), tf.cast(outside, context.dtype)), query)
    return tf.concat([mark, question, mark, context, mark], axis=1)


def _window_features(question_ids, context_ids, context_offsets, windows, specials):
    """`[CLS] question [SEP] window [SEP]` for every window, dense.

    Args:
        question_ids, context_ids: ragged int32 `(B, None)`.
        context_offsets: int64 `(N, 2)`, the byte span of each of the N
            context tokens (`context_ids.flat_values`).
        windows: `(example, start, length)` from `_windows`.
        specials: `(cls, sep, pad)` token ids.

    Returns:
        The model's input dict (int32 `(W, S)`, S the longest window), int64
        `(W, S, 2)` byte offsets in the context (-1 off the context) and bool
        `(W, S)` max-context flags.
    """
    example, start, length = windows
    cls, sep, pad = specials
    rows = tf.size(example, tf.int64)
    tokens = tf.gather(context_ids.row_starts(), example)[:, None] + tf.ragged.range(
        start, start + length)
    query = tf.gather(question_ids, example)
    context = tf.gather(context_ids.flat_values, tokens)
    token_ids = tf.concat([_column(cls, rows, tf.int32), query, _column(sep, rows, tf.int32),
                           context, _column(sep, rows, tf.int32)], axis=1)
    segment_ids = tf.concat([_column(0, rows, tf.int32), tf.zeros_like(query),
                             _column(0, rows, tf.int32), tf.ones_like(context),
                             _column(1, rows, tf.int32)], axis=1)
    offsets = [_context_only(query, tf.gather(context_offsets[:, i], tokens), -1).to_tensor(-1)
               for i in (0, 1)]
    is_max = _context_only(query, _max_context(example, start, length, context_ids), False)
    inputs = {
        "token_ids": token_ids.to_tensor(pad),
        "segment_ids": segment_ids.to_tensor(0),
        "padding_mask": tf.ones_like(token_ids).to_tensor(0),
    }
    return inputs, tf.stack(offsets, axis=-1), is_max.to_tensor(False)


def _best_spans(start_logits, end_logits, offsets, is_max, n_best_size, max_answer_length):
    """The best valid span of every window, as in `predict_answers`.

    Pairs the top `n_best_size` start and end logits (ties to the lower
    index); a span is valid on context tokens, starting in its max-context
    window and at most `max_answer_length` tokens long.

    Returns:
        float32 `(W,)` scores (start + end logit, -inf without a valid span)
        and int `(W,)` start and end token indices.
    """
    k = tf.minimum(n_best_size, tf.shape(start_logits)[1])
    start_top, starts = tf.math.top_k(start_logits, k)
    end_top, ends = tf.math.top_k(end_logits, k)
    is_context = offsets[..., 0] >= 0
    starts_ok = tf.gather(is_context & is_max, starts, batch_dims=1)
    ends_ok = tf.gather(is_context, ends, batch_dims=1)
    span = ends[:, None, :] - starts[:, :, None]
    valid = starts_ok[:, :, None] & ends_ok[:, None, :] & (span >= 0) & (span < max_answer_length)
    scores = tf.where(valid, start_top[:, :, None] + end_top[:, None, :], -float("inf"))
    scores = tf.reshape(scores, [tf.shape(scores)[0], -1])
    best = tf.argmax(scores, axis=1, output_type=tf.int32)
    return (tf.reduce_max(scores, axis=1),
            tf.gather(starts, best // k, batch_dims=1), tf.gather(ends, best % k, batch_dims=1))


def _to_chars(texts, byte_offsets):
    """int32 character offsets of UTF-8 byte offsets `(B, ...)` into `texts` `(B,)`; -1 stays -1."""
    _, char_starts = tf.strings.unicode_decode_with_offsets(texts, "UTF-8")
    bounds = char_starts.to_tensor(tf.int64.max)
    flat = tf.reshape(byte_offsets, [tf.shape(byte_offsets)[0], -1])
    chars = tf.searchsorted(bounds, flat, side="left", out_type=tf.int32)
    return tf.reshape(tf.where(flat >= 0, chars, -1), tf.shape(byte_offsets))


def answer_questions(model, tokenizer, questions, contexts, *, max_seq_length=384,
                     doc_stride=128, max_query_length=64, n_best_size=20, max_answer_length=30):
    """Answer SQuAD-style questions from raw text, in TensorFlow ops only.

    The same recipe as `squad.convert_to_features` and
    `squad_postprocessing.predict_answers`; the answer is the best span over
    all windows of the context (Devlin et al., 2019, §4.2).

    Args:
        model: a span model from `span_head.build_span_model`.
        tokenizer: `squad.OffsetTokenizer` of the model's tokenizer.
        questions, contexts: string tensors `(B,)`, UTF-8.
        max_seq_length, doc_stride, max_query_length, n_best_size,
            max_answer_length: ints, as in training (BERT's defaults).

    Returns:
        A dict: `answer` string `(B,)` ("" when no span is valid);
        `answer_start`, `answer_end` int32 `(B,)` character offsets of the
        answer in the context (-1 when none); `score` float32 `(B,)`, the
        answer's start + end logit; and for the window the answer came from,
        `start_logits`, `end_logits` float32 `(B, S)` and `token_offsets`
        int32 `(B, S, 2)`, each token's `[start, end)` characters in the
        context (-1 off the context), S the longest window of the batch.
    """
    question_ids, _, _ = tokenizer.tokenize_in_graph(questions)
    question_ids = question_ids[:, :max_query_length]
    context_ids, context_starts, context_ends = tokenizer.tokenize_in_graph(contexts)
    windows = _windows(question_ids, context_ids, max_seq_length, doc_stride)
    inputs, offsets, is_max = _window_features(
        question_ids, context_ids,
        tf.stack([context_starts.flat_values, context_ends.flat_values], axis=-1),
        windows, tokenizer.special_ids)
    logits = {name: tf.cast(value, tf.float32)  # float32 under mixed_bfloat16 too.
              for name, value in model(inputs, training=False).items()}
    scores, start, end = _best_spans(logits["start_logits"], logits["end_logits"], offsets,
                                     is_max, n_best_size, max_answer_length)
    by_example = tf.RaggedTensor.from_value_rowids(scores, windows[0], tf.size(questions,
                                                                              tf.int64))
    window = by_example.row_starts() + tf.argmax(by_example.to_tensor(-float("inf")), axis=1)
    score = tf.gather(scores, window)
    found = score > -float("inf")
    offsets = tf.gather(offsets, window)
    start, end = tf.gather(start, window), tf.gather(end, window)

    def answer_bounds(token_offsets):  # (B, 2) [start, end) of the answer; 0 when none.
        bounds = tf.stack([tf.gather(token_offsets[..., 0], start, batch_dims=1),
                           tf.gather(token_offsets[..., 1], end, batch_dims=1)], axis=1)
        return tf.where(found[:, None], bounds, tf.zeros_like(bounds))

    span = answer_bounds(offsets)
    token_offsets = _to_chars(contexts, offsets)
    chars = tf.where(found[:, None], answer_bounds(token_offsets), -1)
    return {
        "answer": tf.strings.substr(contexts, span[:, 0], span[:, 1] - span[:, 0]),
        "answer_start": chars[:, 0],
        "answer_end": chars[:, 1],
        "score": score,
        "start_logits": tf.gather(logits["start_logits"], window),
        "end_logits": tf.gather(logits["end_logits"], window),
        "token_offsets": token_offsets,
    }


def export_question_answerer(model, tokenizer, export_dir, **settings):
    """Export a span model as a SavedModel that answers raw-text questions.

    Its `serving_default` signature takes `question` and `context`, string
    tensors `(batch,)`, and returns the dict of `answer_questions`. Bytes
    that are not UTF-8 are replaced by U+FFFD, and question and context of
    different lengths are refused (`export.checked_texts`). A model
    with adapters also gets `serving_adapter_drop`, with one more input
    `drop_first_n` (see `export.write_serving_archive`). Loading it needs
    `import tensorflow_text` before `tf.saved_model.load`.

    Args:
        model: a span model from `span_head.build_span_model`.
        tokenizer: the model's keras-hub `BertTokenizer`.
        export_dir: str, written atomically (an existing export is replaced).
        **settings: `max_seq_length`, `doc_stride`, `max_query_length`,
            `n_best_size`, `max_answer_length` of `answer_questions`.

    Raises:
        ValueError: if `max_seq_length` leaves no room for context after
            `max_query_length` question tokens.
    """
    room = settings.get("max_seq_length", 384) - 3 - settings.get("max_query_length", 64)
    if room < 1:
        raise ValueError(f"max_seq_length leaves no room for context: {settings}")
    offset_tokenizer = OffsetTokenizer(tokenizer)

    names = ("question", "context")

    def serve(question, context):
        question, context = checked_texts(names, (question, context))
        return answer_questions(model, offset_tokenizer, question, context, **settings)

    signature = [tf.TensorSpec([None], tf.string, name=name) for name in names]
    write_serving_archive(export_dir, model, serve, signature,
                          [tf.constant(["?"]), tf.constant(["."])])
