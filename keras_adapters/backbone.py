"""A keras-hub `BertBackbone` with bottleneck adapters and AdapterDrop.

Adapters sit where google-research/adapter-bert puts them (Houlsby et al.,
2019, Fig. 2): after a sub-layer's output projection and dropout, before the
residual add and layer norm. `AdapterTransformerEncoder` subclasses keras-hub's
`TransformerEncoder` and only overrides `build()`, wrapping the two dropout
sub-layers, so the pretrained computation is reused untouched.
"""

import contextlib

import keras
from keras import ops
from keras_hub.models import BertBackbone
from keras_hub.src.layers.modeling.position_embedding import PositionEmbedding
from keras_hub.src.layers.modeling.transformer_encoder import TransformerEncoder
from keras_hub.src.models.bert.bert_backbone import bert_kernel_initializer
from keras_hub.src.utils.keras_utils import gelu_approximate

from keras_adapters.adapter import BottleneckAdapter
from keras_adapters.config import AdapterConfig

HIDDEN_ACTIVATIONS = {
    # keras-hub's BERT default, and Hugging Face's "gelu_new".
    "gelu_approximate": gelu_approximate,
    # Hugging Face BERT checkpoints' "gelu": the exact erf form.
    "gelu": lambda x: keras.activations.gelu(x, approximate=False),
    "relu": keras.activations.relu,
}


def get_hidden_activation(name):
    """The feed-forward activation for a name in `HIDDEN_ACTIVATIONS`.

    Raises:
        ValueError: for any other name.
    """
    if name not in HIDDEN_ACTIVATIONS:
        raise ValueError(
            f"Unknown hidden_activation {name!r}; expected one of "
            f"{sorted(HIDDEN_ACTIVATIONS)}."
        )
    return HIDDEN_ACTIVATIONS[name]


def _check_drop_first_n(n, num_layers):
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= num_layers:
        raise ValueError(
            f"drop_first_n must be an integer in [0, {num_layers}] "
            f"(the number of layers); got {n!r}."
        )


@keras.saving.register_keras_serializable(package="keras_adapters")
class AdapterDrop(keras.layers.Layer):
    """Which transformer layers run their adapters: all but the lowest n.

    AdapterDrop (Rücklé et al., 2021). Specialised AdapterDrop (§3) skips the
    adapters of a fixed number n of lowest layers, in training and at
    inference. Robust AdapterDrop (§4) draws n uniformly from
    {0, ..., num_layers - 1} at every training step, so one model can then
    run at any n. Both are this one gate, computed inside the graph: under
    `tf.function`, any `tf.distribute` strategy and in SavedModels.

    Args:
        num_layers: int, transformer layers in the stack.
        drop_first_n: int in [0, num_layers], n at inference, and in training
            unless `robust`. Held in a non-trainable int32 weight
            `drop_first_n`, so it can change without retracing.
        robust: bool, draw n at every training step. Defaults to False.
        seed: int or None, seeds the draws (a `keras.random.SeedGenerator`,
            whose state is saved with the weights).

    Call arguments:
        inputs: any tensor; only places the layer in a functional graph.
        training: bool. Draw n when `robust`.

    Returns:
        bool `(num_layers,)`: True where the layer runs its adapters.

    Raises:
        ValueError: if `drop_first_n` is not an integer in [0, num_layers].
    """

    def __init__(self, num_layers, drop_first_n=0, robust=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        _check_drop_first_n(drop_first_n, num_layers)
        self.num_layers = num_layers
        self.robust = robust
        self.seed = seed
        self.depth = self.add_weight(
            shape=(),
            dtype="int32",
            initializer=keras.initializers.Constant(drop_first_n),
            trainable=False,
            name="drop_first_n",
        )
        self.seed_generator = keras.random.SeedGenerator(seed) if robust else None
        self._override = None

    @contextlib.contextmanager
    def override(self, drop_first_n):
        """Calls traced inside this context use `drop_first_n` as n.

        For a serving signature that takes n as an input (Rücklé et al.,
        §4: one robust model, the compute chosen at inference): trace the
        model's call inside the context, with n a tensor input.

        Args:
            drop_first_n: int scalar tensor.
        """
        self._override = drop_first_n
        try:
            yield
        finally:
            self._override = None

    def call(self, inputs, training=None):
        if self._override is not None:
            n = ops.cast(self._override, "int32")
        elif self.robust and training:
            n = keras.random.randint(
                (), 0, self.num_layers, dtype="int32", seed=self.seed_generator
            )
        else:
            n = ops.convert_to_tensor(self.depth)
        return ops.greater_equal(ops.arange(self.num_layers, dtype="int32"), n)

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor((self.num_layers,), dtype="bool")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_layers": self.num_layers,
                "drop_first_n": int(ops.convert_to_numpy(self.depth)),
                "robust": self.robust,
                "seed": self.seed,
            }
        )
        return config


