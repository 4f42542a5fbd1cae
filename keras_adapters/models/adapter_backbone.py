"""Named bottleneck adapters and AdapterDrop in any keras-hub encoder backbone.

One mechanism serves every keras-hub backbone built from keras-hub's
`TransformerEncoder` (BERT, RoBERTa, XLM-RoBERTa, DistilBERT, ELECTRA):
`AdapterBackbone` is mixed into the keras-hub class, whose own constructor
builds the graph, with `AdapterTransformerEncoder` layers
(keras_adapters.models.adapter_encoder) where it builds `TransformerEncoder`
layers. What differs between architectures is declared in one small
`Architecture` table each (keras_adapters.models.architectures).

Adapters are added, removed and activated by name, as in AdapterHub's
`adapters` (`add_adapter`, `set_active_adapters`, `delete_adapter`).
"""

import contextlib
import dataclasses
import itertools
import re

import keras

from keras_adapters.configuration.adapter_config import AdapterConfig
from keras_adapters.configuration.adapter_fusion_config import AdapterFusionConfig
from keras_adapters.layers import activations
from keras_adapters.layers.adapter_drop import AdapterDrop, check_drop_first_n
from keras_adapters.models.adapter_encoder import AdapterTransformerEncoder, keras_name
from keras_adapters.utils.keras_internals import (
    first_call_input,
    tracking_unlocked,
    transformer_encoders_from,
)

