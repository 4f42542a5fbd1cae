"""Tokenization, dynamic padding and batching."""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from keras_adapters.data.pipeline import (
    batch_by_length,
    batch_examples,
    bucket_lengths,
    make_dataset,
    make_preprocessor,
    text_dataset,
    tokenize,
    tokenize_examples,
    trim_to_longest,
)

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the a cat dog sat on mat big".split()
A = ["the cat sat on the mat", "a dog", "big big big big big big big big big big big"]
B = ["the dog", "the big cat sat", "a"]


def _preprocessor(length=40):
    return make_preprocessor(keras_hub.models.BertTokenizer(vocabulary=VOCAB), length)


def test_pairs_keep_both_segments():
    features = tokenize(_preprocessor(), tf.constant(A), tf.constant(B))
    ids = features["token_ids"].numpy()
    segments = features["segment_ids"].numpy()
    cls, sep = VOCAB.index("[CLS]"), VOCAB.index("[SEP]")
    # Row 0: [CLS] the cat sat on the mat [SEP] the dog [SEP]
    assert list(ids[0, :11]) == [cls, 5, 7, 9, 10, 5, 11, sep, 5, 8, sep]
    assert list(segments[0, :11]) == [0] * 8 + [1] * 3
    single = tokenize(_preprocessor(), tf.constant(A))
    assert not single["segment_ids"].numpy().any()


def test_trim_rounds_longest_up_to_multiple_and_keeps_padding_at_the_end():
    features = tokenize(_preprocessor(64), tf.constant(A[:2]), tf.constant(B[:2]))
    trimmed = trim_to_longest(features)
    longest = int(features["padding_mask"].numpy().sum(1).max())
    assert longest == 11
    assert all(v.shape == (2, 16) for v in trimmed.values())
    for name, value in features.items():
        np.testing.assert_array_equal(trimmed[name], value[:, :16])
        assert not value[:, 16:].numpy().any()


def test_trimming_leaves_model_outputs_on_real_tokens_unchanged():
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(VOCAB), num_layers=2, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=64)
    features = tokenize(_preprocessor(64), tf.constant(A), tf.constant(B))
    full = backbone(features)["sequence_output"].numpy()
    trimmed = backbone(trim_to_longest(features))["sequence_output"].numpy()
    mask = features["padding_mask"].numpy().astype(bool)
    np.testing.assert_allclose(trimmed[mask[:, :trimmed.shape[1]]], full[mask], atol=1e-5)


def test_dataset_batches_labels_and_static_shapes():
    labels = np.arange(10, dtype="int32")
    texts = [A[i % 3] for i in range(10)]
    pairs = [B[i % 3] for i in range(10)]
    pre = _preprocessor(40)
    dynamic = list(make_dataset(pre, texts, pairs, labels, 4))
    assert [len(y) for _, y in dynamic] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([y for _, y in dynamic]), labels)
    assert all(x["token_ids"].shape[1] % 16 == 0 for x, _ in dynamic)
    static = list(make_dataset(pre, texts, pairs, labels, 4, training=True, seed=3,
                               static_shapes=True))
    assert [x["token_ids"].shape[0] for x, _ in static] == [4, 4]  # The partial batch dropped.
    assert all(x["token_ids"].shape[1] in bucket_lengths(40) for x, _ in static)
    shuffled = np.concatenate([y for _, y in static])
    assert len(set(shuffled)) == 8 and list(shuffled) != list(range(8))
    unlabelled = make_dataset(pre, texts, None, None, 4)
    assert unlabelled.cardinality() == 3
    assert set(next(iter(unlabelled))) == {"token_ids", "segment_ids", "padding_mask"}


def _lengths_dataset(lengths, seq=64):
    mask = (np.arange(seq)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)
    ids = np.arange(len(lengths), dtype=np.int32)
    return tf.data.Dataset.from_tensor_slices(({"padding_mask": mask}, ids))


def _epoch(dataset):
    return [(x["padding_mask"].numpy().sum(1), y.numpy()) for x, y in dataset]


def test_batch_by_length_sees_every_example_once_in_similar_length_batches():
    lengths = np.random.default_rng(0).integers(1, 65, size=403)
    dataset = batch_by_length(_lengths_dataset(lengths), 8, seed=3, group_batches=10)
    first, second = _epoch(dataset), _epoch(dataset)
    assert int(dataset.cardinality()) == len(first) == 51  # ceil(403 / 8)
    for epoch in (first, second):
        ids = np.concatenate([y for _, y in epoch])
        np.testing.assert_array_equal(np.sort(ids), np.arange(403))
        for batch_lengths, y in epoch:
            np.testing.assert_array_equal(batch_lengths, lengths[y])
        assert sum(len(y) < 8 for _, y in epoch) == 1
    assert not np.array_equal(first[0][1], second[0][1])  # Reshuffled each epoch.
    np.testing.assert_array_equal(  # The same seed gives the same batches.
        np.concatenate([y for _, y in _epoch(
            batch_by_length(_lengths_dataset(lengths), 8, seed=3, group_batches=10))]),
        np.concatenate([y for _, y in first]))
    grouped = np.mean([lengths.max() for lengths, _ in first])
    plain = np.mean([lengths[y].max() for y in np.array_split(
        np.random.default_rng(1).permutation(403), 51)])
    assert grouped < 0.7 * plain  # Batches are far shorter than random ones.


