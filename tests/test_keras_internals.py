"""Each private Keras or keras-hub API the library uses, checked by name.

An upgrade of Keras or keras-hub that breaks one fails here, naming it,
rather than deep inside a model (keras_adapters/utils/keras_internals.py).
"""

import keras
import numpy as np
import pytest
from keras_hub.layers import TransformerEncoder

from keras_adapters.utils import keras_internals
from tests.helpers import ARCHITECTURES


def _encoder():
    encoder = TransformerEncoder(intermediate_dim=8, num_heads=2)
    encoder.build((None, None, 4))
    return encoder


@pytest.mark.parametrize("slot", sorted(keras_internals.TRANSFORMER_ENCODER_SUBLAYERS))
def test_transformer_encoder_sublayers_exist_and_are_called(slot):
    encoder = _encoder()
    layer = keras_internals.encoder_sublayer(encoder, slot)
    kind = keras.layers.Dropout if "dropout" in slot else keras.layers.LayerNormalization
    assert isinstance(layer, kind)

    calls = []

    class Spy(keras.layers.Layer):
        def call(self, x, training=None):
            calls.append(slot)
            return layer(x)

    with keras_internals.tracking_unlocked(encoder):
        keras_internals.replace_encoder_sublayer(encoder, slot, Spy())
    encoder(np.ones((1, 3, 4), "float32"))
    assert calls == [slot]  # The encoder's call goes through the replaced attribute.


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=[a.name for a in ARCHITECTURES])
def test_backbones_build_their_layers_through_the_module_name(arch):
    built = []

    def factory(**kwargs):
        built.append(kwargs)
        return TransformerEncoder(**kwargs)

    with keras_internals.transformer_encoders_from(arch.backbone_cls, factory):
        backbone = arch.backbone()
    assert len(built) == backbone.num_layers == 2
    assert {"num_heads", "intermediate_dim", "activation", "dropout"} <= set(built[0])
    embeddings = keras.Model(backbone.input,
                             keras_internals.first_call_input(backbone.transformer_layers[0]))
    inputs = arch.inputs()
    x = embeddings({k: inputs[k] for k in backbone.input})
    for layer in backbone.transformer_layers:
        x = layer(x, padding_mask=inputs["padding_mask"])
    outputs = backbone(inputs)
    sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
    np.testing.assert_array_equal(np.asarray(x), np.asarray(sequence))


def test_tracking_unlocked_and_child_layers():
    encoder = _encoder()
    with pytest.raises(ValueError):  # Keras locks a built layer...
        encoder.extra = keras.layers.Dense(2)
    with keras_internals.tracking_unlocked(encoder):  # ...and this unlocks it.
        encoder.extra = keras.layers.Dense(2)
    assert encoder.extra in keras_internals.child_layers(encoder)
    assert keras_internals.encoder_sublayer(encoder, "attention_dropout") in \
        keras_internals.child_layers(encoder)


def test_word_piece_split_patterns():
    for split_on_cjk in (True, False):
        split, keep = keras_internals.word_piece_split_patterns(split_on_cjk)
        assert isinstance(split, str) and isinstance(keep, str) and split != keep


def test_multi_worker_fit_fixes_replace_keras_names_and_leave_other_strategies_alone():
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    keras_internals.enable_multi_worker_fit()
    keras_internals.enable_multi_worker_fit()  # Idempotent.
    assert trainer.reduce_per_replica is keras_internals._reduce_per_replica
    assert trainer.TensorFlowTrainer._maybe_symbolic_build is \
        keras_internals._maybe_symbolic_build
    # Any other strategy gets Keras' own reduction.
    values = {"loss": tf.constant(2.0), "logits": tf.ones((2, 3))}
    reduced = trainer.reduce_per_replica(values, tf.distribute.get_strategy(), "auto")
    assert reduced["loss"] is values["loss"] and reduced["logits"] is values["logits"]
    # Keras' TensorFlow optimizer still sums gradients where SumBeforeClipping skips it.
    assert hasattr(keras.optimizers.AdamW, "_all_reduce_sum_gradients")
    assert hasattr(keras.optimizers.AdamW, "_clip_gradients")