HIDDEN_ACTIVATIONS = {
    # keras-hub's BERT and ELECTRA activation, and Hugging Face's "gelu_new".
    # Both GELUs compute Keras' values and keep only their input for backprop.
    "gelu_approximate": activations.gelu_approximate,
    # keras-hub's RoBERTa and DistilBERT activation, and Hugging Face's
    # "gelu": the exact erf form.
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


def layer_configs(adapter_configs, index):
    """`{name: AdapterConfig.to_dict()}` of the adapters in transformer layer
    `index`: those that do not leave it out, with their sizes for it.

    Raises ValueError (`AdapterConfig.for_layer`) when a per-layer size has
    no entry for `index` and no `"default"`."""
    configs = {name: AdapterConfig.from_dict(config).for_layer(index)
               for name, config in adapter_configs.items()}
    return {name: config.to_dict() for name, config in configs.items() if config is not None}


def layer_fusion_configs(fusion_configs, adapter_names, index):
    """`{name: {"adapters": [...], "config": {...}}}` of the AdapterFusions in
    transformer layer `index`: those whose adapters there (a list, or a dict
    from layer index as a string to a list) are all in `adapter_names`."""
    in_layer = {}
    for name, fusion in fusion_configs.items():
        adapters = fusion["adapters"]
        if isinstance(adapters, dict):
            adapters = adapters.get(str(index))
        if adapters and all(adapter in adapter_names for adapter in adapters):
            in_layer[name] = {"adapters": list(adapters), "config": fusion["config"]}
    return in_layer


def check_adapter_name(name):
    """Raise ValueError unless `name` can name an adapter (and a Keras layer)."""
    if not isinstance(name, str) or not ADAPTER_NAME.fullmatch(name):
        raise ValueError(
            f"Adapter names are letters, digits, '_', '.' and '-', not starting "
            f"with '.' or '-'; got {name!r}."
        )


def features(outputs):
    """A keras-hub encoder backbone's outputs as `sequence_output` and `pooled_output`.

    Args:
        outputs: what the backbone returned: the float
            `(batch, seq, hidden_dim)` states (RoBERTa, XLM-RoBERTa,
            DistilBERT), or a dict holding them (BERT, ELECTRA).

    Returns:
        dict: `sequence_output` `(batch, seq, hidden_dim)` and `pooled_output`
        `(batch, hidden_dim)`: the pooler's output where the architecture has
        a pooler, else the first token's state (`<s>` or `[CLS]`).
    """
    if isinstance(outputs, dict):
        return outputs
    return {"sequence_output": outputs, "pooled_output": outputs[:, 0, :]}


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What differs between keras-hub encoder backbones, declared once each.

    Attributes:
        name: str, the architecture's name (`"bert"`, `"roberta"`...).
        backbone_cls: the keras-hub backbone class.
        hidden_activation: str, a key of `HIDDEN_ACTIVATIONS`: the
            feed-forward activation keras-hub's constructor uses.
        pooler: str or None, the attribute of the pooler `Dense` that reads
            the first token (BERT's `pooled_dense`); None where the backbone
            has none and heads read the first token's hidden state.
        vocabulary_size: str, the attribute that holds the vocabulary size.

    Example:

    ```python
    Architecture(name="bert", backbone_cls=keras_hub.models.BertBackbone,
                 hidden_activation="gelu_approximate", pooler="pooled_dense")
    ```
    """

    name: str
    backbone_cls: type
    hidden_activation: str
    pooler: str | None = None
    vocabulary_size: str = "vocabulary_size"


class AdapterBackbone:
    """Mixed into a keras-hub backbone class: named adapters and AdapterDrop.

    The graph is the keras-hub backbone's own (same inputs, outputs, layer
    and weight names), built by its own constructor, with two additions:
    the feed-forward activation is configurable, so Hugging Face checkpoints
    keep their exact GELU, and every transformer layer can hold any number
    of named adapters, of which one runs at a time (the active adapter;
    `ParallelAdapterModel` runs several at once).

    Build one with `add_adapters(backbone, config, name)`, which also copies
    the pretrained weights; add more with `add_adapter`. Each architecture
    module (keras_adapters.models.architectures) defines the subclass, such
    as `AdapterBertBackbone(AdapterBackbone, keras_hub.models.BertBackbone)`,
    and its `architecture`.

    Args:
        *args, **kwargs: the keras-hub backbone's own arguments.
        hidden_activation: str, a key of `HIDDEN_ACTIVATIONS`, or None for
            the keras-hub backbone's own (`architecture.hidden_activation`).
        adapter_configs: dict from adapter name to `AdapterConfig.to_dict()`, or None
            for none. Each adapter goes in every layer not in its `leave_out`.
        fusion_configs: dict from AdapterFusion name to `{"adapters": [names
            of adapters in `adapter_configs`], "config":
            AdapterFusionConfig.to_dict()}`, or None for none; usually added
            with `add_adapter_fusion`. `"adapters"` may instead be a dict from
            layer index (a string) to a list: a fusion pruned per layer.
        active_adapter: str or None, the adapter or AdapterFusion that runs.
            Defaults to None: the pretrained backbone exactly.
        drop_first_n: int in [0, num_layers]. AdapterDrop: the lowest n layers
            run without adapters (at inference, and in training unless
            `robust_adapter_drop`). Defaults to 0. Change it later with
            `set_drop_first_n`.
        robust_adapter_drop: bool. Robust AdapterDrop: every training step
            drops the adapters of the lowest n layers, n drawn uniformly from
            {0, ..., num_layers - 1} (Rücklé et al., 2021, §4). Defaults to
            False.
        seed: int or None, seeds those draws.

    Inputs and outputs are the keras-hub backbone's: int32 `token_ids`,
    `padding_mask` (and `segment_ids` where it has them) of shape
    `(batch, seq)`; float `(batch, seq, hidden_dim)` states (BERT and
    ELECTRA: a dict of `sequence_output` and `pooled_output`).

    Raises:
        ValueError: on a bad adapter name, an active adapter not in
            `adapter_configs`, or a bad `drop_first_n`.

    Example:

    ```python
    backbone, tokenizer = keras_adapters.from_pretrained()  # all-MiniLM-L6-v2
    backbone = keras_adapters.add_adapters(backbone, name="mrpc")  # an AdapterBertBackbone
    backbone.add_adapter("sst2", keras_adapters.AdapterConfig(reduction_factor=16))
    backbone.set_active_adapters("sst2")
    backbone.set_drop_first_n(2)  # AdapterDrop: no adapters in the lowest 2 layers
    ```
    """

    architecture: Architecture  # Set by each architecture's subclass.

    def __init__(self, *args, hidden_activation=None, adapter_configs=None, fusion_configs=None,
                 active_adapter=None, drop_first_n=0, robust_adapter_drop=False, seed=None,
                 **kwargs):
        adapters = {name: AdapterConfig.from_dict(c).to_dict()
                    for name, c in (adapter_configs or {}).items()}
        for name in adapters:
            check_adapter_name(name)
        fusions = {name: {"adapters": fusion["adapters"],
                          "config": AdapterFusionConfig.load(fusion["config"]).to_dict()}
                   for name, fusion in (fusion_configs or {}).items()}
        if active_adapter is not None and active_adapter not in {**adapters, **fusions}:
            raise ValueError(f"active_adapter {active_adapter!r} is not in "
                             f"{sorted({**adapters, **fusions})}.")
        hidden_activation = hidden_activation or self.architecture.hidden_activation
        activation = get_hidden_activation(hidden_activation)

        indices = itertools.count()  # The backbone builds layer 0 first.

        def encoder(**encoder_kwargs):
            index = next(indices)
            in_layer = layer_configs(adapters, index)
            return AdapterTransformerEncoder(
                adapter_configs=in_layer,
                fusion_configs=layer_fusion_configs(fusions, in_layer, index),
                active_adapter=active_adapter,
                **{**encoder_kwargs, "activation": activation},
            )

        with transformer_encoders_from(self.architecture.backbone_cls, encoder):
            super().__init__(*args, **kwargs)
        with tracking_unlocked(self):
            self.adapter_drop = AdapterDrop(
                self.num_layers, drop_first_n, robust=robust_adapter_drop, seed=seed,
                dtype=self.dtype_policy, name="adapter_drop")
        self.hidden_activation = hidden_activation
        self.adapter_configs = adapters
        self.fusion_configs = fusions
        self.active_adapter = active_adapter
        self.robust_adapter_drop = robust_adapter_drop
        self.seed = seed

    @contextlib.contextmanager
    def recording_fusion_attention(self):
        """Calls traced within record the active AdapterFusion's attention weights.

        Yields a list with one dict per transformer layer, which each call
        fills with `{slot: weights}`, float `(batch, seq, N)` tensors for
        the layers and slots the fusion runs in. Within, the AdapterDrop
        gates are decided when traced (`drop_first_n` as it is then), so
        the weights are plain tensors of the traced function. Used by
        `fusion_attention`.
        """
        sinks = [{} for _ in self.transformer_layers]
        for layer, sink in zip(self.transformer_layers, sinks):
            object.__setattr__(layer, "fusion_attention", sink)
        try:
            yield sinks
        finally:
            for layer in self.transformer_layers:
                object.__setattr__(layer, "fusion_attention", None)

    def call(self, inputs, training=None, mask=None, **kwargs):
        self._mark_frozen_inputs()
        gates = [None] * self.num_layers
        if self.active_adapter is not None:
            gates = self.adapter_drop.static_gates(training)
            if self.transformer_layers[0].fusion_attention is not None:  # Recording.
                gates = [index >= self.drop_first_n for index in range(self.num_layers)]
            if gates is None:
                gate = self.adapter_drop(inputs["padding_mask"], training=training)
                gates = [gate[index] for index in range(self.num_layers)]
        for layer, gate in zip(self.transformer_layers, gates):
            object.__setattr__(layer, "adapter_gate", gate)
        try:
            return super().call(inputs, training=training, mask=mask, **kwargs)
        finally:  # Direct calls of the layers (ParallelAdapterModel) run ungated.
            for layer in self.transformer_layers:
                object.__setattr__(layer, "adapter_gate", None)

    def _embeddings_model(self):
        """The backbone's graph from its inputs to the first transformer layer's input."""
        model = self.__dict__.get("_embeddings")
        if model is None:  # Not tracked: its layers are the backbone's own.
            model = keras.Model(self.input, first_call_input(self.transformer_layers[0]))
            object.__setattr__(self, "_embeddings", model)
        return model

    def _mark_frozen_inputs(self):
        """Cut backprop below the lowest layer with a trainable weight.

        A transformer layer whose input depends on no trainable weight gets
        `stop_input_gradient`: TensorFlow would otherwise keep computing
        gradients down through frozen layers (their AdapterDrop `cond`s are
        stateful ops, which graph pruning keeps). Read when the call is
        traced, like `trainable` itself.

        A weight counts by its own `trainable` flag, as in the optimizer's
        `model.trainable_weights`, not by its layer's `trainable_weights`:
        keras-hub's `enable_lora` sets each transformer layer's `trainable`
        to False and then makes the LoRA weights inside it trainable, so that
        list is empty for a layer whose LoRA weights train.
        """
        frozen = not _has_trained_weight(self._embeddings_model())
        for layer in self.transformer_layers:
            layer.stop_input_gradient = frozen
            frozen = frozen and not _has_trained_weight(layer)

    def embed(self, inputs, training=None):
        """The embeddings: the input of the first transformer layer.

        Args:
            inputs: dict of the backbone's int32 inputs, `(batch, seq)`;
                other keys are ignored.

        Returns:
            float `(batch, seq, hidden_dim)`.
        """
        inputs = {name: inputs[name] for name in self.input}
        return self._embeddings_model()(inputs, training=training)

    def features(self, outputs):
        """`features(outputs)`: this backbone's outputs as a dict (see there)."""
        return features(outputs)

    def pool(self, sequence_output):
        """`features` of the last transformer layer's output, as the backbone computes them."""
        if self.architecture.pooler is None:
            return features(sequence_output)
        pooler = getattr(self, self.architecture.pooler)
        return {"sequence_output": sequence_output, "pooled_output": pooler(sequence_output[:, 0, :])}

    @property
    def adapter_names(self):
        """The names of the adapters, in the order they were added."""
        return list(self.adapter_configs)

    @property
    def fusion_names(self):
        """The names of the AdapterFusions, in the order they were added."""
        return list(self.fusion_configs)

    @property
    def adapter_config(self):
        """The active adapter's `AdapterConfig.to_dict()` (an active
        AdapterFusion's `fusion_configs` entry), or None."""
        if self.active_adapter is None:
            return None
        return {**self.adapter_configs, **self.fusion_configs}[self.active_adapter]

    def _check_known(self, name, fusions=False):
        known = {**self.adapter_configs, **(self.fusion_configs if fusions else {})}
        if name not in known:
            raise ValueError(
                f"No adapter{' or AdapterFusion' if fusions else ''} named {name!r}; this "
                f"backbone has adapters {self.adapter_names}"
                + (f" and AdapterFusions {self.fusion_names}." if fusions else ".")
            )

    def _check_fusion(self, name):
        if name not in self.fusion_configs:
            raise ValueError(f"No AdapterFusion named {name!r}; there are {self.fusion_names}.")

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
            ValueError: if the name is taken or malformed, `leave_out` names
                a layer beyond `num_layers`, or a per-layer size has no entry
                for a layer (the backbone is left unchanged).
        """
        check_adapter_name(name)
        if name in self.adapter_configs:
            raise ValueError(f"An adapter named {name!r} already exists.")
        config = (config or AdapterConfig()).to_dict()
        beyond = [i for i in config["leave_out"] if i >= self.num_layers]
        if beyond:
            raise ValueError(f"leave_out {beyond} is beyond the {self.num_layers} layers.")
        # Every layer's config first: a per-layer size missing for one raises here,
        # before any layer has changed.
        per_layer = [layer_configs({name: config}, index).get(name)
                     for index in range(self.num_layers)]
        for layer, layer_config in zip(self.transformer_layers, per_layer):
            if layer_config is not None:  # Not left out.
                layer.add_adapter(name, layer_config)
        self.adapter_configs[name] = config
        if set_active:
            self.set_active_adapters(name)

    def remove_adapter(self, name):
        """Delete adapter `name` and its weights; if it was active, none is.

        Raises:
            ValueError: if there is no such adapter.
        """
        self._check_known(name)
        users = [fusion for fusion in self.fusion_configs if name in self.fused_adapters(fusion)]
        if users:
            raise ValueError(f"Adapter {name!r} is fused by AdapterFusions {users}; "
                             "remove them first (remove_adapter_fusion).")
        for layer in self.transformer_layers:
            if name in layer.adapter_configs:
                layer.remove_adapter(name)
        del self.adapter_configs[name]
        if self.active_adapter == name:
            self.set_active_adapters(None)

    def fused_adapters(self, fusion):
        """The adapters AdapterFusion `fusion` fuses (in any layer), in order."""
        adapters = self.fusion_configs[fusion]["adapters"]
        if isinstance(adapters, dict):
            return list(dict.fromkeys(a for names in adapters.values() for a in names))
        return list(adapters)

    def add_adapter_fusion(self, adapters, config="dynamic", name=None, set_active=False):
        """Add an AdapterFusion over `adapters` (Pfeiffer et al., 2021, §3.2).

        AdapterHub's `add_adapter_fusion`: in every transformer layer that
        holds all the adapters, and in each slot where they all have one, an
        `AdapterFusion` attends over their outputs (`LayerFusion`). Its
        weights are drawn fresh. Run it with `set_active_adapters(name)`;
        train it with `freeze_for_adapter_tuning(model, name)` (or
        `AdapterModel.train_adapter_fusion`).

        Args:
            adapters: list of adapter names, or one string `"a,b"`; or a dict
                from layer index (a string) to such a list, for a fusion
                pruned per layer (`prune_adapter_fusion`), absent from
                layers without an entry.
            config: `AdapterFusionConfig`, a dict of its fields, or
                `"dynamic"` (the default) or `"static"`.
            name: str or None. Defaults to AdapterHub's, the names joined by
                commas (`"a,b"`).
            set_active: bool, also make it active.

        Returns:
            str, the fusion's name.

        Raises:
            ValueError: for unknown, repeated or no adapters; a name taken by
                an adapter or fusion (a one-adapter fusion needs its own
                `name`); adapters in different slots (AdapterHub raises too)
                or parallel ones (`is_parallel`); or a bad `config`.

        Example:

        ```python
        name = backbone.add_adapter_fusion(["sst2", "mrpc"], config="static")  # "sst2,mrpc"
        backbone.set_active_adapters(name)
        ```
        """
        if isinstance(adapters, str):
            adapters = adapters.split(",")
        per_layer = dict(adapters) if isinstance(adapters, dict) else {"all": adapters}
        layers = {str(index) for index in range(self.num_layers)}
        if isinstance(adapters, dict) and not set(adapters) <= layers:
            raise ValueError(f"Per-layer fusion keys must be layer indices as strings, "
                             f"'0' to '{self.num_layers - 1}'; got {sorted(adapters)}.")
        for layer, names in per_layer.items():
            names = per_layer[layer] = list(names)
            if not names or len(set(names)) != len(names):
                raise ValueError(f"An AdapterFusion fuses distinct adapters; got {adapters}.")
            for adapter in names:
                self._check_known(adapter)
        adapters = per_layer.pop("all", per_layer)
        fused = list(dict.fromkeys(a for names in per_layer.values() for a in names)) or adapters
        name = ",".join(fused) if name is None else name
        if not isinstance(name, str) or not all(ADAPTER_NAME.fullmatch(p) for p in name.split(",")):
            raise ValueError(f"AdapterFusion names are adapter names joined by ','; got {name!r}.")
        taken = {keras_name("fusion", f) for f in self.fusion_configs}
        if name in self.adapter_configs or keras_name("fusion", name) in taken:
            raise ValueError(f"The name {name!r} is taken; give the AdapterFusion another name.")
        configs = [AdapterConfig.from_dict(self.adapter_configs[a]) for a in fused]
        if len({c.placement for c in configs}) > 1 or any(c.is_parallel for c in configs):
            raise ValueError(
                f"Adapters {fused} cannot be fused: they must all sit in the same slots "
                f"(placements {[c.placement for c in configs]}) and none may be parallel.")
        fusion = {"adapters": adapters, "config": AdapterFusionConfig.load(config).to_dict()}
        self.fusion_configs[name] = fusion
        for index, layer in enumerate(self.transformer_layers):
            in_layer = layer_fusion_configs({name: fusion}, layer.adapter_configs, index)
            if in_layer:
                layer.add_fusion(name, in_layer[name])
        if set_active:
            self.set_active_adapters(name)
        return name

    def remove_adapter_fusion(self, name):
        """Delete AdapterFusion `name` and its weights (not its adapters).

        Raises:
            ValueError: if there is no such fusion.
        """
        self._check_fusion(name)
        for layer in self.transformer_layers:
            if name in layer.fusion_configs:
                layer.remove_fusion(name)
        del self.fusion_configs[name]
        if self.active_adapter == name:
            self.set_active_adapters(None)

    def layer_fusions(self, name):
        """`{layer index: LayerFusion}`: AdapterFusion `name`'s part in each layer it is in."""
        self._check_fusion(name)
        return {index: layer.named_fusions[name]
                for index, layer in enumerate(self.transformer_layers)
                if name in layer.named_fusions}

    def set_active_adapters(self, name):
        """Run adapter or AdapterFusion `name` from now on (None: the pretrained backbone).

        Eager calls see it at once. Functions compiled before (`model.fit`,
        `predict`, a `tf.function`) keep the adapter they were traced with:
        call `model.compile` again, as after any change of `trainable`.
        `AdapterModel.set_active_adapters` does that itself.

        Raises:
            ValueError: if there is no such adapter.
        """
        if name is not None:
            self._check_known(name, fusions=True)
        self.active_adapter = name
        for layer in self.transformer_layers:
            layer.active_adapter = name

    def layer_adapters(self, name=None):
        """`{layer index: LayerAdapter}`: adapter `name`'s part in each layer it is in.

        Defaults to the active adapter.
        """
        name = self.active_adapter if name is None else name
        self._check_known(name)
        return {
            index: layer.named_adapters[name]
            for index, layer in enumerate(self.transformer_layers)
            if name in layer.named_adapters
        }

    @property
    def adapters(self):
        """The active adapter's `BottleneckAdapter`s, lowest layer first (none
        for an AdapterFusion)."""
        if self.active_adapter not in self.adapter_configs:
            return []
        return [a for part in self.layer_adapters().values() for a in part.adapters]

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
        """Every weight adapters add: all named adapters', AdapterFusions' and
        AdapterDrop's state."""
        weights = list(self.adapter_drop.weights)
        for layer in self.transformer_layers:
            for part in [*layer.named_adapters.values(), *layer.named_fusions.values()]:
                weights += part.weights
        return weights

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_activation": self.hidden_activation,
                "adapter_configs": self.adapter_configs,
                "fusion_configs": self.fusion_configs,
                "active_adapter": self.active_adapter,
                "drop_first_n": self.drop_first_n,
                "robust_adapter_drop": self.robust_adapter_drop,
                "seed": self.seed,
            }
        )
        return config


