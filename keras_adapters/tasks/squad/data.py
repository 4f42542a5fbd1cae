"""SQuAD v1.1 reading and BERT input features with character offsets.

The recipe is BERT's (Devlin et al., 2019, section 4.2; google-research/bert
`run_squad.py`): `[CLS] question [SEP] context window [SEP]`, the question
cut to `max_query_length` tokens, the context split into sliding windows
`doc_stride` tokens apart, and each context token scored as "max context" in
the window where it has the most surrounding context (`_check_is_max_context`).

Unlike `run_squad.py`, which maps tokens back to whitespace-separated words,
every context token here carries its `(start, end)` character span in the
context, so an answer is a plain slice of the context (`answer_from_offsets`).
Tokens come from tensorflow-text ops that reproduce the keras-hub
`BertTokenizer` exactly (same ids), while tracking offsets.
"""

import dataclasses
import json
import unicodedata

import keras_hub
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from keras_adapters.data.pipeline import (
    FEATURES,
    batch_by_length,
    batch_examples,
    bucket_lengths,
    cut_to_bucket,
    shuffle,
    trim_to_longest,
)
from keras_adapters.utils import keras_internals

_CHUNK = 1024  # Texts tokenized per TensorFlow call.


class SquadFormatError(ValueError):
    """A SQuAD JSON file does not have the expected format."""


@dataclasses.dataclass(frozen=True)
class SquadExample:
    """One question on one context paragraph.

    Attributes:
        qas_id: the question's `id`.
        question, context: the texts, non-empty.
        answers: every reference answer text (empty when unlabelled).
        answer_start: character offset in `context` of the first answer;
            None unless read with `training=True`.
        answer_text: the first answer's text; None unless `training=True`.
    """

    qas_id: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_start: int | None = None
    answer_text: str | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class SquadFeature:
    """One window of one example, padded to `max_seq_length` (L).

    Attributes:
        example_index: index of the example in the list given to
            `convert_to_features`.
        qas_id: the example's `qas_id`.
        window_index: 0 for the window at the start of the context, then 1...
        token_ids, segment_ids, padding_mask: int32 `(L,)`. Segment 0 is
            `[CLS] question [SEP]`, segment 1 the context and its `[SEP]`.
        token_offsets: int32 `(L, 2)`, the `[start, end)` character span in
            the context of each context token; `(-1, -1)` elsewhere.
        token_is_max_context: bool `(L,)`, True for context tokens that have
            their most context in this window (each context token is True in
            exactly one window).
        start_position, end_position: int, the first and last token of the
            first answer, or 0 (`[CLS]`) when this window does not hold the
            whole answer or when not built for training.
    """

    example_index: int
    qas_id: str
    window_index: int
    token_ids: np.ndarray
    segment_ids: np.ndarray
    padding_mask: np.ndarray
    token_offsets: np.ndarray
    token_is_max_context: np.ndarray
    start_position: int = 0
    end_position: int = 0


