"""Freezing for adapter tuning: only adapters, layer norms and the head train."""

import dataclasses

import keras
import numpy as np

from keras_adapters.adapter import BottleneckAdapter
from keras_adapters.backbone import AdapterBertBackbone


@dataclasses.dataclass(frozen=True)
class ParameterCounts:
    """Parameter counts of a model set up for adapter tuning.

    Attributes:
        trainable: parameters that train (adapters, layer norms, head).
        total: every parameter of the model, adapters and head included.
        pretrained: parameters of the backbone without its adapters.
    """

    trainable: int
    total: int
    pretrained: int

    @property
    def trainable_percent(self):
        """Trained parameters as a % of the pretrained backbone (Houlsby Fig. 1)."""
        return 100.0 * self.trainable / self.pretrained

    def __str__(self):
        return (
            f"trainable {self.trainable:,} of {self.total:,} parameters "
            f"({self.trainable_percent:.2f}% of the {self.pretrained:,}-parameter "
            "pretrained backbone)"
        )


def find_adapter_backbone(model):
    """The `AdapterBertBackbone` in `model` (itself, `model.backbone`, or a sublayer).

    Raises:
        ValueError: if `model` holds none.
    """
    if isinstance(model, AdapterBertBackbone):
        return model
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, AdapterBertBackbone):
            return layer
    raise ValueError(
        f"{model.name!r} holds no AdapterBertBackbone; build one with add_adapters()."
    )


def _set_trainable(layer, train_adapters, train_layer_norms):
    """Set `trainable` on the leaves under `layer`, never on a container.

    The flags decide for `BottleneckAdapter`s and `LayerNormalization`s;
    every other leaf is frozen.

    Setting `trainable = False` on a container and re-enabling children leaves
    no trainable weight in Keras 3, so the decision is made leaf by leaf.
    """
    if isinstance(layer, BottleneckAdapter):
        layer.trainable = train_adapters
        return
    if isinstance(layer, keras.layers.LayerNormalization):
        layer.trainable = train_layer_norms
        return
    children = layer._flatten_layers(include_self=False, recursive=False)
    if not children:
        layer.trainable = False
    for child in children:
        _set_trainable(child, train_adapters, train_layer_norms)


def _size(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def count_parameters(model):
    """`ParameterCounts` of `model`, which holds an `AdapterBertBackbone`."""
    backbone = find_adapter_backbone(model)
    adapter_ids = {id(w) for w in backbone.adapter_weights}
    pretrained = [w for w in backbone.weights if id(w) not in adapter_ids]
    return ParameterCounts(
        trainable=_size(model.trainable_weights),
        total=_size([w for w in model.weights if "float" in w.dtype]),  # Not AdapterDrop's.
        pretrained=_size(pretrained),
    )


def freeze_for_adapter_tuning(model, train_layer_norms=None):
    """Freeze a model so only its adapters, layer norms and task head train.

    Houlsby et al. (2019), §2.1: the pretrained weights stay fixed; the
    adapters, the layer normalisation parameters and the task's head are
    trained. Every weight of `model` outside its backbone (the head) is left
    trainable; inside the backbone only `BottleneckAdapter` and (unless turned
    off) `LayerNormalization` weights train.

    Under specialised AdapterDrop (`drop_first_n` n > 0, not robust) the
    adapters and layer norms of the lowest n layers, and the embeddings'
    layer norm, are frozen too: nothing below layer n trains, so no gradient
    or optimizer slot is spent there. This reads `drop_first_n` when called.

    Args:
        model: an `AdapterBertBackbone`, or a model holding one (for example a
            keras-hub `BertTextClassifier` built on it).
        train_layer_norms: bool or None. None takes the backbone's
            `adapter_config["train_layer_norms"]`.

    Returns:
        `ParameterCounts` after freezing.

    Raises:
        ValueError: if `model` holds no `AdapterBertBackbone`.
    """
    backbone = find_adapter_backbone(model)
    if train_layer_norms is None:
        train_layer_norms = backbone.adapter_config["train_layer_norms"]
    model.trainable = True
    below = set()
    if not backbone.robust_adapter_drop and backbone.drop_first_n:
        below = {id(backbone.embeddings_layer_norm)}
        below |= {id(layer) for layer in backbone.transformer_layers[: backbone.drop_first_n]}
    for layer in backbone._flatten_layers(include_self=False, recursive=False):
        dropped = id(layer) in below
        _set_trainable(layer, not dropped, train_layer_norms and not dropped)
    return count_parameters(model)
