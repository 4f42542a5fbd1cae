"""Freezing for adapter tuning: only one adapter, its layer norms and the head train."""

import dataclasses

import numpy as np

from keras_adapters.models.adapter_backbone import AdapterBackbone
from keras_adapters.models.adapter_encoder import LayerAdapter, LayerFusion
from keras_adapters.utils.keras_internals import child_layers


@dataclasses.dataclass(frozen=True)
class ParameterCounts:
    """Parameter counts of a model set up for adapter tuning.

    Attributes:
        trainable: parameters that train (adapters, layer norms, head).
        total: every parameter of the model, adapters and head included.
        pretrained: parameters of the backbone without its adapters.

    Example:

    ```python
    counts = keras_adapters.freeze_for_adapter_tuning(model)
    print(counts)  # "trainable 605,186 of ... parameters (2.66% of the ..."
    ```
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
    """The `AdapterBackbone` in `model` (itself, `model.backbone`, or a sublayer).

    Raises:
        ValueError: if `model` holds none.
    """
    if isinstance(model, AdapterBackbone):
        return model
    for layer in child_layers(model, recursive=True):
        if isinstance(layer, AdapterBackbone):
            return layer
    raise ValueError(
        f"{model.name!r} holds no adapter backbone; build one with add_adapters()."
    )


def _set_trainable(layer, trained):
    """Freeze every leaf under `layer` but the `LayerAdapter`s and `LayerFusion`s in `trained`.

    Setting `trainable = False` on a container and re-enabling children leaves
    no trainable weight in Keras 3, so the decision is made leaf by leaf (a
    `LayerAdapter` or `LayerFusion` counts as a leaf: all of it trains, or none).
    """
    if isinstance(layer, (LayerAdapter, LayerFusion)):
        layer.trainable = id(layer) in trained
        return
    children = child_layers(layer)
    if not children:
        layer.trainable = False
    for child in children:
        _set_trainable(child, trained)


def weight_count(weights):
    """The number of parameters (scalars) in `weights`, a list of variables.

    Example: `weight_count(model.trainable_weights)` is 605,186 for MiniLM
    with a size-64 Houlsby adapter and a 2-class head, frozen for adapter tuning.
    """
    return int(sum(np.prod(w.shape) for w in weights))


def count_parameters(model):
    """`ParameterCounts` of `model`, which holds an `AdapterBackbone`."""
    backbone = find_adapter_backbone(model)
    adapter_ids = {id(w) for w in backbone.adapter_weights}
    pretrained = [w for w in backbone.weights if id(w) not in adapter_ids]
    return ParameterCounts(
        trainable=weight_count(model.trainable_weights),
        total=weight_count([w for w in model.weights if "float" in w.dtype]),  # Not AdapterDrop's.
        pretrained=weight_count(pretrained),
    )


def freeze_for_adapter_tuning(model, adapter=None, unfreeze_adapters=False):
    """Freeze a model so only one adapter, its layer norms and the head train.

    Houlsby et al. (2019), §2.1: the pretrained weights stay fixed; the
    adapters, the layer normalisation parameters and the task's head are
    trained. Here the layer norms that train are the adapter's own copies
    (when its config has `train_layer_norms`), so the pretrained backbone and
    every other adapter stay bit-identical while it trains. The embeddings'
    layer norm, below every adapter, stays frozen. Every weight of `model`
    outside its backbone (the head) is left trainable.

    Under specialised AdapterDrop (`drop_first_n` n > 0, not robust) the
    lowest n layers run without adapters, so that adapter's weights there
    are frozen too: nothing below layer n trains, and backprop stops at
    layer n. This reads `drop_first_n` when called.

    If `adapter` names an AdapterFusion, its fusion layers train instead
    (AdapterHub's `train_adapter_fusion`; Pfeiffer et al., 2021, §3.2): the
    fused adapters stay frozen unless `unfreeze_adapters`.

    Args:
        model: an `AdapterBackbone`, or a model holding one (for example a
            keras-hub `BertTextClassifier` built on it).
        adapter: str or None, the adapter or AdapterFusion to train; defaults
            to the active one.
        unfreeze_adapters: bool, for an AdapterFusion: train its adapters
            too. Defaults to False.

    Returns:
        `ParameterCounts` after freezing.

    Raises:
        ValueError: if `model` holds no `AdapterBackbone`, or there is no
            such (or no active) adapter or AdapterFusion.
    """
    backbone = find_adapter_backbone(model)
    name = backbone.active_adapter if adapter is None else adapter
    if name is None:
        raise ValueError("No adapter to train: the backbone has no active adapter.")
    first = 0 if backbone.robust_adapter_drop else backbone.drop_first_n
    if name in backbone.fusion_configs:
        parts = [backbone.layer_fusions(name)]
        if unfreeze_adapters:
            parts += [backbone.layer_adapters(a) for a in backbone.fused_adapters(name)]
    else:
        parts = [backbone.layer_adapters(name)]
    trained = {id(part) for layers in parts for index, part in layers.items() if index >= first}
    model.trainable = True
    for layer in child_layers(backbone):
        _set_trainable(layer, trained)
    return count_parameters(model)
