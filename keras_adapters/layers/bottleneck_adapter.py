"""The bottleneck adapter layer (Houlsby et al., 2019, §2.1 and Fig. 2)."""

import keras
import tensorflow as tf

from keras_adapters.layers import activations

# Activation names Keras lacks: the tanh GELU (Hugging Face's and AdapterHub's "gelu_new").
EXTRA_ACTIVATIONS = {"gelu_approximate": activations.gelu_approximate}


@keras.saving.register_keras_serializable(package="keras_adapters")
class BottleneckAdapter(keras.layers.Layer):
    """A bottleneck adapter: `h + up(act(down(h)))`.

    Houlsby et al., "Parameter-Efficient Transfer Learning for NLP" (ICML 2019),
    §2.1 and Fig. 2: a down-projection from the hidden size d to the bottleneck
    size m, a nonlinearity, an up-projection back to d, and an internal skip
    connection. With the default near-zero initialisation the adapter starts
    close to the identity, and it is exactly the identity when both
    projections are zero.

    The adapter has `2*m*d + d + m` parameters: two `d x m` kernels, a bias of
    size m on the down-projection and a bias of size d on the up-projection.

    Args:
        adapter_size: int or None. The bottleneck size m. Give exactly one of
            `adapter_size` and `reduction_factor`.
        reduction_factor: int or None. The ratio d/m; m is `d // factor`,
            computed when the layer is built.
        activation: str or callable. The nonlinearity between the projections:
            a Keras activation name (`"gelu"` is the exact erf GELU) or
            `"gelu_approximate"` (the tanh form). Defaults to `"gelu"`.
        initializer_std: float. Standard deviation of the truncated normal
            (cut at 2 std) that draws both kernels. Defaults to `1e-2`, as in
            google-research/adapter-bert. `0.0` gives zero kernels.
        **kwargs: passed to `keras.layers.Layer` (name, dtype, trainable...).

    Call arguments:
        inputs: float tensor of shape `(..., d)`.

    Returns:
        A tensor with the shape and dtype of `inputs`.

    Raises:
        ValueError: if neither or both of `adapter_size` and
            `reduction_factor` are given, if either is not a positive integer,
            if `initializer_std` is negative, or if the reduction factor leaves
            a bottleneck of size zero.

    Example:

    ```python
    adapter = keras_adapters.BottleneckAdapter(adapter_size=64)
    outputs = adapter(np.ones((2, 16, 384), "float32"))  # (2, 16, 384), near the input
    ```
    """

    def __init__(
        self,
        adapter_size=None,
        reduction_factor=None,
        activation="gelu",
        initializer_std=1e-2,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if (adapter_size is None) == (reduction_factor is None):
            raise ValueError(
                "Give exactly one of `adapter_size` and `reduction_factor`; "
                f"got adapter_size={adapter_size}, "
                f"reduction_factor={reduction_factor}."
            )
        for field, value in (
            ("adapter_size", adapter_size),
            ("reduction_factor", reduction_factor),
        ):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(
                    f"`{field}` must be a positive integer; got {value!r}."
                )
        if initializer_std < 0:
            raise ValueError(
                f"`initializer_std` must be >= 0; got {initializer_std}."
            )
        self.adapter_size = adapter_size
        self.reduction_factor = reduction_factor
        self.activation_name = activation if isinstance(activation, str) else None
        self.activation = EXTRA_ACTIVATIONS.get(self.activation_name) or keras.activations.get(
            activation)
        self.initializer_std = initializer_std
        self.supports_masking = True

    def _kernel_initializer(self):
        if self.initializer_std == 0:
            return keras.initializers.Zeros()
        return keras.initializers.TruncatedNormal(stddev=self.initializer_std)

    def build(self, inputs_shape):
        hidden_dim = inputs_shape[-1]
        bottleneck = self.adapter_size or hidden_dim // self.reduction_factor
        if bottleneck == 0:
            raise ValueError(
                f"reduction_factor={self.reduction_factor} leaves no bottleneck "
                f"for hidden size {hidden_dim}."
            )
        self.bottleneck_dim = bottleneck
        # The two Dense layers hold the kernels and biases (and name their
        # paths, e.g. `down_projection/kernel`); `call` applies them itself.
        self.down_projection = keras.layers.Dense(
            bottleneck,
            kernel_initializer=self._kernel_initializer(),
            dtype=self.dtype_policy,
            name="down_projection",
        )
        self.down_projection.build(inputs_shape)
        self.up_projection = keras.layers.Dense(
            hidden_dim,
            kernel_initializer=self._kernel_initializer(),
            dtype=self.dtype_policy,
            name="up_projection",
        )
        self.up_projection.build((*inputs_shape[:-1], bottleneck))
        self.built = True

    def call(self, inputs):
        # Two 2-D matmuls with `bias_add`: TensorFlow's graph optimizer then
        # fuses each projection with its bias and what follows (the
        # activation, the skip add) into one oneDNN kernel. Through 3-D Dense
        # layers the reshapes around each matmul block that fusion, and plain
        # adds are merged into an AddN that blocks it too.
        hidden = tf.reshape(inputs, (-1, inputs.shape[-1]))
        down, up = self.down_projection, self.up_projection
        bottleneck = self.activation(tf.nn.bias_add(tf.matmul(hidden, down.kernel), down.bias))
        outputs = tf.nn.bias_add(tf.matmul(bottleneck, up.kernel), up.bias) + hidden
        return tf.reshape(outputs, tf.shape(inputs))

    def bottleneck(self, inputs):
        """`up(act(down(inputs)))`, without the skip connection (AdapterHub's `seq_bn` adds it
        elsewhere); same shape and dtype as `inputs`."""
        down, up = self.down_projection, self.up_projection
        return up(self.activation(down(inputs)))

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "adapter_size": self.adapter_size,
                "reduction_factor": self.reduction_factor,
                "activation": self.activation_name
                or keras.activations.serialize(self.activation),
                "initializer_std": self.initializer_std,
            }
        )
        return config
