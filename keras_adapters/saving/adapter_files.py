"""Adapter-only weight files: what adapter tuning trained, without the backbone.

`save_adapter`/`load_adapter` move one named task (adapter, layer norms, head)
between models on the same backbone, like AdapterHub's `save_adapter` and
`load_adapter`; `save_adapter_fusion`/`load_adapter_fusion` do so for an
AdapterFusion and its head. `save_adapter_weights` writes a whole model's trainable weights.
"""

import hashlib
import json
import os

import keras
import numpy as np
import safetensors.numpy

from keras_adapters.configuration.adapter_config import AdapterConfig
from keras_adapters.configuration.adapter_fusion_config import AdapterFusionConfig
from keras_adapters.layers.heads import ClassificationHead
from keras_adapters.models.adapter_backbone import adapter_backbone_class
from keras_adapters.models.adapter_encoder import keras_name
from keras_adapters.models.freezing import find_adapter_backbone
from keras_adapters.saving import adapterhub
from keras_adapters.utils.atomic import atomic_path
from keras_adapters.utils.keras_internals import tracking_unlocked

FORMAT = "keras_adapters.saving.adapter_files/1"


def save_adapter_weights(model, path):
    """Write the trainable weights of an adapter-tuned model to a safetensors file.

    After `freeze_for_adapter_tuning` these are the adapters, the layer norms
    and the task head: a few percent of the backbone. Tensors are keyed by
    Keras weight path; the metadata holds the adapter config and the
    backbone's hidden size and depth. The write is atomic.

    Args:
        model: a model holding an `AdapterBackbone`.
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
    _assign(path, {w.path: w for w in model.weights}, tensors)


def _assign(path, weights, tensors):
    """Assign each array of `tensors` to the same-key weight of `weights`.

    Raises:
        ValueError: naming `path` and the key, if a tensor has no weight or
            a different shape.
    """
    for key, value in tensors.items():
        if key not in weights:
            raise ValueError(f"{path}: tensor {key!r} has no weight in the model.")
        if tuple(weights[key].shape) != value.shape:
            raise ValueError(
                f"{path}: tensor {key!r} has shape {value.shape}, the model's "
                f"weight {tuple(weights[key].shape)}."
            )
        weights[key].assign(value)


ADAPTER_FORMAT = "keras_adapters.layers.bottleneck_adapter/1"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_weights.safetensors"


def backbone_identity(backbone):
    """What an adapter needs to match: sizes and a fingerprint of the vocabulary.

    Returns:
        dict: `hidden_dim`, `num_layers`, `vocabulary_size`, and
        `vocabulary_sha256`, the SHA-256 of the float32 token-embedding matrix
        (one row per vocabulary entry, so it changes with the vocabulary or
        the pretrained checkpoint).
    """
    embeddings = np.ascontiguousarray(backbone.token_embedding.embeddings.numpy(), "float32")
    vocabulary_size = adapter_backbone_class(backbone).architecture.vocabulary_size
    return {
        "hidden_dim": backbone.hidden_dim,
        "num_layers": backbone.num_layers,
        "vocabulary_size": getattr(backbone, vocabulary_size),
        "vocabulary_sha256": hashlib.sha256(embeddings.tobytes()).hexdigest(),
    }


def _relative(weight, owner):
    """`weight.path` below the layer `owner` (e.g. `attention_adapter/up_projection/bias`)."""
    marker = f"{owner.name}/"
    return weight.path[weight.path.index(marker) + len(marker):]


def _task_tensors(model, name, parts):
    """`{key: weight}` of task `name`: its `{layer index: part}` (`LayerAdapter`s or
    `LayerFusion`s) as `layer_<i>/<path>` and its head (if any) as `head/<path>`."""
    tensors = {f"layer_{index}/{_relative(weight, part)}": weight
               for index, part in parts.items() for weight in part.weights}
    return {**tensors, **_head_tensors(model, name)}


def _adapter_tensors(model, name):
    return _task_tensors(model, name, find_adapter_backbone(model).layer_adapters(name))


def _head_tensors(model, name):
    head = getattr(model, "heads", {}).get(name)
    if head is None:
        return {}
    return {f"head/{_relative(weight, head)}": weight for weight in head.weights}


FORMATS = ("keras_adapters", "adapterhub")


def save_adapter(model, directory, name, format="keras_adapters"):
    """Write one task's adapter, its layer norms and its head to `directory`.

    Writes `adapter_config.json` (the `AdapterConfig`, the head's Keras config,
    and `backbone_identity`) and `adapter_weights.safetensors` (tensors keyed
    `layer_<i>/<path>` and `head/<path>`). The directory is replaced
    atomically. For all-MiniLM-L6-v2 with adapter_size 64 it holds about
    2.4 MB, against 91 MB for the backbone.

    With `format="adapterhub"`, writes AdapterHub's `adapter_config.json`,
    `adapter.safetensors` and, for a `ClassificationHead`, `head_config.json`
    and `model_head.safetensors` instead (`saving.adapterhub`; BERT,
    RoBERTa, XLM-RoBERTa, ELECTRA and DistilBERT backbones, adapters with
    `train_layer_norms=False`), which `adapters` 1.3.0 loads with
    `model.load_adapter(directory, use_safetensors=True)`.

    Args:
        model: an `AdapterModel`, or any model holding an
            `AdapterBackbone` (then no head is saved).
        directory: str, the folder to write.
        name: str, the adapter (task) to save.
        format: `"keras_adapters"` (the default) or `"adapterhub"`.

    Raises:
        ValueError: if there is no adapter `name`, for an unknown `format`,
            or for an adapter or head AdapterHub's format cannot hold (naming
            why).

    Example:

    ```python
    keras_adapters.save_adapter(backbone, "for_adapterhub/sst2", "sst2", format="adapterhub")
    ```
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format!r}.")
    backbone = find_adapter_backbone(model)
    tensors = {key: np.asarray(w.numpy()) for key, w in _adapter_tensors(model, name).items()}
    head = getattr(model, "heads", {}).get(name)
    if format == "adapterhub":
        _save_adapterhub(backbone, directory, name, tensors, head)
        return
    config = {
        "format": ADAPTER_FORMAT,
        "name": name,
        "adapter_config": backbone.adapter_configs[name],
        "head": None if head is None else keras.saving.serialize_keras_object(head),
        "backbone": backbone_identity(backbone),
    }
    _write_folder(directory, {CONFIG_FILE: config, WEIGHTS_FILE: tensors})


