"""keras-hub's `TransformerEncoder` with any number of named adapters.

Adapters sit where google-research/adapter-bert puts them (Houlsby et al.,
2019, Fig. 2): after a sub-layer's output projection and dropout, before the
residual add and layer norm. AdapterHub's other dataflows (`seq_bn`'s
`original_ln_before`, `par_bn`, `original_ln_after=False`; see
`AdapterConfig`) need the sub-layer's input as well: they run in the layer
norm's place, with what AdapterHub's `bottleneck_layer_forward` computes.
`AdapterTransformerEncoder` subclasses keras-hub's `TransformerEncoder`:
`build()` wraps the two dropout and two layer-norm sub-layers, and `call()`
tells the wrappers which adapter runs, so the pretrained computation is
reused untouched.

Each named adapter owns its adapters and, when it trains layer norms, its own
copies of the layer's two layer norms, initialised from the pretrained ones.
Training one adapter therefore changes no weight that another adapter or the
bare backbone uses.

A named AdapterFusion (`LayerFusion`) runs in the same place, in the layer
norm's: the fused adapters' outputs, an `AdapterFusion` over them, and the
layer's add and pretrained layer norm, as AdapterHub's `compose_fuse`.
"""

import keras
from keras import ops
from keras_hub.layers import TransformerEncoder

from keras_adapters.configuration.adapter_config import AdapterConfig
from keras_adapters.configuration.adapter_fusion_config import AdapterFusionConfig
from keras_adapters.layers.adapter_fusion import AdapterFusion
from keras_adapters.layers.bottleneck_adapter import BottleneckAdapter
from keras_adapters.utils.keras_internals import (
    encoder_sublayer,
    replace_encoder_sublayer,
    tracking_unlocked,
)

# The default of `AdapterTransformerEncoder.call(adapter=...)`: the active one.
ACTIVE = "<active adapter>"
SLOTS = ("attention", "feedforward")


