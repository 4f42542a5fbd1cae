"""Adapter-only weight files: what adapter tuning trained, without the backbone."""

import json

import numpy as np
import safetensors.numpy

from keras_adapters.atomic import atomic_path
from keras_adapters.freezing import find_adapter_backbone

FORMAT = "keras_adapters.adapter_weights/1"


def save_adapter_weights(model, path):
    """Write the trainable weights of an adapter-tuned model to a safetensors file.

    After `freeze_for_adapter_tuning` these are the adapters, the layer norms
    and the task head: a few percent of the backbone. Tensors are keyed by
    Keras weight path; the metadata holds the adapter config and the
    backbone's hidden size and depth. The write is atomic.

    Args:
        model: a model holding an `AdapterBertBackbone`.
        path: str, the `.safetensors` file to write.

    Raises:
        ValueError: if `model` has no trainable weight or no adapter backbone.
    """
    backbone = find_adapter_backbone(model)
    tensors = {w.path: np.asarray(w.numpy()) for w in model.trainable_weights}
    if not tensors:
        raise ValueError(f"{model.name!r} has no trainable weight to save.")
    metadata = {
        "format": FORMAT,
        "adapter_config": json.dumps(backbone.adapter_config, sort_keys=True),
        "hidden_dim": str(backbone.hidden_dim),
        "num_layers": str(backbone.num_layers),
    }
    with atomic_path(path) as temporary:
        safetensors.numpy.save_file(tensors, temporary, metadata=metadata)


def load_adapter_weights(model, path):
    """Assign the weights in a `save_adapter_weights` file to `model`.

    `model` must have the same structure (backbone size, adapter config and
    head) as the one saved; every tensor in the file must land.

    Raises:
        ValueError: naming the file and the tensor, if a tensor has no weight
            in `model` or a different shape, or if the file's backbone size
            differs from the model's.
    """
    backbone = find_adapter_backbone(model)
    with safetensors.safe_open(path, framework="numpy") as f:
        metadata = f.metadata() or {}
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    for field in ("hidden_dim", "num_layers"):
        if metadata.get(field) != str(getattr(backbone, field)):
            raise ValueError(
                f"{path}: saved for a backbone with {field}={metadata.get(field)}, "
                f"but the model has {getattr(backbone, field)}."
            )
    weights = {w.path: w for w in model.weights}
    for key, value in tensors.items():
        if key not in weights:
            raise ValueError(f"{path}: tensor {key!r} has no weight in the model.")
        if tuple(weights[key].shape) != value.shape:
            raise ValueError(
                f"{path}: tensor {key!r} has shape {value.shape}, the model's "
                f"weight {tuple(weights[key].shape)}."
            )
        weights[key].assign(value)