_ADAPTER_CLASSES = {}  # keras-hub backbone class -> its AdapterBackbone subclass


def register_architecture(adapter_cls):
    """Class decorator: `adapter_cls` adds adapters to `adapter_cls.architecture.backbone_cls`.

    Also registers it with Keras (`.keras` files and presets find it by
    name), and gives every keras-hub class made for the plain backbone (its
    tokenizer, preprocessors, task models) a registered subclass made for
    this one, so `from_preset` of a preset saved from an adapter backbone
    finds them as it finds the plain ones.
    """
    base = adapter_cls.architecture.backbone_cls
    adapter_cls = keras.saving.register_keras_serializable(package="keras_adapters")(adapter_cls)
    _ADAPTER_CLASSES[base] = adapter_cls
    for companion in list(keras.saving.get_custom_objects().values()):
        if isinstance(companion, type) and getattr(companion, "backbone_cls", None) is base:
            subclass = type(f"Adapter{companion.__name__}", (companion,), {
                "backbone_cls": adapter_cls, "__module__": adapter_cls.__module__,
                "__doc__": f"keras-hub's `{companion.__name__}` for `{adapter_cls.__name__}` presets.",
            })
            keras.saving.register_keras_serializable(package="keras_adapters")(subclass)
    return adapter_cls


