"""A keras-hub `BertBackbone` with named bottleneck adapters and AdapterDrop.

The graph is keras-hub's BERT, with `AdapterTransformerEncoder` layers
(keras_adapters.models.adapter_encoder) and one `AdapterDrop` gate (keras_adapters.layers.adapter_drop).
Adapters are added, removed and activated by name, as in AdapterHub's
`adapters` (`add_adapter`, `set_active_adapters`, `delete_adapter`).
"""

import re

import keras
from keras_hub.models import BertBackbone
from keras_hub.src.layers.modeling.position_embedding import PositionEmbedding
from keras_hub.src.models.bert.bert_backbone import bert_kernel_initializer

from keras_adapters.configuration.adapter_config import AdapterConfig
from keras_adapters.layers import activations
from keras_adapters.layers.adapter_drop import AdapterDrop, check_drop_first_n
from keras_adapters.models.adapter_encoder import AdapterTransformerEncoder

HIDDEN_ACTIVATIONS = {
    # keras-hub's BERT default, and Hugging Face's "gelu_new". Both GELUs
    # compute Keras' values and keep only their input for backprop.
    "gelu_approximate": activations.gelu_approximate,
    # Hugging Face BERT checkpoints' "gelu": the exact erf form.
    "gelu": activations.gelu,
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


ADAPTER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_adapter_name(name):
    """Raise ValueError unless `name` can name an adapter (and a Keras layer)."""
    if not isinstance(name, str) or not ADAPTER_NAME.fullmatch(name):
        raise ValueError(
            f"Adapter names are letters, digits, '_', '.' and '-', not starting "
            f"with '.' or '-'; got {name!r}."
        )


@keras.saving.register_keras_serializable(package="keras_adapters")
class AdapterBertBackbone(BertBackbone):
    """A keras-hub `BertBackbone` with named bottleneck adapters.

    The graph is keras-hub's BERT (same inputs, outputs, layer and weight
    names) with two additions: the feed-forward activation is configurable,
    so Hugging Face checkpoints keep their exact GELU, and every transformer
    layer can hold any number of named adapters, of which one runs at a time
    (the active adapter; `ParallelAdapterModel` runs several at once).

    Build it with `add_adapters(backbone, config, name)`, which also copies the
    pretrained weights; add more with `add_adapter`.

    Args:
        vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim,
        dropout, max_sequence_length, num_segments, dtype: as `BertBackbone`.
        hidden_activation: str, a key of `HIDDEN_ACTIVATIONS`. Defaults to
            `"gelu_approximate"`, keras-hub's BERT activation.
        adapters: dict from adapter name to `AdapterConfig.to_dict()`, or None
            for none. Each adapter goes in every layer not in its `leave_out`.
        active_adapter: str or None, the adapter that runs. Defaults to None:
            the pretrained backbone exactly.
        drop_first_n: int in [0, num_layers]. AdapterDrop: the lowest n layers
            run without adapters (at inference, and in training unless
            `robust_adapter_drop`). Defaults to 0. Change it later with
            `set_drop_first_n`.
        robust_adapter_drop: bool. Robust AdapterDrop: every training step
            drops the adapters of the lowest n layers, n drawn uniformly from
            {0, ..., num_layers - 1} (Rücklé et al., 2021, §4). Defaults to
            False.
        seed: int or None, seeds those draws.

    Inputs and outputs are those of `BertBackbone`: int32 `token_ids`,
    `segment_ids` and `padding_mask` of shape `(batch, seq)`; float
    `sequence_output` `(batch, seq, hidden_dim)` and `pooled_output`
    `(batch, hidden_dim)`.

    Raises:
        ValueError: on a bad adapter name, an active adapter not in
            `adapters`, or a bad `drop_first_n`.
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
        adapters=None,
        active_adapter=None,
        drop_first_n=0,
        robust_adapter_drop=False,
        seed=None,
        dtype=None,
        **kwargs,
    ):
        adapters = {name: AdapterConfig.from_dict(c).to_dict() for name, c in (adapters or {}).items()}
        for name in adapters:
            check_adapter_name(name)
        if active_adapter is not None and active_adapter not in adapters:
            raise ValueError(f"active_adapter {active_adapter!r} is not in {sorted(adapters)}.")
        self.adapter_drop = AdapterDrop(
            num_layers,
            drop_first_n,
            robust=robust_adapter_drop,
            seed=seed,
            dtype=dtype,
            name="adapter_drop",
        )
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
                adapters={
                    name: config
                    for name, config in adapters.items()
                    if i not in config["leave_out"]
                },
                active_adapter=active_adapter,
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
        x = self.embed(inputs)
        gates = self.adapter_drop(x)
        for index, transformer_layer in enumerate(self.transformer_layers):
            x = transformer_layer(
                x, padding_mask=inputs["padding_mask"], adapter_gate=gates[index]
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
        self.adapter_configs = adapters
        self.active_adapter = active_adapter
        self.robust_adapter_drop = robust_adapter_drop
        self.seed = seed

    def call(self, inputs, training=None, mask=None, **kwargs):
        self._mark_frozen_inputs()
        gates = self.adapter_drop.static_gates(training) or [None] * self.num_layers
        for layer, gate in zip(self.transformer_layers, gates):
            layer.static_adapter_gate = gate
        try:
            return super().call(inputs, training=training, mask=mask, **kwargs)
        finally:  # Direct calls of the layers (ParallelAdapterModel) use their own gates.
            for layer in self.transformer_layers:
                layer.static_adapter_gate = None

    def _mark_frozen_inputs(self):
        """Cut backprop below the lowest layer with a trainable weight.

        A transformer layer whose input depends on no trainable weight gets
        `stop_input_gradient`: TensorFlow would otherwise keep computing
        gradients down through frozen layers (their AdapterDrop `cond`s are
        stateful ops, which graph pruning keeps). Read when the call is
        traced, like `trainable` itself.
        """
        embeddings = (self.token_embedding, self.position_embedding,
                      self.segment_embedding, self.embeddings_layer_norm)
        frozen = not any(layer.trainable_weights for layer in embeddings)
        for layer in self.transformer_layers:
            layer.stop_input_gradient = frozen
            frozen = frozen and not layer.trainable_weights

    def embed(self, inputs, training=None):
        """The embeddings: token + position + segment, layer norm, dropout.

        Args:
            inputs: dict of int32 `token_ids` and `segment_ids`, `(batch, seq)`.

        Returns:
            float `(batch, seq, hidden_dim)`, the input of the first layer.
        """
        tokens = self.token_embedding(inputs["token_ids"])
        positions = self.position_embedding(tokens)
        segments = self.segment_embedding(inputs["segment_ids"])
        x = self.embeddings_add((tokens, positions, segments))
        x = self.embeddings_layer_norm(x)
        return self.embeddings_dropout(x, training=training)

    @property
    def adapter_names(self):
        """The names of the adapters, in the order they were added."""
        return list(self.adapter_configs)

    @property
    def adapter_config(self):
        """The active adapter's `AdapterConfig.to_dict()`, or None."""
        if self.active_adapter is None:
            return None
        return self.adapter_configs[self.active_adapter]

    def _check_known(self, name):
        if name not in self.adapter_configs:
            raise ValueError(
                f"No adapter named {name!r}; this backbone has {self.adapter_names}."
            )

    def add_adapter(self, name, config=None, set_active=False):
        """Add a new adapter to every layer not in `config.leave_out`.

        Its kernels are drawn fresh, and its layer-norm copies (when
        `config.train_layer_norms`) start as the pretrained layer norms.
        Functions compiled before (`model.compile`) do not see it: compile
        again, as after any change of `trainable`.

        Args:
            name: str, letters, digits, '_', '.' and '-'.
            config: `AdapterConfig`; defaults to `AdapterConfig()`.
            set_active: bool, also make it the active adapter.

        Raises:
            ValueError: if the name is taken or malformed, or `leave_out`
                names a layer beyond `num_layers`.
        """
        check_adapter_name(name)
        if name in self.adapter_configs:
            raise ValueError(f"An adapter named {name!r} already exists.")
        config = (config or AdapterConfig()).to_dict()
        beyond = [i for i in config["leave_out"] if i >= self.num_layers]
        if beyond:
            raise ValueError(f"leave_out {beyond} is beyond the {self.num_layers} layers.")
        for index, layer in enumerate(self.transformer_layers):
            if index not in config["leave_out"]:
                layer.add_adapter(name, config)
        self.adapter_configs[name] = config
        if set_active:
            self.set_active_adapters(name)

    def remove_adapter(self, name):
        """Delete adapter `name` and its weights; if it was active, none is.

        Raises:
            ValueError: if there is no such adapter.
        """
        self._check_known(name)
        for layer in self.transformer_layers:
            if name in layer.adapter_configs:
                layer.remove_adapter(name)
        del self.adapter_configs[name]
        if self.active_adapter == name:
            self.set_active_adapters(None)

    def set_active_adapters(self, name):
        """Run adapter `name` from now on (None: the pretrained backbone).

        Eager calls see it at once. Functions compiled before (`model.fit`,
        `predict`, a `tf.function`) keep the adapter they were traced with:
        call `model.compile` again, as after any change of `trainable`.
        `AdapterModel.set_active_adapters` does that itself.

        Raises:
            ValueError: if there is no such adapter.
        """
        if name is not None:
            self._check_known(name)
        self.active_adapter = name
        for layer in self.transformer_layers:
            layer.active_adapter = name

    def task_adapters(self, name=None):
        """`{layer index: TaskAdapters}` of adapter `name` (default: the active one)."""
        name = self.active_adapter if name is None else name
        self._check_known(name)
        return {
            index: layer.task_adapters[name]
            for index, layer in enumerate(self.transformer_layers)
            if name in layer.task_adapters
        }

    @property
    def adapters(self):
        """The active adapter's `BottleneckAdapter`s, lowest layer first."""
        if self.active_adapter is None:
            return []
        return [a for task in self.task_adapters().values() for a in task.adapters]

    @property
    def drop_first_n(self):
        """AdapterDrop depth: the lowest n layers run without adapters."""
        return self.adapter_drop.drop_first_n

    def set_drop_first_n(self, n):
        """Run the lowest `n` layers without adapters (Rücklé et al., §3).

        Inference sees it at once, in eager and compiled functions alike:
        no rebuild, no weight copy. Training (unless `robust_adapter_drop`)
        reads n when its step is traced, so that the step has no AdapterDrop
        `cond`s (see `AdapterDrop.static_gates`); call
        `freeze_for_adapter_tuning` and `compile` again before training at
        the new n, as after any change of `trainable`. `n = 0` runs every
        adapter; `n = num_layers` computes exactly the backbone without
        adapters.

        Raises:
            ValueError: unless `0 <= n <= num_layers`.
        """
        check_drop_first_n(n, self.num_layers)
        self.adapter_drop.depth.assign(n)

    @property
    def adapter_weights(self):
        """Every weight adapters add: all named adapters' and AdapterDrop's state."""
        weights = list(self.adapter_drop.weights)
        for layer in self.transformer_layers:
            for task in layer.task_adapters.values():
                weights += task.weights
        return weights

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_activation": self.hidden_activation,
                "adapters": self.adapter_configs,
                "active_adapter": self.active_adapter,
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


DEFAULT_ADAPTER = "default"


def add_adapters(backbone, config=None, *, name=DEFAULT_ADAPTER, drop_first_n=0,
                 robust_adapter_drop=False, seed=None):
    """A copy of a BERT backbone with one named adapter, active, in its layers.

    Every transformer layer (except `config.leave_out`) gets an adapter after
    the attention output projection and dropout, and under `houlsby`
    placement one after the feed-forward output projection and dropout, each
    before the residual add and layer norm (Houlsby et al., 2019, Fig. 2;
    google-research/adapter-bert). The source is left untouched. Add more
    adapters with `AdapterBertBackbone.add_adapter`.

    Args:
        backbone: a keras-hub `BertBackbone` (for example from
            `BertBackbone.from_preset` or `keras_adapters.from_pretrained`)
            without adapters.
        config: `AdapterConfig`. Defaults to `AdapterConfig()` (size 64,
            houlsby placement).
        name: str, the adapter's name (a task name, say). Defaults to
            `"default"`.
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
    if getattr(backbone, "adapter_configs", None):
        raise ValueError(
            "The backbone already has adapters; add more with backbone.add_adapter()."
        )
    config = config or AdapterConfig()
    adapted = AdapterBertBackbone(
        **{key: getattr(backbone, key) for key in _BERT_CONFIG_KEYS},
        hidden_activation=getattr(backbone, "hidden_activation", "gelu_approximate"),
        adapters={name: config.to_dict()},
        active_adapter=name,
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
    for layer in adapted.transformer_layers:  # Layer-norm copies start pretrained.
        if name in layer.task_adapters:
            layer.reset_layer_norms(name)
    return adapted