class _AdaptedSublayerOutput(keras.layers.Layer):
    """Dropout, then the adapter unless AdapterDrop closes its gate."""

    def __init__(self, dropout, adapter, **kwargs):
        super().__init__(**kwargs)
        self.dropout = dropout
        self.adapter = adapter
        self.gate = None  # Set by AdapterTransformerEncoder.call for one call.

    def call(self, inputs, training=None):
        x = self.dropout(inputs, training=training)
        if self.gate is None:
            return self.adapter(x)
        return ops.cond(self.gate, lambda: self.adapter(x), lambda: x)


@keras.saving.register_keras_serializable(package="keras_adapters")
class AdapterTransformerEncoder(TransformerEncoder):
    """keras-hub's `TransformerEncoder` with bottleneck adapters.

    Args:
        adapter_config: dict (`AdapterConfig.to_dict()`) or None. None builds
            the plain encoder.
        **kwargs: `TransformerEncoder` arguments.

    Call arguments:
        As `TransformerEncoder.call`, plus `adapter_gate`: a bool scalar
        tensor, False to skip this layer's adapters (AdapterDrop), or None
        (the default) to run them. Skipping is a `cond` in the graph: it
        saves the adapters' compute and needs no retracing.
    """

    def __init__(self, adapter_config=None, **kwargs):
        super().__init__(**kwargs)
        self.adapter_config = adapter_config

    @property
    def has_adapters(self):
        return self.adapter_config is not None

    def build(self, inputs_shape):
        super().build(inputs_shape)
        if not self.has_adapters:
            return
        config = AdapterConfig.from_dict(self.adapter_config)
        sublayers = ["_feedforward_dropout"]
        if config.placement == "houlsby":
            sublayers.insert(0, "_self_attention_dropout")
        for attr in sublayers:
            name = attr.strip("_").replace("_dropout", "_adapter")
            adapter = BottleneckAdapter(
                **config.adapter_kwargs(), dtype=self.dtype_policy, name=name
            )
            adapter.build(inputs_shape)
            wrapped = _AdaptedSublayerOutput(
                getattr(self, attr),
                adapter,
                dtype=self.dtype_policy,
                name=f"{name}_output",
            )
            setattr(self, attr, wrapped)

    def call(self, inputs, *args, adapter_gate=None, **kwargs):
        wrapped = self._wrapped_sublayers()
        for sublayer in wrapped:
            sublayer.gate = adapter_gate
        try:
            return super().call(inputs, *args, **kwargs)
        finally:
            for sublayer in wrapped:
                sublayer.gate = None

    def _wrapped_sublayers(self):
        return [
            layer
            for layer in (self._self_attention_dropout, self._feedforward_dropout)
            if isinstance(layer, _AdaptedSublayerOutput)
        ]

    @property
    def adapters(self):
        """The layer's `BottleneckAdapter`s, lowest first."""
        return [layer.adapter for layer in self._wrapped_sublayers()]

    def get_config(self):
        config = super().get_config()
        config["adapter_config"] = self.adapter_config
        return config


