"""SavedModel export with a raw-text serving signature."""

import keras
import tensorflow as tf

from keras_adapters.data.pipeline import tokenize, trim_to_longest
from keras_adapters.models.freezing import find_adapter_backbone
from keras_adapters.utils.atomic import atomic_path

SEGMENT_NAMES = ("sentence1", "sentence2")
ADAPTER_DROP_SIGNATURE = "serving_adapter_drop"


def checked_texts(names, texts):
    """Serving text inputs made safe to tokenize.

    Bytes that are not UTF-8 become U+FFFD (the replacement character), so
    such a request gets an answer rather than a tokenizer error; texts of
    every length are fine (the preprocessor truncates them as in training).

    Args:
        names: the inputs' names, for the error message.
        texts: string tensors `(batch,)`, one per name.

    Returns:
        The texts, valid UTF-8.

    Raises:
        tf.errors.InvalidArgumentError: when called, if the inputs hold
            different numbers of texts (the message names them).
    """
    checks = [
        tf.debugging.assert_equal(
            tf.size(text), tf.size(texts[0]),
            message=f"{name} must hold as many texts as {names[0]}")
        for name, text in zip(names[1:], texts[1:])
    ]
    with tf.control_dependencies(checks):
        return [tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace")
                for text in texts]


def _outputs(logits, is_regression):
    logits = tf.cast(logits, tf.float32)  # float32 outputs under mixed_bfloat16 too.
    if is_regression:
        return {"scores": tf.squeeze(logits, axis=-1)}
    return {"probabilities": tf.nn.softmax(logits, axis=-1)}


def write_serving_archive(export_dir, model, serve, input_signature, example_inputs,
                          resources=(), adapter_drop_knob=True):
    """Write a SavedModel serving `serve` as `serving_default`, atomically.

    A model with adapters also gets `serving_adapter_drop`: `serve` with one
    more input, `drop_first_n` (int32 scalar), the number of lowest layers
    whose adapters are skipped for that request: the compute knob of robust
    AdapterDrop (Rücklé et al., 2021, §4).

    Args:
        export_dir: str, replaced atomically if it exists.
        model: the Keras model `serve` calls.
        serve: the serving function, taking tensors matching `input_signature`.
        input_signature: list of named `tf.TensorSpec`.
        example_inputs: tensors for one warm-up call of `serve`, which builds
            any layer not yet called.
        resources: other Keras objects `serve` uses (e.g. a preprocessor).
        adapter_drop_knob: bool, add `serving_adapter_drop` when the model
            has an `AdapterBackbone` with adapters. Defaults to True.
    """
    serve(*example_inputs)
    archive = keras.export.ExportArchive()
    for resource in (model, *resources):
        archive.track(resource)
    archive.add_endpoint("serving_default", serve, input_signature=input_signature)
    try:
        backbone = find_adapter_backbone(model)
    except ValueError:  # No adapter backbone, so no knob.
        backbone = None
    adapter_drop = None
    if adapter_drop_knob and backbone is not None and backbone.adapter_names:
        adapter_drop = backbone.adapter_drop
    if adapter_drop is not None:

        def serve_with_depth(*inputs):
            *inputs, drop_first_n = inputs
            with adapter_drop.override(drop_first_n):
                return serve(*inputs)

        archive.add_endpoint(
            ADAPTER_DROP_SIGNATURE,
            serve_with_depth,
            input_signature=[*input_signature,
                             tf.TensorSpec([], tf.int32, name="drop_first_n")],
        )
    with atomic_path(export_dir) as temporary:
        archive.write_out(temporary, verbose=False)


def export_text_classifier(model, preprocessor, export_dir, *, is_pair, is_regression):
    """Export a text classifier as a SavedModel that takes raw strings.

    The `serving_default` signature takes `sentence1` (and `sentence2` when
    `is_pair`): string tensors of shape `(batch,)`. It tokenizes them exactly
    as in training (the same keras-hub preprocessor and sequence length),
    runs the model and returns `probabilities`, float32 `(batch, classes)`,
    or for regression `scores`, float32 `(batch,)`. It runs the model's
    AdapterDrop depth at export time. Inputs go through `checked_texts`:
    empty and over-long texts are served, bytes that are not UTF-8 are
    replaced, and `sentence1`/`sentence2` of different lengths are refused.

    A model with adapters also gets `serving_adapter_drop`, with one more
    input `drop_first_n` (see `write_serving_archive`).

    Loading it needs `import tensorflow_text` (for the tokenizer's ops) before
    `tf.saved_model.load(export_dir)`.

    Args:
        model: a Keras model from the token-feature dict to logits
            `(batch, classes)` (or `(batch, 1)` for regression).
        preprocessor: the keras-hub preprocessor used in training.
        export_dir: str, written atomically (an existing export is replaced).
        is_pair: bool, whether the task takes two segments.
        is_regression: bool, scores instead of probabilities.
    """
    names = SEGMENT_NAMES[: 2 if is_pair else 1]

    def serve(*texts):
        features = trim_to_longest(tokenize(preprocessor, *checked_texts(names, texts)))
        return _outputs(model(features, training=False), is_regression)

    signature = [tf.TensorSpec([None], tf.string, name=name) for name in names]
    write_serving_archive(export_dir, model, serve, signature,
                          [tf.constant([""])] * len(names), resources=[preprocessor])


def export_multi_task(parallel_model, preprocessor, export_dir, *, is_pair):
    """Export a `ParallelAdapterModel` as one SavedModel serving every task.

    `serving_default` takes raw strings `sentence1` (and `sentence2` when
    `is_pair`), `(batch,)`, tokenizes them in the graph, runs the shared lower
    layers once and each task's layers above them, and returns for each task
    `<task>_probabilities`, float32 `(batch, classes)`, or for a one-output
    (regression) head `<task>_scores`, float32 `(batch,)`. Loading it needs
    `import tensorflow_text` first.

    Args:
        parallel_model: a `ParallelAdapterModel`.
        preprocessor: the keras-hub preprocessor the tasks were trained with.
        export_dir: str, written atomically.
        is_pair: bool, whether the tasks take two segments.
    """
    heads = parallel_model.adapter_model.heads
    names = SEGMENT_NAMES[: 2 if is_pair else 1]

    def serve(*texts):
        features = trim_to_longest(tokenize(preprocessor, *checked_texts(names, texts)))
        logits = parallel_model(features, training=False)
        outputs = {}
        for task in parallel_model.tasks:
            for key, value in _outputs(logits[task], heads[task].num_classes == 1).items():
                outputs[f"{task}_{key}"] = value
        return outputs

    signature = [tf.TensorSpec([None], tf.string, name=name) for name in names]
    write_serving_archive(export_dir, parallel_model, serve, signature,
                          [tf.constant([""])] * len(names), resources=[preprocessor],
                          adapter_drop_knob=False)
