"""Extractive question answering: a span head on a BERT backbone."""

import keras
from keras import ops

from keras_adapters.models.adapter_backbone import features

OUTPUTS = ("start_logits", "end_logits")


@keras.saving.register_keras_serializable(package="keras_adapters")
class SpanHead(keras.layers.Layer):
    """Start and end logits for every token (Devlin et al., 2019, §4.2).

    One dense layer maps each token's final hidden state to two scores, the
    logits of that token starting and ending the answer. Padding positions
    get a large negative logit, so they never win and take no probability.

    Args:
        initializer_std: float, std of the truncated-normal kernel
            initializer (BERT's 0.02). Biases start at zero.
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        sequence_output: float `(batch, seq, hidden)`.
        padding_mask: int or bool `(batch, seq)`, 1 on real tokens.

    Returns:
        A dict of float32 `start_logits` and `end_logits`, each
        `(batch, seq)`.
    """

    def __init__(self, initializer_std=0.02, **kwargs):
        super().__init__(**kwargs)
        self.initializer_std = initializer_std
        self.dense = keras.layers.Dense(
            2,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=initializer_std),
            dtype=self.dtype_policy,
            name="span_logits",
        )

    def build(self, sequence_output_shape, padding_mask_shape=None):
        self.dense.build(sequence_output_shape)
        self.built = True

    def call(self, sequence_output, padding_mask):
        logits = ops.cast(self.dense(sequence_output), "float32")
        penalty = (1.0 - ops.cast(padding_mask, "float32")) * -1e9
        return {
            name: logits[..., index] + penalty for index, name in enumerate(OUTPUTS)
        }

    def compute_output_spec(self, sequence_output, padding_mask):
        shape = sequence_output.shape[:-1]
        return {name: keras.KerasTensor(shape, dtype="float32") for name in OUTPUTS}

    def get_config(self):
        config = super().get_config()
        config["initializer_std"] = self.initializer_std
        return config


def build_span_model(backbone, name="span_model"):
    """A functional model from token features to start and end logits.

    Args:
        backbone: a keras-hub encoder backbone (with or without adapters;
            without segment inputs, `segment_ids` is read and ignored). For
            adapter tuning, call `freeze_for_adapter_tuning` on the result:
            the head trains with the adapters and layer norms.
        name: str, the model name.

    Returns:
        A `keras.Model` taking the backbone's int32 `token_ids`,
        `segment_ids` and `padding_mask` `(batch, seq)` and returning
        `{"start_logits", "end_logits"}`, float32 `(batch, seq)`.
    """
    inputs = {
        key: keras.Input(shape=(None,), dtype="int32", name=key)
        for key in ("token_ids", "segment_ids", "padding_mask")
    }
    sequence = features(backbone({key: inputs[key] for key in backbone.input}))["sequence_output"]
    outputs = SpanHead(name="span_head")(sequence, inputs["padding_mask"])
    return keras.Model(inputs, outputs, name=name)


def span_loss():
    """The loss dict for `compile`: mean of start and end cross-entropies.

    Use with `loss_weights=SPAN_LOSS_WEIGHTS`; labels are the int token
    indices of the answer's first and last token, keyed like `OUTPUTS`.
    """
    return {
        name: keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        for name in OUTPUTS
    }


SPAN_LOSS_WEIGHTS = {name: 0.5 for name in OUTPUTS}
