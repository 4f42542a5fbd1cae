"""Parallel multi-task inference with AdapterDrop (Rücklé et al., 2021, §4).

With T tasks whose adapters are dropped from the lowest n layers, those n
layers compute the same thing for every task. `ParallelAdapterModel` runs
them once, without adapters, then branches into T task streams for the
layers above (AdapterHub's "Parallel" composition). Each task's output
equals its own model run with `drop_first_n = n`.
"""

import keras

from keras_adapters.layers.adapter_drop import check_drop_first_n


@keras.saving.register_keras_serializable(package="keras_adapters")
class ParallelAdapterModel(keras.Model):
    """Several tasks of an `AdapterModel` in one pass, sharing the lowest layers.

    Compute, per example and relative to one task's full pass: the embeddings
    and `drop_first_n` layers once, then `num_layers - drop_first_n` layers,
    the pooler and a head per task.

    Args:
        adapter_model: an `AdapterModel` holding every task in `tasks`.
        tasks: sequence of str, task names, each with an adapter (or an
            AdapterFusion) and a head.
        drop_first_n: int in [0, num_layers], the shared depth n.
        **kwargs: `keras.Model` arguments.

    Call arguments:
        inputs: dict of the backbone's int32 inputs `(batch, seq)`:
            `token_ids`, `padding_mask`, and `segment_ids` where the
            architecture has them (BERT, ELECTRA).
        training: bool (dropout). Defaults to False.

    Returns:
        dict from task name to that task's head output (e.g. logits
        `(batch, num_classes)`).

    Raises:
        ValueError: on an empty or repeated task list, a task without an
            adapter or a head, or a bad `drop_first_n`.

    Example:

    ```python
    both = keras_adapters.ParallelAdapterModel(model, ["mrpc", "sst2"], drop_first_n=5)
    logits = both(features)  # {"mrpc": (batch, 2), "sst2": (batch, 2)}
    ```
    """

    def __init__(self, adapter_model, tasks, drop_first_n, **kwargs):
        super().__init__(**kwargs)
        tasks = list(tasks)
        backbone = adapter_model.backbone
        check_drop_first_n(drop_first_n, backbone.num_layers)
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be distinct and non-empty; got {tasks}.")
        for task in tasks:
            if (task not in {**backbone.adapter_configs, **backbone.fusion_configs}
                    or task not in adapter_model.heads):
                raise ValueError(
                    f"Task {task!r} needs an adapter (or AdapterFusion) and a head; adapters: "
                    f"{backbone.adapter_names}, fusions: {backbone.fusion_names}, heads: "
                    f"{sorted(adapter_model.heads)}."
                )
        self.adapter_model = adapter_model
        self.tasks = tasks
        self.drop_first_n = drop_first_n
        self.built = True  # Everything it runs belongs to the built adapter_model.

    def call(self, inputs, training=False):
        backbone = self.adapter_model.backbone
        mask = inputs["padding_mask"]
        layers = backbone.transformer_layers
        shared = backbone.embed(inputs, training=training)
        for layer in layers[: self.drop_first_n]:
            shared = layer(shared, padding_mask=mask, adapter=None, training=training)
        outputs = {}
        for task in self.tasks:
            x = shared
            for layer in layers[self.drop_first_n:]:
                x = layer(x, padding_mask=mask, adapter=task, training=training)
            outputs[task] = self.adapter_model.heads[task](backbone.pool(x), training=training)
        return outputs

    def get_config(self):
        return {
            "name": self.name,
            "adapter_model": keras.saving.serialize_keras_object(self.adapter_model),
            "tasks": self.tasks,
            "drop_first_n": self.drop_first_n,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        adapter_model = keras.saving.deserialize_keras_object(config.pop("adapter_model"))
        return cls(adapter_model, **config)