@keras.saving.register_keras_serializable(package="keras_adapters")
class AdapterBertBackbone(BertBackbone):
    """A keras-hub `BertBackbone` with bottleneck adapters in its layers.

    The graph is keras-hub's BERT (same inputs, outputs, layer and weight
    names) with two additions: the feed-forward activation is configurable,
    so Hugging Face checkpoints keep their exact GELU, and every transformer
    layer not in `adapter_config["leave_out"]` gets adapters.

    Build it with `add_adapters(backbone, config)`, which also copies the
    pretrained weights, rather than directly.

    Args:
        vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim,
        dropout, max_sequence_length, num_segments, dtype: as `BertBackbone`.
        hidden_activation: str, a key of `HIDDEN_ACTIVATIONS`. Defaults to
            `"gelu_approximate"`, keras-hub's BERT activation.
        adapter_config: dict (`AdapterConfig.to_dict()`) or None for no
            adapters.
        drop_first_n: int in [0, num_layers]. AdapterDrop: the adapters of the
            lowest n layers are skipped (at inference, and in training unless
            `robust_adapter_drop`). Defaults to 0. Change it later with
            `set_drop_first_n`.
        robust_adapter_drop: bool. Robust AdapterDrop: every training step
            skips the adapters of the lowest n layers, n drawn uniformly from
            {0, ..., num_layers - 1} (Rücklé et al., 2021, §4). Defaults to
            False.
        seed: int or None, seeds those draws.

    Inputs and outputs are those of `BertBackbone`: int32 `token_ids`,
    `segment_ids` and `padding_mask` of shape `(batch, seq)`; float
    `sequence_output` `(batch, seq, hidden_dim)` and `pooled_output`
    `(batch, hidden_dim)`.
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        dropout=0.1,
        max_sequence_length=512,
        num_segments=2,
        hidden_activation="gelu_approximate",
        adapter_config=None,
        drop_first_n=0,
        robust_adapter_drop=False,
        seed=None,
        dtype=None,
        **kwargs,
    ):
        self.adapter_drop = None
        if adapter_config is not None:
            leave_out = set(AdapterConfig.from_dict(adapter_config).leave_out)
            self.adapter_drop = AdapterDrop(
                num_layers,
                drop_first_n,
                robust=robust_adapter_drop,
                seed=seed,
                dtype=dtype,
                name="adapter_drop",
            )
        elif drop_first_n or robust_adapter_drop:
            raise ValueError("AdapterDrop needs adapters: adapter_config is None.")
        self.token_embedding = keras.layers.ReversibleEmbedding(
            input_dim=vocabulary_size,
            output_dim=hidden_dim,
            embeddings_initializer=bert_kernel_initializer(),
            dtype=dtype,
            name="token_embedding",
        )
        self.position_embedding = PositionEmbedding(
            initializer=bert_kernel_initializer(),
            sequence_length=max_sequence_length,
            dtype=dtype,
            name="position_embedding",
        )
        self.segment_embedding = keras.layers.Embedding(
            input_dim=num_segments,
            output_dim=hidden_dim,
            embeddings_initializer=bert_kernel_initializer(),
            dtype=dtype,
            name="segment_embedding",
        )
        self.embeddings_add = keras.layers.Add(dtype=dtype, name="embeddings_add")
        self.embeddings_layer_norm = keras.layers.LayerNormalization(
            axis=-1, epsilon=1e-12, dtype=dtype, name="embeddings_layer_norm"
        )
        self.embeddings_dropout = keras.layers.Dropout(
            dropout, dtype=dtype, name="embeddings_dropout"
        )
        self.transformer_layers = [
            AdapterTransformerEncoder(
                adapter_config=(
                    None
                    if adapter_config is None or i in leave_out
                    else adapter_config
                ),
                num_heads=num_heads,
                intermediate_dim=intermediate_dim,
                activation=get_hidden_activation(hidden_activation),
                dropout=dropout,
                layer_norm_epsilon=1e-12,
                kernel_initializer=bert_kernel_initializer(),
                dtype=dtype,
                name=f"transformer_layer_{i}",
            )
            for i in range(num_layers)
        ]
        self.pooled_dense = keras.layers.Dense(
            hidden_dim,
            kernel_initializer=bert_kernel_initializer(),
            activation="tanh",
            dtype=dtype,
            name="pooled_dense",
        )

        inputs = {
            name: keras.Input(shape=(None,), dtype="int32", name=name)
            for name in ("token_ids", "segment_ids", "padding_mask")
        }
        tokens = self.token_embedding(inputs["token_ids"])
        positions = self.position_embedding(tokens)
        segments = self.segment_embedding(inputs["segment_ids"])
        x = self.embeddings_add((tokens, positions, segments))
        x = self.embeddings_layer_norm(x)
        x = self.embeddings_dropout(x)
        gates = None if self.adapter_drop is None else self.adapter_drop(x)
        for index, transformer_layer in enumerate(self.transformer_layers):
            x = transformer_layer(
                x,
                padding_mask=inputs["padding_mask"],
                adapter_gate=None if gates is None else gates[index],
            )
        cls_token_index = 0
        pooled_output = self.pooled_dense(x[:, cls_token_index, :])
        # Skip BertBackbone.__init__, which would build plain encoders.
        super(BertBackbone, self).__init__(
            inputs=inputs,
            outputs={"sequence_output": x, "pooled_output": pooled_output},
            dtype=dtype,
            **kwargs,
        )

        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.max_sequence_length = max_sequence_length
        self.num_segments = num_segments
        self.cls_token_index = cls_token_index
        self.hidden_activation = hidden_activation
        self.adapter_config = adapter_config
        self.robust_adapter_drop = robust_adapter_drop
        self.seed = seed

    @property
    def drop_first_n(self):
        """AdapterDrop depth: the adapters of the lowest n layers are skipped."""
        if self.adapter_drop is None:
            return 0
        return int(ops.convert_to_numpy(self.adapter_drop.depth))

    def set_drop_first_n(self, n):
        """Skip the adapters of the lowest `n` layers (Rücklé et al., §3).

        Takes effect at once for inference, and for training unless
        `robust_adapter_drop`, in eager and compiled functions alike: no
        rebuild, no weight copy. `n = 0` runs every adapter; `n = num_layers`
        computes exactly the backbone without adapters. Layer norms frozen
        by `freeze_for_adapter_tuning` stay as they were.

        Raises:
            ValueError: unless `0 <= n <= num_layers`, or if the backbone has
                no adapters.
        """
        _check_drop_first_n(n, self.num_layers)
        if self.adapter_drop is None:
            raise ValueError("This backbone has no adapters to drop.")
        self.adapter_drop.depth.assign(n)

    @property
    def adapters(self):
        """Every `BottleneckAdapter`, lowest layer first."""
        return [a for layer in self.transformer_layers for a in layer.adapters]

    @property
    def adapter_weights(self):
        """The weights adapters add: their kernels and biases, and AdapterDrop's state."""
        control = [] if self.adapter_drop is None else self.adapter_drop.weights
        return control + [w for adapter in self.adapters for w in adapter.weights]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_activation": self.hidden_activation,
                "adapter_config": self.adapter_config,
                "drop_first_n": self.drop_first_n,
                "robust_adapter_drop": self.robust_adapter_drop,
                "seed": self.seed,
            }
        )
        return config