def _save_adapterhub(backbone, directory, name, tensors, head):
    """`save_adapter(..., format="adapterhub")` once the tensors are read."""
    architecture = adapter_backbone_class(backbone).architecture.name
    adapter = {key: value for key, value in tensors.items() if not key.startswith("head/")}
    files = {adapterhub.CONFIG_FILE: adapterhub.adapterhub_config(  # Checks it can be written.
        backbone.adapter_configs[name], name, backbone.hidden_dim, architecture)}
    files[adapterhub.WEIGHTS_FILES[0]] = adapterhub.adapterhub_tensors(
        adapter, name, architecture, backbone.adapter_configs[name]["ln_before"])
    _write_folder(directory, {**files, **_adapterhub_head_files(backbone, name, tensors, head)})


def _adapterhub_head_files(backbone, name, tensors, head):
    """AdapterHub's head files for task `name`'s `head` (none without one)."""
    if head is None:
        return {}
    architecture = adapter_backbone_class(backbone).architecture
    head_config, head_tensors = adapterhub.adapterhub_head(
        head, {key: value for key, value in tensors.items() if key.startswith("head/")},
        name, backbone.hidden_dim, architecture.name, has_pooler=architecture.pooler is not None)
    return {adapterhub.HEAD_CONFIG_FILE: head_config,
            adapterhub.HEAD_WEIGHTS_FILES[0]: head_tensors}