def adapter_backbone_class(backbone):
    """The `AdapterBackbone` subclass for a keras-hub backbone instance.

    Raises:
        TypeError: if no registered architecture has `backbone`'s class.
    """
    for cls in type(backbone).__mro__:
        if cls in _ADAPTER_CLASSES:
            return _ADAPTER_CLASSES[cls]
    supported = sorted(cls.__name__ for cls in _ADAPTER_CLASSES)
    raise TypeError(f"Expected a keras_hub backbone of one of {supported}; got {type(backbone)}.")


def copy_weights(source, target, skip=()):
    """Copy every weight of `source` into the same-path weight of `target`.

    Args:
        source, target: built Keras layers or models.
        skip: paths of `source` weights not to copy.

    Returns:
        The list of paths of `target` weights that `source` has no weight for.

    Raises:
        ValueError: naming the weight, if a source weight has no counterpart
            in `target` or their shapes differ.
    """
    targets = {w.path: w for w in target.weights}
    for weight in source.weights:
        if weight.path in skip:
            continue
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


def _has_trained_weight(layer):
    """Whether any weight under `layer` has its own `trainable` flag set."""
    return any(weight.trainable for weight in layer.weights)


def add_adapters(backbone, config=None, *, name=DEFAULT_ADAPTER, drop_first_n=0,
                 robust_adapter_drop=False, seed=None):
    """A copy of a keras-hub encoder backbone with one named adapter, active, in its layers.

    Every transformer layer (except `config.leave_out`) gets an adapter after
    the attention output projection and dropout, and under `houlsby`
    placement one after the feed-forward output projection and dropout, each
    before the residual add and layer norm (Houlsby et al., 2019, Fig. 2;
    google-research/adapter-bert). The source is left untouched. Add more
    adapters with `add_adapter`.

    Args:
        backbone: a keras-hub `BertBackbone`, `RobertaBackbone`,
            `XLMRobertaBackbone`, `DistilBertBackbone` or `ElectraBackbone`
            (for example from `from_preset` or `keras_adapters.from_pretrained`)
            without adapters.
        config: `AdapterConfig`. Defaults to `AdapterConfig()` (size 64,
            houlsby placement).
        name: str, the adapter's name (a task name, say), or None for no
            adapter yet (add them with `add_adapter`, `load_adapter`...).
            Defaults to `"default"`.
        drop_first_n: int. Initial AdapterDrop depth; see
            `AdapterBackbone.set_drop_first_n`.
        robust_adapter_drop: bool, draw the depth at every training step
            (robust AdapterDrop); see `AdapterBackbone`.
        seed: int or None, seeds those draws.

    Returns:
        An instance of the backbone's class (for BERT an `AdapterBertBackbone`,
        a `BertBackbone` subclass) holding exact copies of every pretrained
        weight, usable with keras-hub task models such as `BertTextClassifier`.

    Raises:
        TypeError: if `backbone` is none of those classes.
        ValueError: if it already has adapters, or a weight fails to map.

    Example:

    ```python
    backbone = keras_hub.models.RobertaBackbone.from_preset("roberta_base_en")
    backbone = keras_adapters.add_adapters(
        backbone, keras_adapters.AdapterConfig(adapter_size=64), name="sst2")
    isinstance(backbone, keras_hub.models.RobertaBackbone)  # True
    ```
    """
    cls = adapter_backbone_class(backbone)
    if getattr(backbone, "adapter_configs", None):
        raise ValueError(
            "The backbone already has adapters; add more with backbone.add_adapter()."
        )
    config = config or AdapterConfig()
    settings = backbone.get_config()
    settings.update(
        hidden_activation=getattr(backbone, "hidden_activation", None),
        adapter_configs={} if name is None else {name: config.to_dict()},
        active_adapter=name,
        drop_first_n=drop_first_n,
        robust_adapter_drop=robust_adapter_drop,
        seed=seed,
        dtype=backbone.dtype_policy,
    )
    adapted = cls(**settings)
    # A backbone without adapters can still hold AdapterDrop state (`from_pretrained` returns
    # an adapter backbone); this call's arguments set the copy's, so it is not copied.
    own_state = {w.path for w in getattr(backbone, "adapter_weights", ())}
    unmatched = set(copy_weights(backbone, adapted, skip=own_state))
    unmatched -= {w.path for w in adapted.adapter_weights}
    if unmatched:
        raise ValueError(f"Weights with no pretrained value: {sorted(unmatched)}.")
    for layer in adapted.transformer_layers:  # Layer-norm copies start pretrained.
        if name in layer.named_adapters:
            layer.reset_layer_norms(name)
    return adapted