def test_batch_by_length_feeds_every_epoch_of_fit():
    lengths = np.random.default_rng(0).integers(1, 17, size=50)
    dataset = batch_by_length(_lengths_dataset(lengths, seq=16), 8, seed=0, group_batches=2)
    dataset = dataset.map(lambda x, y: (tf.cast(x["padding_mask"], tf.float32),
                                        tf.cast(y, tf.float32)))
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    history = model.fit(dataset, epochs=3, steps_per_epoch=7, verbose=0)
    assert len(history.history["loss"]) == 3


def test_batch_by_length_rejects_unknown_cardinality():
    dataset = _lengths_dataset([3, 4]).filter(lambda x, y: True)
    with pytest.raises(ValueError, match="known cardinality"):
        batch_by_length(dataset, 2)


def test_an_epoch_index_fixes_that_epochs_order_in_any_process():
    lengths = np.random.default_rng(0).integers(1, 65, size=97)

    def order(epoch):
        dataset = batch_by_length(_lengths_dataset(lengths), 8, seed=3, group_batches=4,
                                  epoch=epoch)
        return np.concatenate([ids for _, ids in _epoch(dataset)]).tolist()

    first = order(0)
    assert order(0) == first  # a fresh pipeline (as after a restart) repeats epoch 0
    assert order(1) != first and sorted(order(1)) == sorted(first)
    unfixed = batch_by_length(_lengths_dataset(lengths), 8, seed=3, group_batches=4)
    passes = [np.concatenate([ids for _, ids in _epoch(unfixed)]).tolist() for _ in range(2)]
    assert passes[0] != passes[1]  # without an epoch, each pass reshuffles


def test_text_dataset_groups_by_length_trims_and_keeps_labels_aligned():
    rng = np.random.default_rng(0)
    words = "the a cat dog sat on mat big".split()
    texts = [" ".join(rng.choice(words, n)) for n in rng.integers(1, 60, size=200)]
    preprocessor = _preprocessor(length=64)
    full = tokenize(preprocessor, tf.constant(texts))["token_ids"].numpy()
    labels = np.arange(200)  # Each label names its text.
    train = text_dataset(preprocessor, texts, labels=labels, batch_size=16, training=True, seed=1)
    seen, widths, spans = [], [], []
    for features, y in train:
        ids, y = features["token_ids"].numpy(), y.numpy()
        np.testing.assert_array_equal(ids, full[y, : ids.shape[1]])  # Aligned, only padding cut.
        lengths = features["padding_mask"].numpy().sum(1)
        seen += list(y)
        widths.append(ids.shape[1])
        spans.append(lengths.max() - lengths.min())
        assert ids.shape[1] == -(-lengths.max() // 16) * 16
    assert sorted(seen) == list(range(200))
    assert np.mean(widths) < 0.8 * 64 and np.median(spans) < 15  # Short, similar-length batches.
    again = np.concatenate([y.numpy() for _, y in train])
    assert sorted(again) == list(range(200)) and list(again) != seen  # Reshuffled each pass.
    predict = text_dataset(preprocessor, texts, batch_size=64)
    np.testing.assert_array_equal(
        np.concatenate([b["padding_mask"].numpy().sum(1) for b in predict]),
        (full != 0).sum(1))  # In order.
    with pytest.raises(ValueError, match="one length"):
        text_dataset(preprocessor, texts, labels=labels[:5])
    with pytest.raises(ValueError, match="need labels"):
        text_dataset(preprocessor, texts, training=True)


def test_static_shapes_use_few_lengths_full_batches_and_keep_every_example():
    """The TPU data path: batches of `batch_size` rows cut to one of a few lengths."""
    assert bucket_lengths(128) == (16, 32, 64, 128) and bucket_lengths(100) == (16, 32, 64, 100)
    rng = np.random.default_rng(0)
    words = "the a cat dog sat on mat big".split()
    texts = [" ".join(rng.choice(words, n)) for n in rng.integers(1, 120, size=101)]
    preprocessor = _preprocessor(length=128)
    tokenized = tokenize_examples(preprocessor, texts, None, np.arange(101))
    train = batch_examples(tokenized, 8, training=True, seed=0, epoch=0, static_shapes=True)
    shapes = {tuple(x["token_ids"].shape) for x, _ in train}
    assert {batch for batch, _ in shapes} == {8} and len(list(train)) == 101 // 8
    assert {length for _, length in shapes} <= set(bucket_lengths(128))
    predict = batch_examples(tokenized, 8, static_shapes=True)
    batches = list(predict)
    assert {tuple(x["token_ids"].shape)[0] for x, _ in batches} == {8}  # The last one filled.
    ids = np.concatenate([y.numpy() for _, y in batches])
    np.testing.assert_array_equal(ids[:101], np.arange(101))  # Real rows first, in order.
    masks = [x["padding_mask"].numpy() for x, _ in batches]
    assert masks[-1][101 % 8:].sum() == 0  # The filling rows are empty.
    full = tokenize(preprocessor, tf.constant(texts))["token_ids"].numpy()
    for (x, y), mask in zip(batches, masks):
        real = y.numpy()[: int((mask.sum(1) > 0).sum())]
        np.testing.assert_array_equal(x["token_ids"].numpy()[: len(real)],
                                      full[real, : x["token_ids"].shape[1]])