def read_squad(path, training):
    """Read the examples of a SQuAD v1.1 JSON file, in file order.

    Args:
        path: a file in the official schema,
            `{"data": [{"paragraphs": [{"context", "qas": [{"id", "question",
            "answers": [{"text", "answer_start"}]}]}]}]}`.
        training: bool. Require answers and check each `answer_start`
            against the context; fill `answer_start` and `answer_text` from
            the first answer. Otherwise `answers` may be absent.

    Returns:
        A list of `SquadExample`.

    Raises:
        SquadFormatError: naming the file, the JSON location (and question
            id) and the field: invalid JSON, a missing or mistyped field, an
            empty question, context or answer, a file without questions, or
            (training) an answer whose text is not at its `answer_start` in
            the context. Nothing is skipped.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise SquadFormatError(f"{path}: invalid JSON: {e}") from e
    except UnicodeDecodeError as e:
        raise SquadFormatError(f"{path}: not UTF-8 text: {e}") from e
    examples = []
    for a, article in enumerate(_field(data, "data", list, path, "top level")):
        for p, paragraph in enumerate(_field(article, "paragraphs", list, path, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            context = _text(paragraph, "context", path, where)
            for q, qa in enumerate(_field(paragraph, "qas", list, path, where)):
                examples.append(_example(qa, context, path, f"{where}.qas[{q}]", training))
    if not examples:
        raise SquadFormatError(f"{path}: no questions.")
    return examples


def _field(obj, name, kind, path, where):
    """`obj[name]`, checked to be of type `kind`."""
    if not isinstance(obj, dict) or name not in obj:
        raise SquadFormatError(f"{path}: {where}: missing field {name!r}.")
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SquadFormatError(
            f"{path}: {where}: field {name!r} is {type(value).__name__}, not {kind.__name__}."
        )
    return value


def _text(obj, name, path, where):
    value = _field(obj, name, str, path, where)
    if not value.strip():
        raise SquadFormatError(f"{path}: {where}: field {name!r} is empty.")
    return value


def _example(qa, context, path, where, training):
    qas_id = _field(qa, "id", str, path, where)
    where = f"{where} (id {qas_id!r})"
    question = _text(qa, "question", path, where)
    if not training and "answers" not in qa:
        return SquadExample(qas_id, question, context, ())
    answers = _field(qa, "answers", list, path, where)
    if training and not answers:
        raise SquadFormatError(f"{path}: {where}: field 'answers' is empty.")
    texts = tuple(_text(answer, "text", path, f"{where}.answers[{i}]")
                  for i, answer in enumerate(answers))
    if not training:
        return SquadExample(qas_id, question, context, texts)
    for i, (answer, text) in enumerate(zip(answers, texts)):
        start = _field(answer, "answer_start", int, path, f"{where}.answers[{i}]")
        if start < 0 or context[start : start + len(text)] != text:
            raise SquadFormatError(
                f"{path}: {where}.answers[{i}]: field 'answer_start' {start} does not "
                f"point at {text!r} in the context (found {context[start : start + len(text)]!r})."
            )
    return SquadExample(qas_id, question, context, texts, answers[0]["answer_start"], texts[0])


class OffsetTokenizer:
    """A keras-hub `BertTokenizer`'s tokenization, with character offsets.

    keras-hub has no offsets API, so this repeats its steps with the
    tensorflow-text ops that have one, on the tokenizer's own vocabulary,
    settings and split patterns: NFD (when stripping accents,
    `normalize_utf8_with_offsets_map`), word split (`regex_split_with_offsets`),
    then per word accent removal, case folding (NFKC_Casefold) and
    `FastWordpieceTokenizer.tokenize_with_offsets`. The ids equal keras-hub's.

    Offsets are converted from UTF-8 bytes to characters of the Python string.
    When normalization changes a word beyond dropping accents (e.g. "ﬁ", "…",
    no-break spaces), each of its pieces gets the whole word's span.

    Attributes:
        special_ids: `(cls, sep, pad)` token ids.

    Raises:
        ValueError: a tokenizer with `split=False` or `special_tokens_in_strings`.
    """

    def __init__(self, tokenizer):
        if not isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer):
            raise ValueError(
                f"SQuAD features need a WordPiece tokenizer (BERT, DistilBERT, ELECTRA); got "
                f"{type(tokenizer).__name__}, whose character offsets are not built yet.")
        if not tokenizer.split or tokenizer.special_tokens_in_strings:
            raise ValueError("Only tokenizers with split=True and "
                             "special_tokens_in_strings=False are supported.")
        self.special_ids = (tokenizer.cls_token_id, tokenizer.sep_token_id,
                            tokenizer.pad_token_id)
        self._lowercase = tokenizer.lowercase
        self._strip_accents = tokenizer.strip_accents
        self._patterns = keras_internals.word_piece_split_patterns(tokenizer.split_on_cjk)
        self._wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=tokenizer.get_vocabulary(),
            suffix_indicator=tokenizer.suffix_indicator,
            unknown_token=tokenizer.oov_token,
            token_out_type=tf.int32,
            no_pretokenization=True,
        )

    def __call__(self, texts):
        """Tokenize a list of N strings.

        Returns:
            N pairs `(ids, offsets)`: int32 `(T,)` and int32 `(T, 2)`, the
            `[start, end)` character span of each token in its text.
        """
        texts = list(texts)
        return [pair for i in range(0, len(texts), _CHUNK)
                for pair in self._tokenize(texts[i : i + _CHUNK])]

    def _tokenize(self, texts):
        offsets_map, words, normalized, word_starts, ids, starts, ends = self._pieces(
            tf.constant(texts, tf.string))
        starts, ends = _realign(words, normalized, starts, ends)
        starts, ends = _input_bytes(offsets_map, word_starts, starts, ends)
        return [
            (np.asarray(i, np.int32),
             _char_index(text)[np.array([s, e], np.int64).T].astype(np.int32))
            for text, i, s, e in zip(texts, ids.merge_dims(1, 2).to_list(),
                                     starts.to_list(), ends.to_list())
        ]

    def tokenize_in_graph(self, strings):
        """Tokenize a string tensor with TensorFlow ops only (for serving).

        Same ids as `__call__`. Offsets are in UTF-8 bytes of the input. A
        word whose normalization changes its byte length (accents, "ﬁ")
        gives every one of its pieces the whole word's span, where `__call__`
        maps accent-stripped words piece by piece.

        Args:
            strings: string tensor `(N,)`.

        Returns:
            `(ids, starts, ends)`: ragged `(N, None)` int32 ids and int64
            `[start, end)` byte offsets.
        """
        offsets_map, words, normalized, word_starts, ids, starts, ends = self._pieces(strings)
        word_of_piece = starts.values.value_rowids()
        word_bytes = tf.strings.length(words.flat_values)
        changed = tf.gather(word_bytes != tf.strings.length(normalized.flat_values),
                            word_of_piece)
        word_end = tf.gather(tf.cast(word_bytes, ends.dtype), word_of_piece)
        starts = starts.with_flat_values(
            tf.where(changed, tf.zeros_like(starts.flat_values), starts.flat_values))
        ends = ends.with_flat_values(tf.where(changed, word_end, ends.flat_values))
        starts, ends = _input_bytes(offsets_map, word_starts, starts, ends)
        return ids.merge_dims(1, 2), starts, ends

    def _pieces(self, strings):
        """The TensorFlow steps: normalize, split words, fold, WordPiece.

        Returns `(offsets_map or None, words, normalized_words, word_starts,
        ids, piece_starts, piece_ends)`; piece offsets are bytes within the
        normalized word.
        """
        offsets_map = None
        if self._strip_accents:
            strings, offsets_map = tf_text.normalize_utf8_with_offsets_map(strings, "NFD")
        words, word_starts, _ = tf_text.regex_split_with_offsets(strings, *self._patterns)
        normalized = words
        if self._strip_accents:
            normalized = tf.strings.regex_replace(normalized, r"\p{Mn}", "")
        if self._lowercase:
            normalized = tf_text.case_fold_utf8(normalized)
        ids, starts, ends = self._wordpiece.tokenize_with_offsets(normalized)
        return offsets_map, words, normalized, word_starts, ids, starts, ends


def _input_bytes(offsets_map, word_starts, starts, ends):
    """Piece offsets within words -> `(N, tokens)` byte offsets in the input."""
    starts = (starts + tf.expand_dims(word_starts, -1)).merge_dims(1, 2)
    ends = (ends + tf.expand_dims(word_starts, -1)).merge_dims(1, 2)
    if offsets_map is not None:  # Bytes of the NFD text -> bytes of the input.
        starts, ends = (_source_offsets(offsets_map, x) for x in (starts, ends))
    return starts, ends


def _realign(words, normalized, starts, ends):
    """Piece byte offsets in `normalized` words -> in the `words` themselves."""
    raw, norm = words.flat_values.numpy(), normalized.flat_values.numpy()
    word_of_piece = starts.values.value_rowids().numpy()
    flat_starts, flat_ends = starts.flat_values.numpy(), ends.flat_values.numpy()
    for w in np.flatnonzero([len(r) != len(n) for r, n in zip(raw, norm)]):
        pieces = word_of_piece == w
        bounds = _kept_char_bytes(raw[w].decode(), norm[w].decode())
        chars = _char_index(norm[w].decode())
        flat_starts[pieces] = bounds[chars[flat_starts[pieces]]] if bounds is not None else 0
        flat_ends[pieces] = bounds[chars[flat_ends[pieces]]] if bounds is not None else len(raw[w])
    return starts.with_flat_values(flat_starts), ends.with_flat_values(flat_ends)


def _source_offsets(offsets_map, offsets):
    """`find_source_offsets` for ragged `(texts, tokens)` offsets.

    Padded to dense, with one spare column: tf-text 2.20 fails on texts
    without tokens, ragged or as a dense tensor of width 0.
    """
    dense = tf.pad(offsets.to_tensor(), [[0, 0], [0, 1]])
    source = tf_text.find_source_offsets(offsets_map, tf.cast(dense, tf.int64))
    return tf.RaggedTensor.from_tensor(source, lengths=offsets.row_lengths())


def _kept_char_bytes(raw, normalized):
    """Byte offsets in `raw` of its non-accent characters, plus its length.

    These line up with the characters of `normalized` when normalization only
    dropped accents (one character each otherwise); else None.
    """
    sizes = [len(c.encode()) for c in raw]
    offsets = np.cumsum([0] + sizes)
    kept = [offsets[i] for i, c in enumerate(raw) if unicodedata.category(c) != "Mn"]
    return np.array(kept + [offsets[-1]]) if len(kept) == len(normalized) else None


def _char_index(text):
    """int `(bytes + 1,)`: the character index of each UTF-8 byte boundary."""
    data = np.frombuffer(text.encode(), np.uint8)
    return np.concatenate([[0], np.cumsum((data & 0xC0) != 0x80)])


def window_spans(num_tokens, max_tokens, doc_stride):
    """BERT's sliding windows: `(start, length)` pairs over `num_tokens` tokens.

    Windows hold at most `max_tokens` tokens, start `doc_stride` tokens apart
    (less when a window is shorter), and stop at the first window reaching
    the end. No tokens (a context of control characters, say) give one empty
    window, as in serving, so every question still gets a prediction.
    """
    if num_tokens == 0:
        return [(0, 0)]
    spans, start = [], 0
    while start < num_tokens:
        length = min(num_tokens - start, max_tokens)
        spans.append((start, length))
        if start + length == num_tokens:
            break
        start += min(length, doc_stride)
    return spans


def max_context_windows(spans, num_tokens):
    """int `(num_tokens,)`: the window where each token has the most context.

    BERT's `_check_is_max_context`: score `min(left, right) + 0.01 * length`,
    ties to the earlier window.
    """
    best, best_score = np.zeros(num_tokens, np.int64), np.full(num_tokens, -np.inf)
    for window, (start, length) in enumerate(spans):
        position = np.arange(start, start + length)
        score = np.minimum(position - start, start + length - 1 - position) + 0.01 * length
        better = position[score > best_score[position]]
        best[better], best_score[better] = window, score[better - start]
    return best


def convert_to_features(examples, tokenizer, max_seq_length=384, doc_stride=128,
                        max_query_length=64, training=False):
    """BERT SQuAD features: one per context window of each example.

    Args:
        examples: list of `SquadExample` (with `answer_start` if training).
        tokenizer: the model's keras-hub `BertTokenizer`.
        max_seq_length: int, the padded length L, special tokens included.
        doc_stride: int, tokens between the starts of successive windows.
        max_query_length: int, questions are cut to this many tokens.
        training: bool, label `start_position` and `end_position`.

    Returns:
        A list of `SquadFeature`, in example then window order.

    Raises:
        ValueError: no room for context tokens, or training examples
            without `answer_start`.
    """
    offset_tokenizer = OffsetTokenizer(tokenizer)
    contexts = list(dict.fromkeys(e.context for e in examples))
    context_tokens = dict(zip(contexts, offset_tokenizer(contexts)))
    questions = offset_tokenizer(e.question for e in examples)
    features = []
    for index, (example, (query, _)) in enumerate(zip(examples, questions)):
        query = query[:max_query_length]
        ids, offsets = context_tokens[example.context]
        max_tokens = max_seq_length - len(query) - 3
        if max_tokens < 1:
            raise ValueError(f"max_seq_length {max_seq_length} leaves no room for context "
                             f"after {len(query)} question tokens.")
        if training and example.answer_start is None:
            raise ValueError(f"Example {example.qas_id!r} has no answer_start to train on.")
        answer = _answer_tokens(example, offsets) if training else None
        spans = window_spans(len(ids), max_tokens, doc_stride)
        best = max_context_windows(spans, len(ids))
        for window, span in enumerate(spans):
            features.append(_feature(index, example.qas_id, window, span, query, ids, offsets,
                                     best == window, answer, max_seq_length,
                                     offset_tokenizer.special_ids))
    return features


def _answer_tokens(example, offsets):
    """First and last context token overlapping the first answer, or None."""
    end = example.answer_start + len(example.answer_text)
    hits = np.flatnonzero((offsets[:, 0] < end) & (offsets[:, 1] > example.answer_start))
    return (hits[0], hits[-1]) if hits.size else None


def _feature(index, qas_id, window, span, query, ids, offsets, is_best, answer, length, specials):
    cls, sep, pad = specials
    start, size = span
    tokens = np.concatenate([[cls], query, [sep], ids[start : start + size], [sep]])
    first = len(query) + 2  # Position of the window's first context token.
    token_ids = np.full(length, pad, np.int32)
    token_ids[: len(tokens)] = tokens
    segment_ids = np.zeros(length, np.int32)
    segment_ids[first : len(tokens)] = 1
    token_offsets = np.full((length, 2), -1, np.int32)
    token_offsets[first : first + size] = offsets[start : start + size]
    is_max_context = np.zeros(length, bool)
    is_max_context[first : first + size] = is_best[start : start + size]
    inside = answer is not None and start <= answer[0] and answer[1] < start + size
    return SquadFeature(
        index, qas_id, window, token_ids, segment_ids,
        (np.arange(length) < len(tokens)).astype(np.int32), token_offsets, is_max_context,
        int(answer[0] - start + first) if inside else 0,
        int(answer[1] - start + first) if inside else 0,
    )


def features_to_dataset(features, batch_size, training=False, seed=None, static_shapes=False,
                        epoch=None):
    """A batched `tf.data.Dataset` of features, for Keras `fit` or `predict`.

    Args:
        features: list of `SquadFeature` of one `max_seq_length` L.
        batch_size: int.
        training: bool. Yield `(x, y)` with `y` the int32 `(batch,)`
            `start_positions` and `end_positions`, reshuffled each epoch in
            batches of similar length (`pipeline.batch_by_length`); otherwise
            `x` only, in feature order.
        seed: int or None, the shuffle seed.
        static_shapes: bool. Every batch holds `batch_size` rows and is cut
            to one of `pipeline.bucket_lengths(L)` (the few shapes a TPU
            compiles for): training batches plainly shuffled, the last partial
            one dropped; for prediction the last one is filled with empty
            rows, whose outputs come after the real ones (keep the first N).
            Otherwise each batch is cut with `pipeline.trim_to_longest`.
        epoch: int or None. None reshuffles at every pass over the data; an
            int gives that training epoch's fixed order (`pipeline.epoch_seed`),
            for resuming mid-epoch.

    Returns:
        A dataset whose `x` is a dict of int32 `(batch, length)` `token_ids`,
        `segment_ids` and `padding_mask`, `length` <= L.
    """
    x = {name: np.stack([getattr(f, name) for f in features]).astype(np.int32)
         for name in FEATURES}
    if not training:
        return batch_examples(tf.data.Dataset.from_tensor_slices(x), batch_size,
                              static_shapes=static_shapes)
    y = {name: np.array([getattr(f, attr) for f in features], np.int32)
         for name, attr in (("start_positions", "start_position"),
                            ("end_positions", "end_position"))}
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if static_shapes:
        dataset = shuffle(dataset, len(features), seed, epoch)
        buckets = bucket_lengths(x["padding_mask"].shape[1])
        dataset = dataset.batch(batch_size, drop_remainder=True).map(
            lambda x, y: (cut_to_bucket(x, buckets), y))
    else:
        dataset = batch_by_length(dataset, batch_size, seed, epoch=epoch).map(
            lambda x, y: (trim_to_longest(x), y))
    return dataset.prefetch(tf.data.AUTOTUNE)


def answer_from_offsets(context, feature, start, end):
    """The context text from token `start` to token `end` of `feature`, inclusive.

    Both must be context tokens (offsets not -1).
    """
    return context[feature.token_offsets[start][0] : feature.token_offsets[end][1]]