def _write_folder(directory, files):
    """Write `{file name: JSON-ready dict, or tensors for safetensors}`, atomically."""
    with atomic_path(directory) as temporary:
        os.makedirs(temporary)
        for file, content in files.items():
            if file.endswith(".json"):
                with open(os.path.join(temporary, file), "w", encoding="utf-8") as f:
                    json.dump(content, f, indent=2, sort_keys=True)
            else:
                safetensors.numpy.save_file(content, os.path.join(temporary, file))


def _read_folder(directory, config_file, weights_file, expected_format):
    """`(config path, config dict, tensors)` of a folder this module wrote.

    Raises:
        ValueError: naming the file, if its `format` field is not `expected_format`.
    """
    config_path = os.path.join(directory, config_file)
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    if config.get("format") != expected_format:
        raise ValueError(
            f"{config_path}: field 'format' is {config.get('format')!r}, "
            f"expected {expected_format!r}."
        )
    with safetensors.safe_open(os.path.join(directory, weights_file), framework="numpy") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    return config_path, config, tensors


def _read_own_adapter(directory, backbone):
    """A `save_adapter` folder as `(config_path, name, AdapterConfig, head config, tensors)`."""
    config_path, config, tensors = _read_folder(directory, CONFIG_FILE, WEIGHTS_FILE,
                                                ADAPTER_FORMAT)
    _check_identity(config_path, config, backbone)
    return (config_path, config["name"], AdapterConfig.from_dict(config["adapter_config"]),
            config["head"], tensors)


def _check_identity(config_path, config, backbone):
    for field, value in backbone_identity(backbone).items():
        saved = config["backbone"].get(field)
        if saved != value:
            raise ValueError(
                f"{config_path}: field 'backbone.{field}' is {saved!r}, but this "
                f"backbone has {value!r}: it was trained on another backbone."
            )


def _read_adapterhub_adapter(directory, backbone):
    """An AdapterHub folder as `_read_own_adapter` gives ours."""
    config_path, name, config, tensors = adapterhub.read_adapter(
        directory, backbone.hidden_dim, backbone.num_layers)
    head, head_tensors = _adapterhub_head(directory, name, backbone)
    return config_path, name, config, head, {**tensors, **head_tensors}


def _adapterhub_head(directory, name, backbone):
    """`(serialized ClassificationHead, its tensors)` of an AdapterHub folder, or `(None, {})`."""
    head = adapterhub.read_head(directory, name, dropout=getattr(backbone, "dropout", 0.1))
    if head is None:
        return None, {}
    arguments, head_tensors = head
    layer = ClassificationHead(**arguments, dtype=backbone.dtype_policy)
    return keras.saving.serialize_keras_object(layer), head_tensors


def load_adapter(model, directory, load_as=None):
    """Add a task saved by `save_adapter`, or an AdapterHub adapter, to `model`.

    A folder written by `save_adapter` is loaded exactly as it was saved.
    An AdapterHub folder (`adapter_config.json` with `adapter.safetensors`
    or `pytorch_adapter.bin`, from `adapters`' `save_adapter`) is read by
    `saving.adapterhub`: its `double_seq_bn`, `seq_bn` and `par_bn` adapters,
    with the fields that change them, compute here what they compute in
    AdapterHub, with the pretrained layer norms, and its
    classification or regression head becomes a `ClassificationHead`.

    Args:
        model: an `AdapterModel` (the head is restored too), or any model
            holding an `AdapterBackbone` (the head, if saved, is ignored).
        directory: str, a folder written by `save_adapter` or AdapterHub, or
            the Hugging Face Hub id of an AdapterHub adapter (with
            `huggingface_hub` installed and a network).
        load_as: str or None, the name to give it; defaults to the saved name.

    Returns:
        str, the name it was loaded as. It is not made active.

    Raises:
        ValueError: naming the file and field, if the saved backbone identity
            (`hidden_dim`, `num_layers`, `vocabulary_size`,
            `vocabulary_sha256`; AdapterHub's `hidden_size`) differs from the
            model's, the name is taken, a tensor is missing or has the wrong
            shape, or an AdapterHub configuration is not supported (naming
            the field and value). The model is left unchanged when this is
            raised.

    Example:

    ```python
    name = keras_adapters.load_adapter(backbone, "adapterhub/sst2")  # AdapterHub's folder
    backbone.set_active_adapters(name)
    ```
    """
    backbone = find_adapter_backbone(model)
    directory = adapterhub.local_folder(directory)
    if adapterhub.is_adapterhub_folder(directory):
        read = _read_adapterhub_adapter(directory, backbone)
    else:
        read = _read_own_adapter(directory, backbone)
    config_path, saved_name, adapter_config, head, tensors = read
    if head is None or getattr(model, "heads", None) is None:
        tensors = {key: value for key, value in tensors.items() if not key.startswith("head/")}
    name = load_as or saved_name
    if name in {**backbone.adapter_configs, **backbone.fusion_configs}:
        raise ValueError(f"{config_path}: an adapter named {name!r} already exists.")
    backbone.add_adapter(name, adapter_config)
    _fill(model, name, head, tensors, config_path, _adapter_tensors,
          lambda: backbone.remove_adapter(name))
    return name