_BERT_CONFIG_KEYS = (
    "vocabulary_size",
    "num_layers",
    "num_heads",
    "hidden_dim",
    "intermediate_dim",
    "dropout",
    "max_sequence_length",
    "num_segments",
)


def copy_weights(source, target):
    """Copy every weight of `source` into the same-path weight of `target`.

    Args:
        source, target: built Keras layers or models.

    Returns:
        The list of paths of `target` weights that `source` has no weight for.

    Raises:
        ValueError: naming the weight, if a source weight has no counterpart
            in `target` or their shapes differ.
    """
    targets = {w.path: w for w in target.weights}
    for weight in source.weights:
        if weight.path not in targets:
            raise ValueError(f"Weight {weight.path!r} has no counterpart in the target.")
        twin = targets.pop(weight.path)
        if tuple(twin.shape) != tuple(weight.shape):
            raise ValueError(
                f"Weight {weight.path!r} has shape {tuple(weight.shape)} in the "
                f"source but {tuple(twin.shape)} in the target."
            )
        twin.assign(weight)
    return sorted(targets)


def add_adapters(backbone, config=None, drop_first_n=0, robust_adapter_drop=False, seed=None):
    """A copy of a BERT backbone with bottleneck adapters in its layers.

    Every transformer layer (except `config.leave_out`) gets an adapter after
    the attention output projection and dropout, and under `houlsby`
    placement one after the feed-forward output projection and dropout, each
    before the residual add and layer norm (Houlsby et al., 2019, Fig. 2;
    google-research/adapter-bert). The source is left untouched.

    Args:
        backbone: a keras-hub `BertBackbone` (for example from
            `BertBackbone.from_preset` or `keras_adapters.from_pretrained`)
            without adapters.
        config: `AdapterConfig`. Defaults to `AdapterConfig()` (size 64,
            houlsby placement).
        drop_first_n: int. Initial AdapterDrop depth; see
            `AdapterBertBackbone.set_drop_first_n`.
        robust_adapter_drop: bool, draw the depth at every training step
            (robust AdapterDrop); see `AdapterBertBackbone`.
        seed: int or None, seeds those draws.

    Returns:
        An `AdapterBertBackbone` (a `BertBackbone` subclass) holding exact
        copies of every pretrained weight, usable with keras-hub task models
        such as `BertTextClassifier`.

    Raises:
        TypeError: if `backbone` is not a `BertBackbone`.
        ValueError: if it already has adapters, or a weight fails to map.
    """
    if not isinstance(backbone, BertBackbone):
        raise TypeError(f"Expected a keras_hub BertBackbone; got {type(backbone)}.")
    if getattr(backbone, "adapter_config", None) is not None:
        raise ValueError("The backbone already has adapters.")
    config = config or AdapterConfig()
    adapted = AdapterBertBackbone(
        **{key: getattr(backbone, key) for key in _BERT_CONFIG_KEYS},
        hidden_activation=getattr(backbone, "hidden_activation", "gelu_approximate"),
        adapter_config=config.to_dict(),
        drop_first_n=drop_first_n,
        robust_adapter_drop=robust_adapter_drop,
        seed=seed,
        dtype=backbone.dtype_policy,
        name=backbone.name,
    )
    unmatched = set(copy_weights(backbone, adapted))
    unmatched -= {w.path for w in adapted.adapter_weights}
    if unmatched:
        raise ValueError(f"Weights with no pretrained value: {sorted(unmatched)}.")
    return adapted
