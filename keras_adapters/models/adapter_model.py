"""Many tasks on one frozen backbone: named adapters, each with its own head.

The Keras counterpart of AdapterHub's `BertAdapterModel` (`add_adapter`,
`add_classification_head`, `train_adapter`, `set_active_adapters`,
`save_adapter`, `load_adapter`).
"""

import keras

from keras_adapters.layers.heads import ClassificationHead
from keras_adapters.models import fusion_pruning
from keras_adapters.models.adapter_backbone import AdapterBackbone
from keras_adapters.models.adapter_encoder import keras_name
from keras_adapters.models.freezing import count_parameters, freeze_for_adapter_tuning
from keras_adapters.saving import adapter_files as adapter_weights
from keras_adapters.utils.keras_internals import tracking_unlocked


@keras.saving.register_keras_serializable(package="keras_adapters")
class AdapterModel(keras.Model):
    """An adapter backbone with a registry of task heads, one per adapter.

    Each task is an adapter in the backbone plus a head of the same name. One
    task runs at a time (`set_active_adapters`); `parallel()` runs several.

    Args:
        backbone: an `AdapterBackbone` (from `add_adapters`), of any
            architecture.
        heads: dict from task name to head layer (e.g. `ClassificationHead`),
            or None. Heads are usually added with `add_classification_head`.
        **kwargs: `keras.Model` arguments.

    Call arguments:
        inputs: dict of the backbone's int32 inputs `(batch, seq)`:
            `token_ids`, `padding_mask`, and `segment_ids` where the
            architecture has them (BERT, ELECTRA).
        training: bool.

    Returns:
        The active task's head output, e.g. logits `(batch, num_classes)`.

    Raises:
        ValueError: when called with no active task, or the active adapter
            has no head.

    Example:

    ```python
    backbone, tokenizer = keras_adapters.from_pretrained()
    model = keras_adapters.AdapterModel(keras_adapters.add_adapters(backbone, name="mrpc"))
    model.add_classification_head("mrpc", num_classes=2)
    model.train_adapter("mrpc")  # then compile and fit
    ```
    """

    def __init__(self, backbone, heads=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(backbone, AdapterBackbone):
            raise TypeError(f"Expected an adapter backbone (add_adapters); got {type(backbone)}.")
        self.backbone = backbone
        self.heads = {}
        for name, head in (heads or {}).items():
            self.add_head(name, head)
        self.built = True  # The backbone and every head are built.

    @property
    def active_adapter(self):
        """The active task's name, or None."""
        return self.backbone.active_adapter

    def add_adapter(self, name, config=None, set_active=False):
        """Add adapter `name` to the backbone; see `AdapterBackbone.add_adapter`."""
        self.backbone.add_adapter(name, config)
        if set_active:
            self.set_active_adapters(name)

    def add_head(self, name, head):
        """Register `head` (a layer called on the backbone's output dict) for task `name`.

        Raises:
            ValueError: if task `name` already has a head.
        """
        if name in self.heads:
            raise ValueError(f"Task {name!r} already has a head.")
        if not head.built:
            hidden = self.backbone.hidden_dim
            head.build({"sequence_output": (None, None, hidden), "pooled_output": (None, hidden)})
        with tracking_unlocked(self):
            self.heads[name] = head

    def add_classification_head(self, name, num_classes, dropout=0.1):
        """Register a `ClassificationHead` for task `name`; returns it."""
        head = ClassificationHead(num_classes, dropout, dtype=self.backbone.dtype_policy,
                                  name=keras_name("head", name))
        self.add_head(name, head)
        return head

    def remove_task(self, name):
        """Delete task `name`: its adapter and its head (if any)."""
        self.backbone.remove_adapter(name)
        if name in self.heads:
            with tracking_unlocked(self):
                self.heads.pop(name)  # pop, unlike del, untracks it.
        self._reset_compiled_functions()

    def set_active_adapters(self, name):
        """Run task `name` (its adapter or AdapterFusion, and head) from now on.

        Unlike the backbone's method, this also drops the model's compiled
        `predict`/`evaluate`/`fit` functions, so the next call traces the new
        task. Training a different task needs `train_adapter` and `compile`.

        Raises:
            ValueError: if the backbone has no adapter or AdapterFusion `name`.
        """
        self.backbone.set_active_adapters(name)
        self._reset_compiled_functions()

    def _reset_compiled_functions(self):
        self.train_function = self.test_function = self.predict_function = None

    def train_adapter(self, name):
        """Activate task `name` and freeze all but its adapter, layer norms and head.

        Every other adapter, head and the backbone stay bit-identical while it
        trains. Call `compile` afterwards (a new optimizer), as after any
        change of `trainable`.

        Returns:
            `ParameterCounts` after freezing.
        """
        self.set_active_adapters(name)
        freeze_for_adapter_tuning(self, name)
        for task, head in self.heads.items():
            head.trainable = task == name
        return count_parameters(self)

    def add_adapter_fusion(self, adapters, config="dynamic", name=None, set_active=False):
        """Add an AdapterFusion to the backbone; see `AdapterBackbone.add_adapter_fusion`.

        Its task's head is registered under the fusion's name (AdapterHub's
        `"a,b"` by default), e.g. `add_classification_head("a,b", 2)`.

        Returns:
            str, the fusion's name.
        """
        name = self.backbone.add_adapter_fusion(adapters, config, name)
        if set_active:
            self.set_active_adapters(name)
        return name

    def train_adapter_fusion(self, name, unfreeze_adapters=False):
        """Activate AdapterFusion `name`; freeze all but its fusion layers and its head.

        AdapterHub's `train_adapter_fusion`: the fused adapters and the
        backbone stay bit-identical (unless `unfreeze_adapters`). The
        fusion's value-matrix penalty joins the training loss through
        `model.losses`. Call `compile` afterwards.

        Returns:
            `ParameterCounts` after freezing.
        """
        self.set_active_adapters(name)
        freeze_for_adapter_tuning(self, name, unfreeze_adapters=unfreeze_adapters)
        for task, head in self.heads.items():
            head.trainable = task == name
        return count_parameters(self)

    def prune_adapter_fusion(self, name, keep, dataset=None, attention=None, per_layer=False,
                             new_name=None):
        """A fusion over the `keep` adapters fusion `name` attends to most, with
        a copy of its head; see `keras_adapters.prune_adapter_fusion`.

        Returns:
            str, the new fusion's name.
        """
        new_name = fusion_pruning.prune_adapter_fusion(self, name, keep, dataset=dataset, attention=attention,
                                        per_layer=per_layer, new_name=new_name)
        self._reset_compiled_functions()
        return new_name

    def remove_adapter_fusion(self, name):
        """Delete AdapterFusion `name` and its head (if any), not its adapters."""
        self.backbone.remove_adapter_fusion(name)
        if name in self.heads:
            with tracking_unlocked(self):
                self.heads.pop(name)
        self._reset_compiled_functions()

    def call(self, inputs, training=None):
        name = self.backbone.active_adapter
        if name is None or name not in self.heads:
            raise ValueError(
                f"The active task {name!r} has no head; heads: {sorted(self.heads)}."
            )
        features = self.backbone.features(self.backbone(inputs, training=training))
        return self.heads[name](features, training=training)

    def parallel(self, names, drop_first_n):
        """A `ParallelAdapterModel` running tasks `names` above a shared depth."""
        from keras_adapters.models.parallel import ParallelAdapterModel

        return ParallelAdapterModel(self, names, drop_first_n)

    def save_adapter(self, directory, name, format="keras_adapters"):
        """Write task `name`'s adapter, layer norms and head; see `adapter_weights.save_adapter`.

        `format="adapterhub"` writes AdapterHub's format.
        """
        adapter_weights.save_adapter(self, directory, name, format=format)

    def load_adapter(self, directory, load_as=None, set_active=False):
        """Add a task saved by `save_adapter`; see `adapter_weights.load_adapter`.

        Returns:
            str, the name it was loaded as.
        """
        name = adapter_weights.load_adapter(self, directory, load_as=load_as)
        if set_active:
            self.set_active_adapters(name)
        return name

    def save_adapter_fusion(self, directory, name, format="keras_adapters"):
        """Write AdapterFusion `name` and its head; see `adapter_weights.save_adapter_fusion`."""
        adapter_weights.save_adapter_fusion(self, directory, name, format=format)

    def load_adapter_fusion(self, directory, load_as=None, set_active=False):
        """Add an AdapterFusion saved by `save_adapter_fusion` (or AdapterHub); see
        `adapter_weights.load_adapter_fusion`.

        Returns:
            str, the name it was loaded as.
        """
        name = adapter_weights.load_adapter_fusion(self, directory, load_as=load_as)
        if set_active:
            self.set_active_adapters(name)
        return name

    def get_config(self):
        return {
            "name": self.name,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "heads": {
                name: keras.saving.serialize_keras_object(head)
                for name, head in self.heads.items()
            },
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
        heads = {
            name: keras.saving.deserialize_keras_object(head)
            for name, head in config.pop("heads").items()
        }
        return cls(backbone, heads, **config)
