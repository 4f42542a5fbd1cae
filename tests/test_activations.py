"""The GELUs that keep only their input for backprop, against Keras' own."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_adapters.layers import activations

X = tf.constant(np.linspace(-12.0, 12.0, 48001, dtype="float32"))


def _value_and_gradient(fn, compiled):
    def run():
        with tf.GradientTape() as tape:
            tape.watch(X)
            y = fn(X)
        return y, tape.gradient(y, X)

    return tf.function(run)() if compiled else run()


@pytest.mark.parametrize("fn, approximate", [(activations.gelu, False),
                                             (activations.gelu_approximate, True)])
@pytest.mark.parametrize("compiled", [False, True])
def test_values_are_keras_gelu_and_gradients_match_autodiff(fn, approximate, compiled):
    def reference(x):
        return keras.activations.gelu(x, approximate=approximate)

    value, gradient = _value_and_gradient(fn, compiled)
    expected_value, expected_gradient = _value_and_gradient(reference, compiled)
    # The same ops; in a training graph Grappler may rewrite them differently.
    np.testing.assert_allclose(value.numpy(), expected_value.numpy(), rtol=0,
                               atol=1e-6 if compiled else 0)
    np.testing.assert_allclose(gradient.numpy(), expected_gradient.numpy(), rtol=0, atol=1e-5)
    # The slope goes from 0 through 0.5 at x = 0 to 1, overshooting just above 1.
    assert gradient.numpy()[0] == pytest.approx(0.0, abs=1e-6)
    assert gradient.numpy()[len(X) // 2] == pytest.approx(0.5)
    assert gradient.numpy()[-1] == pytest.approx(1.0)
