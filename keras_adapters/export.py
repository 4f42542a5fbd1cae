"""SavedModel export with a raw-text serving signature."""

import keras
import tensorflow as tf

from keras_adapters.atomic import atomic_path
from keras_adapters.pipeline import tokenize, trim_to_longest

SEGMENT_NAMES = ("sentence1", "sentence2")


def _outputs(logits, is_regression):
    if is_regression:
        return {"scores": tf.squeeze(logits, axis=-1)}
    return {"probabilities": tf.nn.softmax(logits, axis=-1)}


def export_text_classifier(model, preprocessor, export_dir, *, is_pair, is_regression):
    """Export a text classifier as a SavedModel that takes raw strings.

    The `serving_default` signature takes `sentence1` (and `sentence2` when
    `is_pair`): string tensors of shape `(batch,)`. It tokenizes them exactly
    as in training (the same keras-hub preprocessor and sequence length),
    runs the model and returns `probabilities`, float32 `(batch, classes)`,
    or for regression `scores`, float32 `(batch,)`.

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
        features = trim_to_longest(tokenize(preprocessor, *texts))
        return _outputs(model(features, training=False), is_regression)

    signature = [tf.TensorSpec([None], tf.string, name=name) for name in names]
    serve(*[tf.constant([""])] * len(names))  # Builds any layer not yet called.
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(preprocessor)
    archive.add_endpoint("serving_default", serve, input_signature=signature)
    with atomic_path(export_dir) as temporary:
        archive.write_out(temporary, verbose=False)