def _fill(model, name, head, tensors, config_path, targets_of, remove):
    """Add task `name`'s saved `head` to `model` and assign `tensors` to
    `targets_of(model, name)`; on any error, `remove()` what was added and raise."""
    heads = getattr(model, "heads", None)
    try:
        if heads is not None and head is not None:
            head_config = dict(head, config=dict(head["config"]))
            head_config["config"]["name"] = keras_name("head", name)
            model.add_head(name, keras.saving.deserialize_keras_object(head_config))
        targets = targets_of(model, name)
        if set(targets) != set(tensors):
            raise ValueError(
                f"{config_path}: the weights file holds {sorted(set(tensors) - set(targets))} "
                f"unexpected and lacks {sorted(set(targets) - set(tensors))}."
            )
        _assign(config_path, targets, tensors)
    except Exception:
        if heads is not None and name in heads:
            with tracking_unlocked(model):
                heads.pop(name)
        remove()
        raise


FUSION_FORMAT = "keras_adapters.layers.adapter_fusion/1"
FUSION_CONFIG_FILE = adapterhub.FUSION_CONFIG_FILE  # Told apart by its "format" field.
FUSION_WEIGHTS_FILE = "adapter_fusion_weights.safetensors"


def _fusion_tensors(model, name):
    return _task_tensors(model, name, find_adapter_backbone(model).layer_fusions(name))