@keras.saving.register_keras_serializable(package="keras_adapters")
class LayerAdapter(keras.layers.Layer):
    """One named adapter's weights in one transformer layer.

    Args:
        adapter_config: dict, `AdapterConfig.to_dict()`.
        layer_norm_epsilon: float, the epsilon of the layer-norm copies.
        **kwargs: `keras.layers.Layer` arguments.

    Attributes (after `build`):
        attention_adapter: `BottleneckAdapter` after the attention output
            (Houlsby placement), or None (Pfeiffer placement).
        feedforward_adapter: `BottleneckAdapter` after the feed-forward output.
        config: the `AdapterConfig`, for this layer (per-layer sizes resolved).
        attention_layer_norm, feedforward_layer_norm: this adapter's copies of
            the layer's layer norms when `train_layer_norms`, else None (the
            pretrained ones are used).

    Example:

    ```python
    part = keras_adapters.LayerAdapter(keras_adapters.AdapterConfig(adapter_size=8).to_dict())
    part.build((None, None, 384))
    part.attention_adapter(np.ones((2, 5, 384), "float32"))  # (2, 5, 384)
    ```
    """

    def __init__(self, adapter_config, layer_norm_epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        self.adapter_config = dict(adapter_config)
        self.layer_norm_epsilon = layer_norm_epsilon

    def build(self, inputs_shape):
        config = AdapterConfig.from_dict(self.adapter_config)
        self.config = config
        for slot in SLOTS:
            adapter = None
            if slot == "feedforward" or config.placement == "houlsby":
                adapter = BottleneckAdapter(
                    **config.adapter_kwargs(), dtype=self.dtype_policy, name=f"{slot}_adapter"
                )
                adapter.build(inputs_shape)
            setattr(self, f"{slot}_adapter", adapter)
            layer_norm = None
            if config.train_layer_norms:
                layer_norm = keras.layers.LayerNormalization(
                    epsilon=self.layer_norm_epsilon,
                    dtype=self.dtype_policy,
                    name=f"{slot}_layer_norm",
                )
                layer_norm.build(inputs_shape)
            setattr(self, f"{slot}_layer_norm", layer_norm)
        self.built = True

    @property
    def adapters(self):
        """The `BottleneckAdapter`s, attention first."""
        return [a for a in (self.attention_adapter, self.feedforward_adapter) if a]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "adapter_config": self.adapter_config,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_adapters")
class LayerFusion(keras.layers.Layer):
    """One named AdapterFusion's layers in one transformer layer.

    Args:
        fusion_config: dict, `AdapterFusionConfig.to_dict()`.
        slots: sequence of `"attention"` and `"feedforward"`: the slots whose
            adapters it fuses (where every fused adapter has one).
        dropout: float, the rate for `dropout_prob=None`.
        **kwargs: `keras.layers.Layer` arguments.

    Attributes (after `build`):
        attention_fusion, feedforward_fusion: `AdapterFusion`, or None for a
            slot it does not fuse.

    Example:

    ```python
    part = keras_adapters.LayerFusion(keras_adapters.AdapterFusionConfig().to_dict(),
                                      slots=["feedforward"])
    part.build((None, None, 384))
    part.feedforward_fusion.query.kernel.shape  # (384, 384)
    ```
    """

    def __init__(self, fusion_config, slots, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.fusion_config = dict(fusion_config)
        self.slots = list(slots)
        self.dropout = dropout

    def build(self, inputs_shape):
        config = AdapterFusionConfig.load(self.fusion_config)
        for slot in SLOTS:
            fusion = None
            if slot in self.slots:
                fusion = AdapterFusion(**config.layer_kwargs(self.dropout),
                                       dtype=self.dtype_policy, name=f"{slot}_fusion")
                fusion.build(inputs_shape)
            setattr(self, f"{slot}_fusion", fusion)
        self.built = True

    def get_config(self):
        config = super().get_config()
        config.update({"fusion_config": self.fusion_config, "slots": self.slots,
                       "dropout": self.dropout})
        return config


def _gated(gate, adapted, plain):
    """`adapted()` where the AdapterDrop gate is open (or absent), else `plain()`.

    `gate` is None, a Python bool (decided when traced) or a bool scalar
    tensor (decided when run, by a `cond`).
    """
    if gate is None or gate is True:
        return adapted()
    if gate is False:
        return plain()
    return ops.cond(gate, adapted, plain)


class _Routed(keras.layers.Layer):
    """A pretrained sub-layer that the running adapter may extend or replace.

    `AdapterTransformerEncoder.call` sets `route` to `(part, gate)` for one
    call, `part` a `_SlotPart` of the running `LayerAdapter`; it is stored
    past Keras' tracking, since the `LayerAdapter` belongs to the encoder.
    """

    def __init__(self, pretrained, **kwargs):
        super().__init__(**kwargs)
        self.pretrained = pretrained
        object.__setattr__(self, "route", (None, None))


class _AdaptedDropout(_Routed):
    """Dropout, then the adapter: h becomes `h + A(h)` (Houlsby et al., Fig. 2).

    An adapter whose output needs the sub-layer's input x as well
    (`AdapterConfig.reads_sublayer_input`) runs in the layer-norm wrapper
    instead: this wrapper hands h over in the route and passes zeros on, so
    that keras-hub's residual add gives that wrapper x itself.
    """

    def call(self, inputs, training=None):
        h = self.pretrained(inputs, training=training)
        part, gate = self.route
        if part is None or part.adapter is None:
            return h
        if part.reads_sublayer_input:
            part.handover["h"] = h
            return ops.zeros_like(h)
        return _gated(gate, lambda: part.adapter(h), lambda: h)


class _AdaptedLayerNorm(_Routed):
    """The pretrained layer norm or the adapter's copy of it, and the adapter
    where it reads x: the whole sub-layer tail `_sub_layer_output(h, x)`."""

    def call(self, inputs):
        part, gate = self.route
        if part is None or part.layer_norm is self.pretrained and not part.reads_sublayer_input:
            return self.pretrained(inputs)
        if not part.reads_sublayer_input:
            return _gated(gate, lambda: part.layer_norm(inputs), lambda: self.pretrained(inputs))
        h, x = part.handover.pop("h"), inputs  # The dropout wrapper passed zeros on.
        if isinstance(part, _FusionPart) and part.config.original_ln_after:
            # LN(c + x) or, dropped, LN(h + x): only c or h is gated. Inside the `cond`,
            # TensorFlow's graph optimizer turns the adds c = s + r, c + x into a sum
            # through a temporary variable, which an untaken branch creates and never
            # frees (the next call that takes it fails with AlreadyExistsError).
            return self.pretrained(_gated(gate, lambda: part.fused(h, x), lambda: h) + x)
        return _gated(gate, lambda: part.output(h, x), lambda: self.pretrained(h + x))


def _pre_forward(config, norm, h, x):
    """AdapterHub's `Adapter.pre_forward`: `(z, r)`, the adapter's input and
    the residual its output is added to, for a sequential adapter."""
    inputs = residual = h
    if config.original_ln_before:
        inputs = h + x
        if config.residual_before_ln == "post_add":
            residual = inputs
        inputs = norm(inputs)
    if config.residual_before_ln is False:
        residual = inputs
    return inputs, residual


class _SlotPart:
    """What the two wrappers of one slot run of a `LayerAdapter`, for one call."""

    def __init__(self, layer_adapter, slot, layer_norm):
        self.config = layer_adapter.config
        self.adapter = getattr(layer_adapter, f"{slot}_adapter")
        self.layer_norm = getattr(layer_adapter, f"{slot}_layer_norm") or layer_norm
        self.reads_sublayer_input = (self.adapter is not None
                                     and self.config.reads_sublayer_input)
        self.handover = {}

    def output(self, h, x):
        """AdapterHub's `bottleneck_layer_forward` (`adapters` 1.3.0) for one adapter.

        h: the sub-layer's output after dropout; x: its input (the residual).
        See `AdapterConfig` for the dataflow each field selects.
        """
        config, norm = self.config, self.layer_norm
        if config.is_parallel:
            outputs = self.adapter.parallel(x) + h
        else:
            inputs, residual = _pre_forward(config, norm, h, x)
            outputs = self.adapter(inputs, residual=residual)
        return norm(outputs + x) if config.original_ln_after else outputs


class _FusionPart:
    """What the wrappers of one slot run of a `LayerFusion`, for one call.

    AdapterHub's `compose_fuse`: the last fused adapter's config decides the
    dataflow around the fusion; the pretrained layer norm is used.
    """

    reads_sublayer_input = True

    def __init__(self, layer_fusion, layer_adapters, slot, layer_norm, attention_sink):
        self.adapter = getattr(layer_fusion, f"{slot}_fusion")  # None: the slot is not fused.
        self.adapters = [getattr(part, f"{slot}_adapter") for part in layer_adapters]
        self.config = layer_adapters[-1].config
        self.query_before_ln = layer_fusion.fusion_config["query_before_ln"]
        self.layer_norm = layer_norm
        self.slot = slot
        self.attention_sink = attention_sink
        self.handover = {}

    def fused(self, h, x):
        """c, the fusion of the adapters' `bottleneck_up(z)` plus the residual."""
        inputs, residual = _pre_forward(self.config, self.layer_norm, h, x)
        query = h if self.query_before_ln else inputs
        ups = ops.stack([adapter.bottleneck_up(inputs) for adapter in self.adapters], axis=2)
        fused, weights = self.adapter(query, ups, residual)
        if self.attention_sink is not None:
            self.attention_sink[self.slot] = weights
        return fused

    def output(self, h, x):
        """`LN(c + x)`, or c without `original_ln_after`."""
        fused = self.fused(h, x)
        return self.layer_norm(fused + x) if self.config.original_ln_after else fused


def keras_name(prefix, name):
    """The Keras layer name for adapter, fusion or task `name` (`"fusion", "a,b"` ->
    `fusion_a.b`): TensorFlow's name scopes refuse commas."""
    return f"{prefix}_{name.replace(',', '.')}"


_ROUTED = {
    # TransformerEncoder sub-layer: (its wrapper, the adapter slot it serves)
    "attention_dropout": (_AdaptedDropout, "attention"),
    "attention_layer_norm": (_AdaptedLayerNorm, "attention"),
    "feedforward_dropout": (_AdaptedDropout, "feedforward"),
    "feedforward_layer_norm": (_AdaptedLayerNorm, "feedforward"),
}


@keras.saving.register_keras_serializable(package="keras_adapters")
class AdapterTransformerEncoder(TransformerEncoder):
    """keras-hub's `TransformerEncoder` with named bottleneck adapters.

    Args:
        adapter_configs: dict from adapter name to `AdapterConfig.to_dict()`, or
            None for none. More can be added with `add_adapter`.
        fusion_configs: dict from AdapterFusion name to `{"adapters": [adapter
            names, all in `adapter_configs`], "config":
            AdapterFusionConfig.to_dict()}`, or None for none.
        active_adapter: str or None, the adapter or fusion `call` runs by
            default.
        **kwargs: `TransformerEncoder` arguments.

    Call arguments:
        As `TransformerEncoder.call`, plus:
        adapter: str or None. The adapter or fusion to run; defaults to
            `active_adapter`. None (or a name this layer does not hold, see
            `AdapterConfig.leave_out`) runs the pretrained layer exactly.

    Attributes set by the backbone for one call (the functional graph of a
    keras-hub backbone calls its layers with `padding_mask` alone):
        adapter_gate: the layer's AdapterDrop gate: None or True runs the
            adapter; False, or a bool scalar tensor that is False, runs the
            pretrained layer (no adapter, and the pretrained layer norms
            instead of the adapter's copies). A tensor gate is a `cond` in
            the graph, so it saves the adapters' compute and needs no
            retracing; a Python bool is decided when traced.
        stop_input_gradient: bool, no trainable weight lies below this
            layer, so backprop stops at its input.
        fusion_attention: None, or a dict into which a running fusion puts
            its attention weights `(batch, seq, N)` by slot (ungated calls).

    Example:

    ```python
    encoder = keras_adapters.AdapterTransformerEncoder(
        adapter_configs={"sst2": keras_adapters.AdapterConfig(adapter_size=8).to_dict()},
        active_adapter="sst2", num_heads=2, intermediate_dim=32)
    outputs = encoder(np.ones((2, 5, 16), "float32"))  # (2, 5, 16)
    ```
    """

    def __init__(self, adapter_configs=None, fusion_configs=None, active_adapter=None, **kwargs):
        super().__init__(**kwargs)
        self.adapter_configs = dict(adapter_configs or {})
        self.fusion_configs = dict(fusion_configs or {})
        self.active_adapter = active_adapter
        # Set by the backbone for each call; see the class docstring.
        self.stop_input_gradient = False
        object.__setattr__(self, "adapter_gate", None)
        object.__setattr__(self, "fusion_attention", None)

    def build(self, inputs_shape):
        super().build(inputs_shape)
        self._inputs_shape = tuple(inputs_shape)
        for sublayer, (wrapper, _) in _ROUTED.items():
            pretrained = encoder_sublayer(self, sublayer)
            replace_encoder_sublayer(self, sublayer, wrapper(
                pretrained, dtype=self.dtype_policy, name=f"{pretrained.name}_routed"))
        self.named_adapters = {}
        for name, config in self.adapter_configs.items():
            self.named_adapters[name] = self._make_layer_adapter(name, config)
        self.named_fusions = {}
        for name, fusion in self.fusion_configs.items():
            self.named_fusions[name] = self._make_layer_fusion(name, fusion)

    def _make_layer_fusion(self, name, fusion):
        parts = [self.named_adapters[adapter] for adapter in fusion["adapters"]]
        layer_fusion = LayerFusion(
            fusion["config"],
            slots=[slot for slot in SLOTS if getattr(parts[0], f"{slot}_adapter")],
            dropout=self.dropout,
            dtype=self.dtype_policy,
            name=keras_name("fusion", name),
        )
        layer_fusion.build(self._inputs_shape)
        return layer_fusion

    def _make_layer_adapter(self, name, config):
        layer_adapter = LayerAdapter(
            config,
            layer_norm_epsilon=self.layer_norm_epsilon,
            dtype=self.dtype_policy,
            name=f"adapter_{name}",
        )
        layer_adapter.build(self._inputs_shape)
        self._copy_pretrained_layer_norms(layer_adapter)
        return layer_adapter

    def _copy_pretrained_layer_norms(self, layer_adapter):
        for sublayer, (wrapper, slot) in _ROUTED.items():
            copy = getattr(layer_adapter, f"{slot}_layer_norm")
            if wrapper is _AdaptedLayerNorm and copy is not None:
                copy.set_weights(encoder_sublayer(self, sublayer).pretrained.get_weights())

    def reset_layer_norms(self, name):
        """Set adapter `name`'s layer-norm copies to the pretrained layer norms."""
        self._copy_pretrained_layer_norms(self.named_adapters[name])

    def add_adapter(self, name, config):
        """Add adapter `name` (an `AdapterConfig.to_dict()`); its layer norms copy the pretrained ones."""
        self.adapter_configs[name] = dict(config)
        if self.built:
            # The scope build() runs in, so weight paths match a rebuild's.
            with tracking_unlocked(self), keras.name_scope(self.name, caller=self):
                self.named_adapters[name] = self._make_layer_adapter(name, config)

    def remove_adapter(self, name):
        """Delete adapter `name` and its weights from this layer."""
        del self.adapter_configs[name]
        if self.built:
            with tracking_unlocked(self):
                self.named_adapters.pop(name)  # pop, unlike del, untracks it.
        if self.active_adapter == name:
            self.active_adapter = None

    def add_fusion(self, name, fusion):
        """Add AdapterFusion `name`: `{"adapters": [...], "config": {...}}` (see Args)."""
        self.fusion_configs[name] = {"adapters": list(fusion["adapters"]),
                                     "config": dict(fusion["config"])}
        if self.built:
            with tracking_unlocked(self), keras.name_scope(self.name, caller=self):
                self.named_fusions[name] = self._make_layer_fusion(name, fusion)

    def remove_fusion(self, name):
        """Delete AdapterFusion `name` and its weights from this layer."""
        del self.fusion_configs[name]
        if self.built:
            with tracking_unlocked(self):
                self.named_fusions.pop(name)
        if self.active_adapter == name:
            self.active_adapter = None

    def _parts(self, name, slot, layer_norm):
        """The `_SlotPart` or `_FusionPart` of `name` for one slot, or None."""
        if not self.built or name is None:
            return None
        if name in self.named_fusions:
            layer_fusion = self.named_fusions[name]
            if getattr(layer_fusion, f"{slot}_fusion") is None:
                return None
            adapters = [self.named_adapters[a] for a in self.fusion_configs[name]["adapters"]]
            return _FusionPart(layer_fusion, adapters, slot, layer_norm, self.fusion_attention)
        if name in self.named_adapters:
            return _SlotPart(self.named_adapters[name], slot, layer_norm)
        return None

    def call(self, inputs, *args, adapter=ACTIVE, **kwargs):
        name = self.active_adapter if adapter == ACTIVE else adapter
        wrappers = {sublayer: encoder_sublayer(self, sublayer) for sublayer in _ROUTED}
        for slot in SLOTS:
            dropout, layer_norm = (wrappers[f"{slot}_{kind}"] for kind in ("dropout", "layer_norm"))
            part = self._parts(name, slot, layer_norm.pretrained)
            for wrapper in (dropout, layer_norm):
                object.__setattr__(wrapper, "route", (part, self.adapter_gate))
        if self.stop_input_gradient:
            inputs = ops.stop_gradient(inputs)
        try:
            return super().call(inputs, *args, **kwargs)
        finally:
            for wrapper in wrappers.values():
                object.__setattr__(wrapper, "route", (None, None))

    def get_config(self):
        config = super().get_config()
        config["adapter_configs"] = dict(self.adapter_configs)
        config["fusion_configs"] = dict(self.fusion_configs)
        config["active_adapter"] = self.active_adapter
        return config
