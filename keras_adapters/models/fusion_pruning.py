"""AdapterDrop's pruning of AdapterFusion (Rücklé et al., EMNLP 2021, §5).

A trained fusion attends to few of its adapters. `fusion_attention`
measures each adapter's mean attention weight over a dataset, per layer;
`prune_adapter_fusion` adds a fusion over the k that weigh most, with the
trained fusion weights (a fusion's query, key and value do not depend on
how many adapters it fuses), so the adapters left out are not computed.
"""

import dataclasses

import numpy as np
import tensorflow as tf
from keras import ops

from keras_adapters.models.adapter_encoder import keras_name
from keras_adapters.models.freezing import find_adapter_backbone


@dataclasses.dataclass(frozen=True)
class FusionAttention:
    """Mean AdapterFusion attention weights, per layer and fused adapter.

    Attributes:
        adapters: list of str, the fused adapters, in the fusion's order.
        per_layer: float64 `(num_layers, len(adapters))`: in each layer, the
            mean attention weight of each adapter over the non-padding
            tokens (and over the layer's fused slots); NaN where the layer
            does not fuse that adapter or does not run its fusion
            (`drop_first_n`). Each row that has values sums to 1.

    Example:

    ```python
    attention = keras_adapters.fusion_attention(model, "cola,sst2,mrpc", dev_features)
    attention.mean  # e.g. [0.08, 0.11, 0.81]
    ```
    """

    adapters: list
    per_layer: np.ndarray

    @property
    def mean(self):
        """float64 `(len(adapters),)`: `per_layer` averaged over the layers that have it."""
        return np.nanmean(self.per_layer, axis=0)

    def top(self, k, per_layer=False):
        """The `k` adapters with the highest `mean` (in fusion order); with
        `per_layer`, `{layer index as str: its k highest}` for layers that
        run the fusion."""
        if not per_layer:
            return _highest(self.adapters, self.mean, k)
        return {str(index): _highest(self.adapters, row, k)
                for index, row in enumerate(self.per_layer) if not np.isnan(row).all()}


def _highest(adapters, weights, k):
    present = [i for i in np.argsort(-np.nan_to_num(weights, nan=-1.0), kind="stable")
               if not np.isnan(weights[i])]
    return [adapters[i] for i in sorted(present[:k])]


def fusion_attention(model, name, dataset):
    """Each fused adapter's mean attention weight in AdapterFusion `name`, per layer.

    Runs `model` in inference mode over `dataset` with `name` active (the
    active adapter is restored after), at the backbone's `drop_first_n`.

    Args:
        model: an `AdapterModel`, an `AdapterBackbone`, or a model holding one.
        name: str, the AdapterFusion.
        dataset: iterable of batches: the backbone's feature dicts
            (`token_ids`, `padding_mask`...), or `(features, ...)` tuples
            such as a `tf.data.Dataset` of `(features, labels)`.

    Returns:
        `FusionAttention`.

    Raises:
        ValueError: if there is no such fusion, or `dataset` is empty.

    Example:

    ```python
    attention = keras_adapters.fusion_attention(model, "cola,sst2,mrpc", dev_batches)
    attention.per_layer.shape  # (num_layers, 3)
    ```
    """
    backbone = find_adapter_backbone(model)
    adapters = backbone.fused_adapters(name)
    previous = backbone.active_adapter
    backbone.set_active_adapters(name)

    @tf.function
    def step(features):
        with backbone.recording_fusion_attention() as sinks:
            backbone(features, training=False)
        mask = ops.cast(features["padding_mask"], "float32")[:, :, None]
        sums = [{slot: ops.sum(ops.cast(w, "float32") * mask, axis=(0, 1))
                 for slot, w in sink.items()} for sink in sinks]
        return sums, ops.sum(mask)

    totals = [{} for _ in backbone.transformer_layers]
    tokens = 0.0
    try:
        for batch in dataset:
            features = batch[0] if isinstance(batch, (tuple, list)) else batch
            sums, count = step({key: features[key] for key in backbone.input})
            tokens += float(count)
            for total, layer_sums in zip(totals, sums):
                for slot, value in layer_sums.items():
                    total[slot] = total.get(slot, 0.0) + np.asarray(value, "float64")
    finally:
        backbone.set_active_adapters(previous)
    if not tokens:
        raise ValueError("fusion_attention needs a dataset with at least one token.")
    per_layer = np.full((backbone.num_layers, len(adapters)), np.nan)
    for index, (layer, total) in enumerate(zip(backbone.transformer_layers, totals)):
        if total:
            fused = layer.fusion_configs[name]["adapters"]
            columns = [adapters.index(adapter) for adapter in fused]
            per_layer[index, columns] = np.mean(list(total.values()), axis=0) / tokens
    return FusionAttention(adapters, per_layer)


def prune_adapter_fusion(model, name, keep, dataset=None, attention=None, per_layer=False,
                         new_name=None):
    """Add a fusion over the `keep` adapters that AdapterFusion `name` attends to most.

    AdapterDrop's fusion pruning (Rücklé et al., 2021, §5): the new fusion
    starts with `name`'s trained query, key and value in every layer, and
    a copy of its head when the model has one; the adapters left out are
    not computed when it runs. `name` is kept; train the new one further
    (`train_adapter_fusion`) for a short re-training, or remove the old.

    Args:
        model: an `AdapterModel`, or a model holding an `AdapterBackbone`.
        name: str, the AdapterFusion to prune.
        keep: int in [1, number of fused adapters].
        dataset: batches for `fusion_attention` (e.g. the target task's dev
            set), unless `attention` is given.
        attention: a `FusionAttention` of `name`, or None to measure it.
        per_layer: bool. Keep the `keep` most attended adapters of each
            layer (the fusion then fuses different adapters in different
            layers) instead of those most attended over all layers.
            Defaults to False.
        new_name: str or None. Defaults to the kept adapters joined by ','
            (one adapter `a` kept: `a_fusion`).

    Returns:
        str, the new fusion's name. It is not made active.

    Raises:
        ValueError: for a bad `keep`, neither `dataset` nor `attention`, or
            a name already taken.

    Example:

    ```python
    pruned = keras_adapters.prune_adapter_fusion(model, "a,b,c,d,e", keep=2, dataset=dev)
    model.set_active_adapters(pruned)
    ```
    """
    backbone = find_adapter_backbone(model)
    adapters = backbone.fused_adapters(name)
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= len(adapters):
        raise ValueError(f"keep must be an integer in [1, {len(adapters)}]; got {keep!r}.")
    if attention is None:
        if dataset is None:
            raise ValueError("Give a dataset to measure the fusion's attention on, or attention.")
        attention = fusion_attention(model, name, dataset)
    kept = attention.top(keep, per_layer=per_layer)
    if new_name is None:
        names = kept.values() if per_layer else [kept]
        new_name = ",".join(a for a in adapters if any(a in layer for layer in names))
        if new_name in backbone.adapter_configs:  # One adapter kept: its name is taken.
            new_name += "_fusion"
    new_name = backbone.add_adapter_fusion(kept, backbone.fusion_configs[name]["config"],
                                           name=new_name)
    old_layers = backbone.layer_fusions(name)
    for index, layer_fusion in backbone.layer_fusions(new_name).items():
        layer_fusion.set_weights(old_layers[index].get_weights())
    head = getattr(model, "heads", {}).get(name)
    if head is not None:
        config = dict(head.get_config(), name=keras_name("head", new_name))
        copy = head.__class__.from_config(config)
        model.add_head(new_name, copy)
        copy.set_weights(head.get_weights())
    return new_name
