"""The library under Keras' `mixed_bfloat16` policy, as TPUs usually train.

Weights stay float32 and compute runs in bfloat16: in the adapters, the
heads and keras-hub's layers alike (Keras' layer normalization computes in
float32 inside, as `keras.ops.layer_normalization` does for half precision). A bfloat16 model trains, and its outputs
are within bfloat16's precision of the float32 model with the same weights.
"""

import keras
import keras_hub
import numpy as np
import pytest

from keras_adapters import AdapterConfig, add_adapters, freeze_for_adapter_tuning
from tests.helpers import ARCHITECTURES

BERT = ARCHITECTURES[0]


def _classifier(backbone, **adapter_drop):
    backbone = add_adapters(backbone, AdapterConfig(adapter_size=4, initializer_std=0.3),
                            **adapter_drop)
    keras.utils.set_random_seed(1)
    return keras_hub.models.BertTextClassifier(backbone, 2, preprocessor=None, dropout=0.0)


@pytest.mark.parametrize("adapter_drop", [{}, {"robust_adapter_drop": True, "seed": 3}],
                         ids=["adapters", "robust_adapter_drop"])
def test_bfloat16_follows_the_policy_trains_and_stays_near_float32(adapter_drop):
    x = BERT.inputs(batch=8, seq=16)
    y = np.random.default_rng(2).integers(0, 2, 8)
    reference = _classifier(BERT.backbone(seed=0), **adapter_drop)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        _check_bfloat16(_classifier(BERT.backbone(seed=0), **adapter_drop), reference, x, y)
    finally:
        keras.config.set_dtype_policy("float32")


def _check_bfloat16(model, reference, x, y):
    model.set_weights(reference.get_weights())

    adapter = model.backbone.adapters[0]
    assert (adapter.compute_dtype, adapter.variable_dtype) == ("bfloat16", "float32")
    assert all(w.dtype == "float32" for w in model.weights if "float" in w.dtype)
    logits = model(x, training=False)
    assert keras.backend.standardize_dtype(logits.dtype) == "bfloat16"
    sequence = np.asarray(keras.ops.cast(model.backbone(x)["sequence_output"], "float32"))
    expected = np.asarray(reference.backbone(x)["sequence_output"])
    assert np.abs(sequence - expected).max() < 0.1  # bfloat16 keeps 8 bits of mantissa.
    assert np.abs(sequence - expected).mean() < 0.02

    freeze_for_adapter_tuning(model)
    model.compile(optimizer=keras.optimizers.Adam(3e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    losses = [float(model.train_on_batch(x, y, return_dict=True)["loss"]) for _ in range(10)]
    assert losses[-1] < 0.9 * losses[0]
