"""The bottleneck adapter layer (Houlsby et al., 2019, §2.1 and Fig. 2)."""

import keras
import tensorflow as tf
from keras import ops

from keras_adapters.configuration.adapter_config import INIT_WEIGHTS, SCALINGS
from keras_adapters.layers import activations

# Activation names Keras lacks: the tanh GELU (Hugging Face's and AdapterHub's "gelu_new").
EXTRA_ACTIVATIONS = {"gelu_approximate": activations.gelu_approximate}


# PyTorch's epsilon, which AdapterHub's adapter layer norms keep.
ADAPTER_LAYER_NORM_EPSILON = 1e-5


def _torch_linear_default(fan_in):
    """PyTorch's default `Linear` initialisation: `kaiming_uniform_(a=sqrt(5))`
    for the kernel, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both."""
    return keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"), (
        keras.initializers.RandomUniform(-fan_in ** -0.5, fan_in ** -0.5))


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

    The other options are AdapterHub's (`adapters` 1.3.0, `Adapter.forward`),
    for adapters read from or written for it: with them, for input z and
    skip r (z unless given),
    `B(z) = g(z) * scaling * up(act(down(LN_before(z))))` and the output is
    `LN_after(B(z)) + r`, or `LN_after(B(z) + r)` with
    `adapter_residual_before_ln`.

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
        scaling: float, `"learned"` (a trained scalar) or `"channel"` (a
            trained vector of size d), both starting at 1. Defaults to 1.0.
        use_gating: bool. Multiplies `B(z)` by `g(z)`, the mean over axis -2
            (the sequence, padding included) of `sigmoid(z W_g + b_g)`: one
            scalar per example. Needs inputs `(batch, seq, d)`. Defaults to
            False.
        ln_before, ln_after: bool. Layer norms of the adapter's own (epsilon
            1e-5) before the down-projection and after the up-projection.
            Default to False.
        adapter_residual_before_ln: bool. Add the skip before `ln_after`'s
            layer norm. Defaults to False.
        init_weights: `"houlsby"` (truncated normal, `initializer_std`),
            `"bert"` (normal, std 0.02) or `"mam_adapter"` (PyTorch's default
            uniform down-projection, zero up-projection); biases start at
            zero. The gate is drawn as AdapterHub draws it. Defaults to
            `"houlsby"`.
        dropout: float in [0, 1). Dropout on `scaling * up(...)` before the
            gate, in training only. Defaults to 0.0.
        **kwargs: passed to `keras.layers.Layer` (name, dtype, trainable...).

    Call arguments:
        inputs: float tensor z of shape `(..., d)`.
        residual: optional tensor r of the same shape, the skip connection;
            defaults to `inputs`.

    Returns:
        A tensor with the shape and dtype of `inputs`.

    Raises:
        ValueError: if neither or both of `adapter_size` and
            `reduction_factor` are given, if either is not a positive integer,
            if `initializer_std` is negative, on an unknown `scaling` or
            `init_weights`, a `dropout` outside [0, 1), or if the reduction
            factor leaves a bottleneck of size zero.

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
        scaling=1.0,
        use_gating=False,
        ln_before=False,
        ln_after=False,
        adapter_residual_before_ln=False,
        init_weights="houlsby",
        dropout=0.0,
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
        if isinstance(scaling, str) and scaling not in SCALINGS:
            raise ValueError(f"`scaling` must be a number, 'learned' or 'channel'; "
                             f"got {scaling!r}.")
        if not 0 <= dropout < 1:
            raise ValueError(f"`dropout` must be in [0, 1); got {dropout}.")
        if init_weights not in INIT_WEIGHTS:
            raise ValueError(f"`init_weights` must be 'houlsby', 'bert' or 'mam_adapter'; "
                             f"got {init_weights!r}.")
        self.adapter_size = adapter_size
        self.reduction_factor = reduction_factor
        self.activation_name = activation if isinstance(activation, str) else None
        self.activation = EXTRA_ACTIVATIONS.get(self.activation_name) or keras.activations.get(
            activation)
        self.initializer_std = initializer_std
        self.scaling = scaling if isinstance(scaling, str) else float(scaling)
        self.use_gating = use_gating
        self.ln_before = ln_before
        self.ln_after = ln_after
        self.adapter_residual_before_ln = adapter_residual_before_ln
        self.init_weights = init_weights
        self.dropout = dropout
        self.supports_masking = True

    def _initializers(self, fan_in):
        """(down kernel, up kernel) initializers, as `init_weights` says: two
        instances, since an unseeded Keras initializer repeats its draws."""
        def draw():
            if self.init_weights == "bert":
                return keras.initializers.RandomNormal(stddev=0.02)
            if self.initializer_std == 0:
                return keras.initializers.Zeros()
            return keras.initializers.TruncatedNormal(stddev=self.initializer_std)

        if self.init_weights == "mam_adapter":
            return _torch_linear_default(fan_in)[0], keras.initializers.Zeros()
        return draw(), draw()

    @property
    def _plain(self):
        """Whether this is the Houlsby adapter, with none of AdapterHub's options."""
        return (self.scaling == 1.0 and not self.use_gating and not self.ln_before
                and not self.ln_after and not self.dropout)

    def build(self, inputs_shape):
        hidden_dim = inputs_shape[-1]
        bottleneck = self.adapter_size or hidden_dim // self.reduction_factor
        if bottleneck == 0:
            raise ValueError(
                f"reduction_factor={self.reduction_factor} leaves no bottleneck "
                f"for hidden size {hidden_dim}."
            )
        self.bottleneck_dim = bottleneck
        down_init, up_init = self._initializers(hidden_dim)
        # The two Dense layers hold the kernels and biases (and name their
        # paths, e.g. `down_projection/kernel`); `call` applies them itself.
        self.down_projection = keras.layers.Dense(
            bottleneck, kernel_initializer=down_init, dtype=self.dtype_policy,
            name="down_projection")
        self.down_projection.build(inputs_shape)
        self.up_projection = keras.layers.Dense(
            hidden_dim, kernel_initializer=up_init, dtype=self.dtype_policy,
            name="up_projection")
        self.up_projection.build((*inputs_shape[:-1], bottleneck))
        self.norm_before = self.norm_after = self.gate = None
        for option in ("before", "after"):
            if getattr(self, f"ln_{option}"):
                norm = keras.layers.LayerNormalization(
                    epsilon=ADAPTER_LAYER_NORM_EPSILON, dtype=self.dtype_policy,
                    name=f"norm_{option}")
                norm.build(inputs_shape)
                setattr(self, f"norm_{option}", norm)
        if self.use_gating:
            gate_init = ((keras.initializers.RandomNormal(stddev=0.02), "zeros")
                         if self.init_weights != "houlsby" else _torch_linear_default(hidden_dim))
            self.gate = keras.layers.Dense(1, kernel_initializer=gate_init[0],
                                           bias_initializer=gate_init[1],
                                           dtype=self.dtype_policy, name="gate")
            self.gate.build(inputs_shape)
        self.dropout_layer = keras.layers.Dropout(self.dropout) if self.dropout else None
        if isinstance(self.scaling, str):
            self.scaling_weight = self.add_weight(
                shape=(1,) if self.scaling == "learned" else (hidden_dim,),
                initializer="ones", name="scaling")
        self.built = True

    def call(self, inputs, residual=None):
        if not self._plain or residual is not None:
            outputs = self.bottleneck(inputs)
            residual = inputs if residual is None else residual
            if self.adapter_residual_before_ln:
                outputs = outputs + residual
            if self.norm_after is not None:
                outputs = self.norm_after(outputs)
            return outputs if self.adapter_residual_before_ln else outputs + residual
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

    def bottleneck_up(self, inputs):
        """`scaling * up(act(down(LN_before(z))))`: AdapterHub's `up`, what an
        AdapterFusion attends over (no dropout, gate, skip or `ln_after`);
        same shape and dtype as `inputs`."""
        down, up = self.down_projection, self.up_projection
        normed = inputs if self.norm_before is None else self.norm_before(inputs)
        outputs = up(self.activation(down(normed)))
        if isinstance(self.scaling, str):
            return outputs * self.scaling_weight
        return outputs * self.scaling if self.scaling != 1.0 else outputs

    def bottleneck(self, inputs):
        """`B(z) = g(z) * bottleneck_up(z)` (with training dropout), without the
        skip connection or `ln_after`; same shape and dtype as `inputs`."""
        outputs = self.bottleneck_up(inputs)
        if self.dropout_layer is not None:  # In training only (Keras' call context).
            outputs = self.dropout_layer(outputs)
        if self.gate is not None:
            outputs = outputs * ops.mean(ops.sigmoid(self.gate(inputs)), axis=-2, keepdims=True)
        return outputs

    def parallel(self, inputs):
        """A parallel adapter's output (He et al., 2022; AdapterHub's
        `ParallelAdapter.forward`): `LN_after(B(inputs))`, no skip connection.

        `inputs` is the sub-layer's input `(batch, seq, d)`; the result has its
        shape and dtype."""
        outputs = self.bottleneck(inputs)
        return outputs if self.norm_after is None else self.norm_after(outputs)

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
                "scaling": self.scaling,
                "use_gating": self.use_gating,
                "ln_before": self.ln_before,
                "ln_after": self.ln_after,
                "adapter_residual_before_ln": self.adapter_residual_before_ln,
                "init_weights": self.init_weights,
                "dropout": self.dropout,
            }
        )
        return config
