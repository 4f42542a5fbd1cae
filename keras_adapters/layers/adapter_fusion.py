"""AdapterFusion's attention over task adapters (Pfeiffer et al., EACL 2021, §3.2)."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

# AdapterHub's `get_fusion_regularization_loss`: 0.01 * sum((I - W_v)^2).
REGULARIZATION_WEIGHT = 0.01


class _NearIdentity(keras.initializers.Initializer):
    """AdapterHub's `value_initialized`: 1 on the diagonal, 1e-6 elsewhere."""

    def __call__(self, shape, dtype=None):
        return ops.convert_to_tensor(np.full(shape, 1e-6) + np.eye(*shape) * (1 - 1e-6), dtype)


@keras.saving.register_keras_serializable(package="keras_adapters")
class IdentityPenalty(keras.regularizers.Regularizer):
    """`weight * sum((I - W)^2)` of a square kernel W, a float32 scalar.

    AdapterHub's `get_fusion_regularization_loss` for the fusion's value
    matrix. As a Keras regulariser it joins `model.losses` (and so the
    training loss) exactly while the kernel is trainable.
    """

    def __init__(self, weight=REGULARIZATION_WEIGHT):
        self.weight = weight

    def __call__(self, kernel):
        kernel = ops.cast(kernel, "float32")
        return self.weight * ops.sum(ops.square(ops.eye(kernel.shape[0]) - kernel))

    def get_config(self):
        return {"weight": self.weight}


@keras.saving.register_keras_serializable(package="keras_adapters")
class AdapterFusion(keras.layers.Layer):
    """Attention over N adapters' outputs, as AdapterHub computes `Fuse`.

    Pfeiffer et al., "AdapterFusion: Non-Destructive Task Composition for
    Transfer Learning" (EACL 2021), §3.2 and Eq. 3, as `adapters` 1.3.0
    computes it (`BertFusion.forward`). Per token, with hidden size d, the
    query q (d,), the adapters' outputs `o_1..o_N` (each `up_i(...)`, no
    adapter skip) and the residual r (d,):

        k_i = W_k o_i + b_k            (`key`; else k_i = o_i)
        v_i = W_v o_i                  (`value` and `value_before_softmax`;
                                        no bias; else v_i = o_i)
        s_i = (W_q q + b_q) . k_i      (`query`; no 1/sqrt(d) scaling)
        a   = softmax(dropout(s))      (dropout on the scores, training only)
        c   = sum_i a_i v_i + r        (with `value` and not
                                        `value_before_softmax`: W_v sum_i a_i o_i)

    With `residual_before`, r is added to every o_i first (keys included) and
    not to c. AdapterHub's `"dynamic"` fusion is the default; its `"static"`
    one is `value=False`. The kernels start as AdapterHub's (normal, std
    0.02; biases zero; `W_v` the identity with 1e-6 elsewhere when
    `value_initialized`). With `regularization`, `W_v` carries the penalty
    AdapterHub adds to the training loss, `0.01 * sum((I - W_v)^2)`, as a
    Keras regulariser: it is in `layer.losses` while `W_v` is trainable.

    Args:
        query, key, value: bool, whether each projection exists. Default True.
        value_before_softmax: bool. Apply `W_v` to each adapter's output
            (True) or to their weighted sum. Defaults to True.
        value_initialized: bool. Start `W_v` at the identity. Defaults to True.
        residual_before: bool. Add the residual to the adapters' outputs
            instead of the result. Defaults to False.
        regularization: bool, penalise `W_v`'s distance from the identity.
            Defaults to True.
        dropout: float in [0, 1), on the attention scores. Defaults to 0.1
            (BERT's `attention_probs_dropout_prob`, AdapterHub's fallback).
        **kwargs: `keras.layers.Layer` arguments.

    Call arguments:
        query: float `(batch, seq, d)`.
        adapter_outputs: float `(batch, seq, N, d)`, the fused adapters'
            outputs in order.
        residual: float `(batch, seq, d)`.
        training: bool, for the dropout.

    Returns:
        `(fused (batch, seq, d), attention weights (batch, seq, N))`.

    Raises:
        ValueError: with none of `query`, `key` and `value` (AdapterHub then
            builds a layer its forward never uses), or a `dropout` outside
            [0, 1).

    Example:

    ```python
    fusion = keras_adapters.AdapterFusion()
    fused, weights = fusion(query, ops.stack([up_a, up_b], axis=2), residual)
    ```
    """

    def __init__(self, query=True, key=True, value=True, value_before_softmax=True,
                 value_initialized=True, residual_before=False, regularization=True,
                 dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        if not (query or key or value):
            raise ValueError("AdapterFusion needs at least one of query, key and value.")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}.")
        self.use_query, self.use_key, self.use_value = query, key, value
        self.value_before_softmax = value_before_softmax
        self.value_initialized = value_initialized
        self.residual_before = residual_before
        self.regularization = regularization
        self.dropout = dropout
        self.dropout_layer = keras.layers.Dropout(dropout)
        self.query = self.key = self.value = None  # The Dense layers, built by `build`.

    def build(self, query_shape, adapter_outputs_shape=None, residual_shape=None):
        hidden_dim = query_shape[-1]
        normal = keras.initializers.RandomNormal(stddev=0.02)
        for name in ("query", "key", "value"):
            if getattr(self, f"use_{name}"):
                is_value = name == "value"
                dense = keras.layers.Dense(
                    hidden_dim, use_bias=not is_value, dtype=self.dtype_policy, name=name,
                    kernel_initializer=_NearIdentity() if is_value and self.value_initialized
                    else normal,
                    kernel_regularizer=IdentityPenalty() if is_value and self.regularization
                    else None)
                dense.build(query_shape)
                setattr(self, name, dense)
        self.built = True

    def call(self, query, adapter_outputs, residual, training=None):
        if self.residual_before:
            adapter_outputs = adapter_outputs + residual[:, :, None, :]
        queries = query if self.query is None else self.query(query)
        keys = adapter_outputs if self.key is None else self.key(adapter_outputs)
        values = adapter_outputs
        if self.value is not None and self.value_before_softmax:
            values = self.value(adapter_outputs)
        scores = ops.einsum("btd,btnd->btn", queries, keys)
        # tf.nn's softmax: Keras' warns about the one-adapter fusion, a size-1 axis.
        weights = tf.nn.softmax(self.dropout_layer(scores, training=training), axis=-1)
        fused = ops.einsum("btn,btnd->btd", weights, values)
        if self.value is not None and not self.value_before_softmax:
            fused = self.value(fused)
        return (fused if self.residual_before else fused + residual), weights

    def compute_output_shape(self, query_shape, adapter_outputs_shape=None,
                             residual_shape=None):
        return query_shape, (*query_shape[:-1], adapter_outputs_shape[-2])

    def get_config(self):
        config = super().get_config()
        config.update({
            "query": self.use_query, "key": self.use_key, "value": self.use_value,
            "value_before_softmax": self.value_before_softmax,
            "value_initialized": self.value_initialized,
            "residual_before": self.residual_before, "regularization": self.regularization,
            "dropout": self.dropout,
        })
        return config
