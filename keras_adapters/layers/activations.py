"""GELU activations whose backprop keeps only their input.

Autodiff through Keras' GELU (`keras.activations.gelu`, a chain of
elementwise ops) keeps four or five intermediates of the feed-forward
activation, each `(batch, seq, intermediate_dim)`, alive until the backward
pass. At BERT-base size, batch 16 and sequence 128 that is about 0.8 GiB over
the 12 layers. These versions compute the same forward values (the same ops
in the same order: identical values when run eagerly or for inference;
inside a training graph TensorFlow's graph rewrites may round differently,
by about 1e-7) and give the derivative from the input alone, recomputing
the rest in the backward pass, as fused GELU kernels do.

The derivative is a dozen elementwise ops. TensorFlow runs each as its own
pass over memory, so the backward is compiled with XLA (`jit_compile`) into
one pass: at BERT-base size, batch 16 and sequence 128, with its inputs out
of cache as in a training step, 17-20 ms per layer fell to 3-5 ms on a
2-core CPU. Only the backward is compiled; forward and inference graphs
run no XLA.

Derivatives (Hendrycks & Gimpel, "Gaussian Error Linear Units", 2016):
    exact:        d/dx [x Phi(x)] = Phi(x) + x phi(x)
    tanh approx.: with t = tanh(sqrt(2/pi) (x + 0.044715 x^3)),
                  d/dx [x (1 + t) / 2] = (1 + t) / 2
                      + x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2) / 2
"""

import math

import keras
import tensorflow as tf
from keras import ops

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_CUBIC = 0.044715


def _keeping_only_input(forward, derivative, name, doc):
    """`forward` as an activation whose gradient is `derivative(x)`, computed from `x` alone."""
    backward = tf.function(lambda x, upstream: upstream * derivative(x), jit_compile=True)

    @ops.custom_gradient
    def activation(x):
        def grad(upstream):
            return backward(x, upstream)

        return forward(x), grad

    activation.__name__ = activation.__qualname__ = name
    activation.__doc__ = doc
    return activation


def _gelu_derivative(x):
    cdf = 0.5 * ops.erfc(-x * (1.0 / math.sqrt(2.0)))
    return cdf + x * (_INV_SQRT_2PI * ops.exp(-0.5 * ops.square(x)))


def _gelu_approximate_derivative(x):
    # t as the forward computes it; 1 - t^2 = (1 - t)(1 + t) saves ops.
    t = ops.tanh(_SQRT_2_OVER_PI * (x + _CUBIC * ops.power(x, 3)))
    slope = _SQRT_2_OVER_PI + (3.0 * _CUBIC * _SQRT_2_OVER_PI) * ops.square(x)
    return (0.5 + 0.5 * t) * (1.0 + x * (1.0 - t) * slope)


gelu = _keeping_only_input(
    lambda x: keras.activations.gelu(x, approximate=False),
    _gelu_derivative,
    "gelu",
    """Exact GELU, `x * Phi(x)`: Hugging Face BERT's `"gelu"`.

    Args:
        x: float tensor, any shape.

    Returns:
        `keras.activations.gelu(x, approximate=False)`; same shape and
        dtype. Backprop keeps only `x`.
    """,
)

gelu_approximate = _keeping_only_input(
    lambda x: keras.activations.gelu(x, approximate=True),
    _gelu_approximate_derivative,
    "gelu_approximate",
    """tanh-approximate GELU: keras-hub BERT's activation, Hugging Face's `"gelu_new"`.

    Args:
        x: float tensor, any shape.

    Returns:
        `keras.activations.gelu(x, approximate=True)`; same shape and
        dtype. Backprop keeps only `x`.
    """,
)