def save_adapter_fusion(model, directory, name, format="keras_adapters"):
    """Write AdapterFusion `name` (its fusion layers and head) to `directory`.

    Its adapters are not written: save them with `save_adapter`, and load
    them before the fusion. Writes `adapter_fusion_config.json` (the fused
    adapters, the `AdapterFusionConfig`, the head's Keras config and
    `backbone_identity`) and `adapter_fusion_weights.safetensors` (keys
    `layer_<i>/<slot>_fusion/<query|key|value>/<kernel|bias>` and
    `head/<path>`), replacing the folder atomically.

    With `format="adapterhub"`, writes AdapterHub's
    `adapter_fusion_config.json` and `model_adapter_fusion.safetensors`
    (and the head as `save_adapter` does), which `adapters` 1.3.0 loads
    with `model.load_adapter_fusion(directory, use_safetensors=True)`, head
    included, once the fused adapters are loaded.

    Args:
        model: an `AdapterModel`, or any model holding an `AdapterBackbone`.
        directory: str, the folder to write.
        name: str, the AdapterFusion.
        format: `"keras_adapters"` (the default) or `"adapterhub"`.

    Raises:
        ValueError: if there is no such fusion, for an unknown `format`, or
            for a fusion (pruned per layer) or head AdapterHub's format
            cannot hold.

    Example:

    ```python
    model.save_adapter_fusion("fusions/rte", "cola,sst2,mrpc,stsb,rte")
    ```
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format!r}.")
    backbone = find_adapter_backbone(model)
    tensors = {key: np.asarray(w.numpy()) for key, w in _fusion_tensors(model, name).items()}
    head = getattr(model, "heads", {}).get(name)
    fusion = backbone.fusion_configs[name]
    if format == "adapterhub":
        architecture = adapter_backbone_class(backbone).architecture.name
        fused = {key: value for key, value in tensors.items() if not key.startswith("head/")}
        config, fused = adapterhub.adapterhub_fusion(fusion, fused, name, backbone.hidden_dim,
                                                     architecture)
        files = {adapterhub.FUSION_CONFIG_FILE: config, adapterhub.FUSION_WEIGHTS_FILES[0]: fused,
                 **_adapterhub_head_files(backbone, name, tensors, head)}
    else:
        files = {FUSION_CONFIG_FILE: {
            "format": FUSION_FORMAT, "name": name, "adapters": fusion["adapters"],
            "config": fusion["config"],
            "head": None if head is None else keras.saving.serialize_keras_object(head),
            "backbone": backbone_identity(backbone)}, FUSION_WEIGHTS_FILE: tensors}
    _write_folder(directory, files)


def _read_own_fusion(directory, backbone):
    config_path, config, tensors = _read_folder(directory, FUSION_CONFIG_FILE,
                                                FUSION_WEIGHTS_FILE, FUSION_FORMAT)
    _check_identity(config_path, config, backbone)
    return (config_path, config["name"], config["adapters"],
            AdapterFusionConfig.load(config["config"]), config["head"], tensors)


def _read_adapterhub_fusion(directory, backbone):
    config_path, name, adapters, config, tensors = adapterhub.read_fusion(
        directory, backbone.hidden_dim)
    head, head_tensors = _adapterhub_head(directory, name, backbone)
    return config_path, name, adapters, config, head, {**tensors, **head_tensors}


def load_adapter_fusion(model, directory, load_as=None):
    """Add an AdapterFusion saved by `save_adapter_fusion`, or AdapterHub's, to `model`.

    The adapters it fuses must be in the model already, under their saved
    names (`load_adapter`). An AdapterHub folder
    (`adapter_fusion_config.json` with `adapter_names`, from `adapters`'
    `save_adapter_fusion`) computes here what it computes in AdapterHub,
    its head (saved `with_head=True`) included.

    Args:
        model: an `AdapterModel` (its head is restored too), or any model
            holding an `AdapterBackbone`.
        directory: str, the folder, or the Hugging Face Hub id of an
            AdapterHub fusion (with `huggingface_hub` installed and a network).
        load_as: str or None, the name to give it; defaults to the saved one.

    Returns:
        str, the name it was loaded as. It is not made active.

    Raises:
        ValueError: naming the file and field, for a fused adapter the model
            lacks, a name already taken, another backbone, an unsupported
            configuration (`temperature=True`), or a missing or misshapen
            tensor. The model is left unchanged.

    Example:

    ```python
    for task in ("mnli", "qqp", "sick"):
        model.load_adapter(f"adapterhub/{task}")
    name = model.load_adapter_fusion("adapterhub/fusion")  # "mnli,qqp,sick"
    model.set_active_adapters(name)
    ```
    """
    backbone = find_adapter_backbone(model)
    directory = adapterhub.local_folder(directory)
    read = (_read_adapterhub_fusion if adapterhub.is_adapterhub_fusion_folder(directory)
            else _read_own_fusion)
    config_path, saved_name, adapters, config, head, tensors = read(directory, backbone)
    missing = sorted({a for names in (adapters.values() if isinstance(adapters, dict)
                                      else [adapters]) for a in names}
                     - set(backbone.adapter_configs))
    if missing:
        raise ValueError(f"{config_path}: field 'adapters' names {missing}, which the model "
                         "lacks; load those adapters first (load_adapter).")
    if head is None or getattr(model, "heads", None) is None:
        tensors = {key: value for key, value in tensors.items() if not key.startswith("head/")}
    name = load_as or saved_name
    try:
        backbone.add_adapter_fusion(adapters, config, name=name)
    except ValueError as error:
        raise ValueError(f"{config_path}: {error}") from error
    _fill(model, name, head, tensors, config_path, _fusion_tensors,
          lambda: backbone.remove_adapter_fusion(name))
    return name
