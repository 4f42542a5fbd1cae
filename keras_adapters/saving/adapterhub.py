"""AdapterHub adapter folders (`adapters` 1.3.0), read into this library's adapters.

An AdapterHub folder, as `model.save_adapter(directory, name)` writes it:
`adapter_config.json`, `{"config": {<BnConfig fields>}, "hidden_size",
"model_type", "name", "version"}`, and the weights in `adapter.safetensors`
or `pytorch_adapter.bin`, keyed like
`bert.encoder.layer.<i>.output.adapters.<name>.adapter_down.0.weight`
(PyTorch `Linear` weights are `(out, in)`: a Keras kernel is the transpose).

Read: AdapterHub's bottleneck adapters, `double_seq_bn`, `seq_bn` and
`par_bn`, with every field that changes what they compute
(`reduction_factor`, also per layer; `non_linearity`; `original_ln_before`,
`original_ln_after`, `residual_before_ln`, `adapter_residual_before_ln`,
`ln_before`, `ln_after`, `scaling`, `use_gating`, `is_parallel`,
`leave_out`, training `dropout`; `init_weights` is kept for adapters drawn
afresh): each becomes
the `AdapterConfig` field of the same name, and `AdapterTransformerEncoder`
computes AdapterHub's dataflow for it. A field we do not compute
(`stochastic_depth`, PHM layers, invertible or cross adapters), an
adapter after the attention output alone, or an unknown field raises an
error naming the file, the field and its value. A classification head
(`head_config.json` with `model_head.safetensors` or
`pytorch_model_head.bin`; regression is one label) becomes a
`ClassificationHead` with AdapterHub's `layers`, `activation_function`,
`use_pooler` and dropout.

Written: the same configurations and heads, for every architecture here:
BERT, RoBERTa, XLM-RoBERTa, ELECTRA and DistilBERT (load them in AdapterHub
with `load_adapter(directory, use_safetensors=True)`), for adapters that use
the pretrained layer norms (`train_layer_norms=False`), as AdapterHub's do.
Read from the same five, in AdapterHub's and adapter-transformers' weight
names.

AdapterFusion folders (`adapter_fusion_config.json` with
`model_adapter_fusion.safetensors` or `pytorch_model_adapter_fusion.bin`,
keys `...layer.<i>.<location>.adapter_fusion_layer.<name>.<query|key|value>.*`)
are read and written too (`read_fusion`, `adapterhub_fusion`).
"""

import json
import os
import re
from typing import NamedTuple

import numpy as np

from keras_adapters.configuration.adapter_config import AdapterConfig
from keras_adapters.configuration.adapter_fusion_config import AdapterFusionConfig
from keras_adapters.layers.heads import ClassificationHead
from keras_adapters.saving.checkpoints import read_tensors

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILES = ("adapter.safetensors", "pytorch_adapter.bin")
HEAD_CONFIG_FILE = "head_config.json"
HEAD_WEIGHTS_FILES = ("model_head.safetensors", "pytorch_model_head.bin")

# AdapterHub `non_linearity` -> `AdapterConfig.activation` (AdapterHub lowercases it;
# "gelu" is the exact erf GELU, "gelu_new" the tanh one, "swish" is x * sigmoid(x)).
ACTIVATIONS = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu_approximate",
    "swish": "silu",
    "silu": "silu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
}
# Files without a "version" key predate `adapters`; their names meant otherwise.
LEGACY_ACTIVATIONS = {"gelu": "gelu_new", "gelu_orig": "gelu"}

# AdapterHub's `BnConfig` fields and defaults, as its adapter_config.json holds them
# (`mh_adapter`, `output_adapter`, `reduction_factor`, `non_linearity` have none).
BN_CONFIG_DEFAULTS = {
    "original_ln_before": False, "original_ln_after": True, "residual_before_ln": True,
    "adapter_residual_before_ln": False, "ln_before": False, "ln_after": False,
    "init_weights": "bert", "init_weights_seed": None, "is_parallel": False, "scaling": 1.0,
    "use_gating": False, "inv_adapter": None, "inv_adapter_reduction_factor": None,
    "cross_adapter": False, "leave_out": [], "dropout": 0.0, "phm_layer": False, "phm_dim": 4,
    "factorized_phm_W": True, "shared_W_phm": False, "shared_phm_rule": True,
    "factorized_phm_rule": False, "phm_c_init": "normal", "phm_init_range": 0.0001,
    "learn_phm": True, "hypercomplex_nonlinearity": "glorot-uniform", "phm_rank": 1,
    "phm_bias": True, "stochastic_depth": 0.0,
}
# `BnConfig` fields that `AdapterConfig` holds under the same name.
SHARED_FIELDS = ("original_ln_before", "original_ln_after", "residual_before_ln",
                 "adapter_residual_before_ln", "ln_before", "ln_after", "scaling", "use_gating",
                 "is_parallel", "init_weights", "dropout")
# The other fields that change what an adapter computes or trains, and the only
# value of each that this library computes yet.
NOT_YET = {field: BN_CONFIG_DEFAULTS[field] for field in (
    "stochastic_depth", "phm_layer", "inv_adapter", "cross_adapter")}
READ = {"mh_adapter", "output_adapter", "reduction_factor", "non_linearity",
        *BN_CONFIG_DEFAULTS}
VERSION = "adapters.1.3.0"


class AdapterHubNames(NamedTuple):
    """How AdapterHub names one architecture's adapters (`adapters` 1.3.0)."""

    model_type: str
    model_class: str  # Its `*AdapterModel`.
    layers: str  # The transformer layers' module path.
    locations: dict  # AdapterHub's `BottleneckLayer` -> our adapter slot.
    pooler: bool = True  # Whether its base model has a pooler (`use_pooler` heads).


BERT_LOCATIONS = {"attention.output": "attention_adapter", "output": "feedforward_adapter"}
# `Architecture.name` -> its names.
ARCHITECTURES = {
    "bert": AdapterHubNames("bert", "BertAdapterModel", "bert.encoder.layer", BERT_LOCATIONS),
    "roberta": AdapterHubNames("roberta", "RobertaAdapterModel", "roberta.encoder.layer",
                               BERT_LOCATIONS),
    "xlm_roberta": AdapterHubNames("xlm-roberta", "XLMRobertaAdapterModel",
                                   "roberta.encoder.layer", BERT_LOCATIONS),
    "electra": AdapterHubNames("electra", "ElectraAdapterModel", "electra.encoder.layer",
                               BERT_LOCATIONS, pooler=False),
    "distil_bert": AdapterHubNames(
        "distilbert", "DistilBertAdapterModel", "distilbert.transformer.layer",
        {"attention_adapters": "attention_adapter", "output_adapters": "feedforward_adapter"},
        pooler=False),
}
# Every location name, for reading (a key names its architecture by its prefix alone).
LOCATIONS = {location: slot for names in ARCHITECTURES.values()
             for location, slot in names.locations.items()}

# The start of an AdapterHub weight key, any architecture (a key names its
# architecture by its prefix alone): `<prefix>.encoder.layer.<i>.<location>`.
LAYER_KEY = (rf"^(?:\w+\.)?(?:encoder|transformer)\.layer\.(\d+)\."
             rf"({'|'.join(map(re.escape, LOCATIONS))})")

# Our weight key (`adapter_files` layout) for each part of an AdapterHub key.
LINEAR = {"weight": "kernel", "bias": "bias"}
LAYER_NORM = {"weight": "gamma", "bias": "beta"}


def _modules(ln_before):
    """`{AdapterHub module: (our sub-layer, its parameter names)}` of one adapter.

    With `ln_before`, AdapterHub's `adapter_down` Sequential starts with the
    layer norm, which it also holds as `adapter_norm_before`: the state dict
    has it twice, and the down-projection is `adapter_down.1`.
    """
    modules = {f"adapter_down.{int(ln_before)}": ("down_projection", LINEAR),
               "adapter_up": ("up_projection", LINEAR), "gate": ("gate", LINEAR),
               "adapter_norm_after": ("norm_after", LAYER_NORM)}
    if ln_before:
        modules["adapter_norm_before"] = modules["adapter_down.0"] = ("norm_before", LAYER_NORM)
    return modules


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def local_folder(directory):
    """`directory`, or a local copy of the Hugging Face Hub repository it names.

    A path that is no folder but looks like `owner/name` (an AdapterHub
    adapter on the Hub, e.g. `"AdapterHub/bert-base-uncased-pf-mrpc"`) is
    fetched with `huggingface_hub.snapshot_download`, which needs that
    package and a network (or its cache).

    Raises:
        FileNotFoundError: naming `directory`, when it cannot be fetched.
    """
    if os.path.isdir(directory) or not HUB_ID.match(directory):
        return directory
    try:
        import huggingface_hub  # An optional dependency.
    except ImportError:
        raise FileNotFoundError(
            f"{directory!r} is not a folder; to fetch it as a Hugging Face Hub id, "
            "`pip install huggingface_hub` (and have a network).") from None
    try:
        return huggingface_hub.snapshot_download(directory)
    except Exception as error:  # Offline, unknown repository, no access...
        raise FileNotFoundError(f"{directory!r} is not a folder, and fetching it from the "
                                f"Hugging Face Hub failed: {error}") from error


def _names(architecture):
    """`ARCHITECTURES[architecture]`; ValueError for an architecture not written yet."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"AdapterHub has no {architecture!r} backbone; it is written for "
                         f"{sorted(ARCHITECTURES)}.")
    return ARCHITECTURES[architecture]


def _json_has(path, field):
    """Whether JSON file `path` exists and holds top-level `field`."""
    if not os.path.exists(path):
        return False
    with open(path, encoding="utf-8") as f:
        return field in json.load(f)


def is_adapterhub_folder(directory):
    """Whether `directory` holds an AdapterHub `adapter_config.json` (with a `"config"` field)."""
    return _json_has(os.path.join(directory, CONFIG_FILE), "config")


def _field_error(path, field, value, why):
    return ValueError(f"{path}: field 'config.{field}' is {value!r}: {why}.")


def adapter_config(saved, path, hidden_dim, num_layers):
    """The `AdapterConfig` of an AdapterHub `adapter_config.json` dict.

    Args:
        saved: the file's dict.
        path: str, the file (for errors).
        hidden_dim: int, the backbone's hidden size.
        num_layers: int, its number of transformer layers.

    Raises:
        ValueError: naming the file, the field and its value, for a
            configuration this library does not compute, or a hidden size
            other than the backbone's.
    """
    config = saved["config"]
    if config.get("architecture") is not None:  # LoRA, prefix tuning, ReFT...
        raise _field_error(path, "architecture", config["architecture"],
                           "only bottleneck adapters (architecture null) are read")
    config = {field: value for field, value in config.items() if field != "architecture"}
    if saved.get("hidden_size", hidden_dim) != hidden_dim:
        raise ValueError(f"{path}: field 'hidden_size' is {saved['hidden_size']}, but this "
                         f"backbone has {hidden_dim}.")
    for field, value in config.items():
        if field in NOT_YET and value != NOT_YET[field]:
            raise _field_error(path, field, value,
                               f"not supported yet (only {NOT_YET[field]!r} is)")
        if field not in READ:
            raise _field_error(path, field, value, "unknown field")
    if not config.get("output_adapter"):
        raise _field_error(path, "output_adapter", config.get("output_adapter"),
                           "an adapter after the attention output alone is not supported")
    activation = str(config.get("non_linearity")).lower()
    if "version" not in saved:
        activation = LEGACY_ACTIVATIONS.get(activation, activation)
    if activation not in ACTIVATIONS:
        raise _field_error(path, "non_linearity", config.get("non_linearity"),
                           f"expected one of {sorted(ACTIVATIONS)}")
    factors = config.get("reduction_factor")
    if isinstance(factors, dict) and "default" not in factors:
        missing = [i for i in range(num_layers)
                   if str(i) not in factors and i not in (config.get("leave_out") or ())]
        if missing:
            raise _field_error(path, "reduction_factor", factors,
                               f"no entry for layer {missing[0]} and no 'default'")
    sizes = {key: _adapter_size(path, factors, factor, hidden_dim)
             for key, factor in (factors.items() if isinstance(factors, dict) else [(0, factors)])}
    try:
        return AdapterConfig(
            adapter_size=sizes if isinstance(factors, dict) else sizes[0],
            activation=ACTIVATIONS[activation],
            placement="houlsby" if config.get("mh_adapter") else "pfeiffer",
            train_layer_norms=False,  # AdapterHub trains adapters and the head only.
            leave_out=tuple(config.get("leave_out") or ()),
            **{field: config.get(field, BN_CONFIG_DEFAULTS[field]) for field in SHARED_FIELDS},
        )
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def _adapter_size(path, factors, factor, hidden_dim):
    """AdapterHub's bottleneck size for one `reduction_factor` entry: `int(H // rf)`, at least 1."""
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
        raise _field_error(path, "reduction_factor", factors, "expected a positive number, or "
                           "a dict from layer index or 'default' to one")
    return max(1, int(hidden_dim // factor))


# Weight names of adapter-transformers, before `adapters` (AdapterHub renames them too).
LEGACY_MODULES = ("attention_text_task_adapters", "attention_text_lang_adapters",
                  "layer_text_task_adapters", "layer_text_lang_adapters")


def _renamed_legacy(key):
    for legacy in LEGACY_MODULES:
        key = key.replace(legacy, "adapters")
    return key


def adapter_tensors(tensors, name, path, ln_before):
    """AdapterHub weights renamed to `adapter_files`' keys (`layer_<i>/<part>/<weight>`).

    Args:
        tensors: `{AdapterHub key: array}`.
        name: str, the adapter.
        path: str, the weights file (for errors).
        ln_before: bool, the config's `ln_before` (it renumbers `adapter_down`).

    Raises:
        ValueError: naming the file and the key, for a tensor that is not a
            bottleneck adapter weight of adapter `name`.
    """
    modules = _modules(ln_before)
    tensors = {_renamed_legacy(key): value for key, value in tensors.items()}
    key = re.compile(
        rf"{LAYER_KEY}\.adapters\.{re.escape(name)}\."
        rf"(?:(scaling)|({'|'.join(map(re.escape, modules))})\.(weight|bias))$")
    renamed = {}
    for saved_key, value in tensors.items():
        match = key.match(saved_key)
        if match is None:
            raise ValueError(f"{path}: tensor {saved_key!r} is not a weight of a bottleneck "
                             f"adapter named {name!r} this library reads.")
        layer, location, scaling, module, parameter = match.groups()
        prefix = f"layer_{layer}/{LOCATIONS[location]}"
        if scaling:
            renamed[f"{prefix}/scaling"] = value
            continue
        ours, parameters = modules[module]
        transpose = parameters is LINEAR and parameter == "weight"
        renamed[f"{prefix}/{ours}/{parameters[parameter]}"] = value.T if transpose else value
    return renamed


def read_adapter(directory, hidden_dim, num_layers):
    """An AdapterHub adapter folder as `(config_path, name, AdapterConfig, tensors)`.

    `tensors` are keyed as `adapter_files` keys an adapter's weights.
    Weights come from `adapter.safetensors`, else `pytorch_adapter.bin`
    (through PyTorch, `weights_only=True`).

    Raises:
        ValueError: see `adapter_config` and `adapter_tensors`.
        FileNotFoundError: if neither weights file exists.
        ImportError: for a `.bin` file without PyTorch.
    """
    path = os.path.join(directory, CONFIG_FILE)
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    config = adapter_config(saved, path, hidden_dim, num_layers)
    file, tensors = read_tensors(directory, *WEIGHTS_FILES)
    return path, saved["name"], config, adapter_tensors(tensors, saved["name"], file,
                                                        config.ln_before)


# `AdapterConfig.activation` -> AdapterHub `non_linearity`.
NON_LINEARITIES = {ours: theirs for theirs, ours in ACTIVATIONS.items() if theirs != "silu"}


def _reduction_factor(adapter_size, hidden_dim):
    """AdapterHub's `reduction_factor` for a bottleneck of `adapter_size`.

    AdapterHub's size is `int(H // rf)`: `H / m` when m divides H; otherwise
    `H / (m + 0.5)`, since `H // (H / m)` can round down to m - 1 (8 / 5).
    """
    if hidden_dim % adapter_size == 0:
        return hidden_dim // adapter_size
    return hidden_dim / (adapter_size + 0.5)


def adapterhub_config(config, name, hidden_dim, architecture):
    """AdapterHub's `adapter_config.json` dict for an `AdapterConfig.to_dict()`.

    Raises:
        ValueError: naming the field, for an adapter AdapterHub cannot hold:
            one that trains its own layer norms (`train_layer_norms=True`;
            AdapterHub's use the pretrained ones), an activation AdapterHub
            lacks, or an architecture not written yet.
    """
    names = _names(architecture)
    if config["train_layer_norms"]:
        raise ValueError(
            f"Adapter {name!r} has train_layer_norms=True: it trains its own copies of the "
            "layer norms, which AdapterHub's adapters cannot hold (they use the pretrained "
            "ones). Train with AdapterConfig(train_layer_norms=False) to share it.")
    if config["activation"] not in NON_LINEARITIES:
        raise ValueError(f"Adapter {name!r} has activation {config['activation']!r}, which "
                         f"AdapterHub lacks; expected one of {sorted(NON_LINEARITIES)}.")
    config = AdapterConfig.from_dict(config)
    factors = config.reduction_factor
    if factors is None:  # AdapterHub has no size field: the factor that gives each size.
        sizes = config.adapter_size
        factors = ({key: _reduction_factor(size, hidden_dim) for key, size in sizes.items()}
                   if isinstance(sizes, dict) else _reduction_factor(sizes, hidden_dim))
    return {
        "config": {
            **BN_CONFIG_DEFAULTS,
            "mh_adapter": config.placement == "houlsby",
            "output_adapter": True,
            "reduction_factor": factors,
            "non_linearity": NON_LINEARITIES[config.activation],
            "leave_out": list(config.leave_out),
            **{field: getattr(config, field) for field in SHARED_FIELDS},
        },
        "hidden_size": hidden_dim,
        "model_class": names.model_class,
        "model_name": "",
        "model_type": names.model_type,
        "name": name,
        "version": VERSION,
    }


def adapterhub_tensors(tensors, name, architecture, ln_before):
    """`adapter_files`' adapter tensors renamed to AdapterHub's keys (kernels transposed).

    Args:
        tensors: `{"layer_<i>/<slot>_adapter/<sub-layer>/<weight>": array}`
            (or `.../scaling`).
        name: str, the adapter.
        architecture: str, a key of `ARCHITECTURES` (checked by
            `adapterhub_config` first).
        ln_before: bool, the config's `ln_before`.

    Returns:
        `{"<prefix>.encoder.layer.<i>.<location>.adapters.<name>.<module>.<weight|bias>": array}`,
        as AdapterHub's `BottleneckLayer` names them (adapters 1.3.0).
    """
    names = ARCHITECTURES[architecture]
    locations = {ours: theirs for theirs, ours in names.locations.items()}
    modules = {}  # Our sub-layer -> its AdapterHub modules (the layer norm before twice).
    for theirs, (ours, parameters) in _modules(ln_before).items():
        modules.setdefault(ours, []).append((theirs, parameters))
    renamed = {}
    for key, value in tensors.items():
        layer, location, *weight = key.split("/")
        start = (f"{names.layers}.{layer.removeprefix('layer_')}.{locations[location]}"
                 f".adapters.{name}")
        if weight == ["scaling"]:
            renamed[f"{start}.scaling"] = np.ascontiguousarray(value)
            continue
        for module, parameters in modules[weight[0]]:
            parameter = {ours: theirs for theirs, ours in parameters.items()}[weight[1]]
            transpose = parameters is LINEAR and parameter == "weight"
            renamed[f"{start}.{module}.{parameter}"] = np.ascontiguousarray(
                value.T if transpose else value)
    return renamed


# AdapterHub `ClassificationHead` config fields this library's `ClassificationHead` holds.
HEAD_FIELDS = {"head_type", "num_labels", "layers", "activation_function", "label2id",
               "use_pooler", "bias", "dropout_prob"}


def head_layer_config(saved, path, dropout):
    """`ClassificationHead` arguments for an AdapterHub `head_config.json` dict.

    Args:
        saved: the file's dict.
        path: str, the file (for errors).
        dropout: float, the rate AdapterHub falls back on when `dropout_prob`
            is null (the checkpoint's `hidden_dropout_prob`).

    Raises:
        ValueError: naming the file, the field and its value, for a head
            other than a classification (or one-label regression) head with
            biases and an activation.
    """
    config = saved["config"]
    for field, value in config.items():
        if field not in HEAD_FIELDS:
            raise ValueError(f"{path}: field 'config.{field}' is {value!r}: unknown field.")
    if config.get("head_type") != "classification":
        raise ValueError(f"{path}: field 'config.head_type' is {config.get('head_type')!r}: "
                         "only 'classification' (regression with num_labels 1) is read yet.")
    if config.get("bias", True) is not True:
        raise ValueError(f"{path}: field 'config.bias' is {config['bias']!r}: not supported.")
    activation = str(config.get("activation_function")).lower()
    if activation not in ACTIVATIONS:
        raise ValueError(f"{path}: field 'config.activation_function' is "
                         f"{config.get('activation_function')!r}: expected one of "
                         f"{sorted(ACTIVATIONS)}.")
    return {
        "num_classes": config["num_labels"],
        "dropout": dropout if config.get("dropout_prob") is None else config["dropout_prob"],
        "layers": config.get("layers", 2),
        "activation": ACTIVATIONS[activation],
        "use_pooler": config.get("use_pooler", False),
    }


def read_head(directory, name, dropout):
    """An AdapterHub folder's head as `(ClassificationHead arguments, tensors)`, or None.

    None when the folder has no `head_config.json`. `tensors` are keyed
    `head/<dense>/<weight>`, as `adapter_files` keys a head's weights.

    Raises:
        ValueError: see `head_layer_config` and `head_tensors`.
    """
    path = os.path.join(directory, HEAD_CONFIG_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        arguments = head_layer_config(json.load(f), path, dropout)
    file, tensors = read_tensors(directory, *HEAD_WEIGHTS_FILES)
    return arguments, head_tensors(tensors, name, arguments["layers"], file)


def _head_denses(layers):
    """`{AdapterHub Sequential index: our Dense name}` for a `layers`-layer head.

    Each hidden block is (dropout, linear, activation), the last one
    (dropout, linear): linear `i` sits at index `3 * i + 1`.
    """
    return {3 * i + 1: f"hidden_dense_{i}" if i < layers - 1 else "output_dense"
            for i in range(layers)}


def head_tensors(tensors, name, layers, path):
    """AdapterHub head weights (`heads.<name>.<index>.weight`) as `head/<dense>/<weight>` keys.

    AdapterHub's `PredictionHead.build` (adapters 1.3.0, `heads/base.py`)
    numbers the modules of its `Sequential`; weights `(out, in)` become
    Keras kernels `(in, out)`.

    Raises:
        ValueError: naming the file and the key, for a tensor that is not a
            dense layer of a `layers`-layer head named `name`.
    """
    ours = _head_denses(layers)
    key = re.compile(rf"^heads\.{re.escape(name)}\.(\d+)\.(weight|bias)$")
    renamed = {}
    for saved_key, value in tensors.items():
        match = key.match(saved_key)
        if match is None or int(match.group(1)) not in ours:
            raise ValueError(f"{path}: tensor {saved_key!r} is not a weight of a "
                             f"{layers}-layer classification head named {name!r}.")
        index, parameter = int(match.group(1)), match.group(2)
        renamed[f"head/{ours[index]}/{LINEAR[parameter]}"] = (
            value.T if parameter == "weight" else value)
    return renamed


def adapterhub_head(head, tensors, name, hidden_dim, architecture, has_pooler=True):
    """AdapterHub's `(head_config.json dict, head tensors)` for a `ClassificationHead`.

    On an architecture without a pooler here (RoBERTa, XLM-R, DistilBERT),
    our `pooled_output` is the first token's state, which AdapterHub reads
    with `use_pooler=False`; it is written so.

    Args:
        head: the `ClassificationHead`.
        tensors: its weights as `adapter_files` keys them (`head/<dense>/<weight>`).
        name: str, the task.
        hidden_dim: int, the backbone's hidden size.
        architecture: str, `Architecture.name`, a key of `ARCHITECTURES`.
        has_pooler: bool, whether the architecture has a pooler (`Architecture.pooler`).

    Raises:
        ValueError: for another kind of head, an activation AdapterHub lacks,
            or a head on keras-hub's pooler where AdapterHub's model has
            none (ELECTRA).
    """
    if type(head) is not ClassificationHead:
        raise ValueError(f"Task {name!r} has a {type(head).__name__}; only a "
                         "ClassificationHead is written in AdapterHub's format.")
    if head.activation not in NON_LINEARITIES:
        raise ValueError(f"Task {name!r}'s head has activation {head.activation!r}, which "
                         f"AdapterHub lacks; expected one of {sorted(NON_LINEARITIES)}.")
    names = ARCHITECTURES[architecture]
    use_pooler = head.use_pooler and has_pooler
    if use_pooler and not names.pooler:
        raise ValueError(f"Task {name!r}'s head reads keras-hub's pooler, which AdapterHub's "
                         f"{names.model_class} lacks; use ClassificationHead(use_pooler=False).")
    config = {
        "config": {
            "head_type": "classification", "num_labels": head.num_classes,
            "layers": head.layers, "activation_function": NON_LINEARITIES[head.activation],
            "label2id": {f"LABEL_{i}": i for i in range(head.num_classes)},
            "use_pooler": use_pooler, "bias": True,
            "dropout_prob": head.dropout,
        },
        "hidden_size": hidden_dim, "model_class": names.model_class, "model_name": "",
        "model_type": names.model_type, "name": name, "version": VERSION,
    }
    indices = {dense: index for index, dense in _head_denses(head.layers).items()}
    parameters = {ours: theirs for theirs, ours in LINEAR.items()}
    renamed = {}
    for key, value in tensors.items():
        _, dense, parameter = key.split("/")
        renamed[f"heads.{name}.{indices[dense]}.{parameters[parameter]}"] = (
            np.ascontiguousarray(value.T if parameter == "kernel" else value))
    return config, renamed


# AdapterFusion folders: `model.save_adapter_fusion(directory, "a,b", use_safetensors=True)`.
FUSION_CONFIG_FILE = "adapter_fusion_config.json"
FUSION_WEIGHTS_FILES = ("model_adapter_fusion.safetensors", "pytorch_model_adapter_fusion.bin")
FUSION_MODULES = ("query", "key", "value")


def is_adapterhub_fusion_folder(directory):
    """Whether `directory` holds AdapterHub's `adapter_fusion_config.json` (with `"adapter_names"`)."""
    return _json_has(os.path.join(directory, FUSION_CONFIG_FILE), "adapter_names")


def _fusion_slot(location):
    """Our `LayerFusion` sub-layer for an AdapterHub location (`output` -> `feedforward_fusion`)."""
    return LOCATIONS[location].removesuffix("_adapter") + "_fusion"


def read_fusion(directory, hidden_dim):
    """An AdapterHub AdapterFusion folder as `(config_path, name, adapter names,
    AdapterFusionConfig, tensors)`.

    `tensors` are keyed `layer_<i>/<slot>_fusion/<query|key|value>/<kernel|bias>`,
    as `adapter_files` keys a fusion's weights (kernels transposed).

    Raises:
        ValueError: naming the file, the field and its value, for an unknown
            field, `temperature=True` or another hidden size; naming the file
            and the key, for a tensor that is no weight of this fusion.
        FileNotFoundError: if neither weights file exists.
    """
    path = os.path.join(directory, FUSION_CONFIG_FILE)
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    if saved.get("hidden_size", hidden_dim) != hidden_dim:
        raise ValueError(f"{path}: field 'hidden_size' is {saved['hidden_size']}, but this "
                         f"backbone has {hidden_dim}.")
    try:
        config = AdapterFusionConfig.load(saved["config"])
    except ValueError as error:
        raise ValueError(f"{path}: field 'config': {error}") from error
    name, adapters = saved["name"], saved["adapter_names"]
    file, tensors = read_tensors(directory, *FUSION_WEIGHTS_FILES)
    key = re.compile(rf"{LAYER_KEY}\.adapter_fusion_layer\.{re.escape(name)}"
                     rf"\.({'|'.join(FUSION_MODULES)})\.(weight|bias)$")
    renamed = {}
    for saved_key, value in tensors.items():
        match = key.match(saved_key)
        if match is None:
            raise ValueError(f"{file}: tensor {saved_key!r} is not a weight of an AdapterFusion "
                             f"named {name!r}.")
        layer, location, module, parameter = match.groups()
        renamed[f"layer_{layer}/{_fusion_slot(location)}/{module}/{LINEAR[parameter]}"] = (
            value.T if parameter == "weight" else value)
    return path, name, adapters, config, renamed


def adapterhub_fusion(fusion, tensors, name, hidden_dim, architecture):
    """AdapterHub's `(adapter_fusion_config.json dict, tensors)` for an AdapterFusion.

    Args:
        fusion: its `fusion_configs` entry, `{"adapters": [...], "config": {...}}`.
        tensors: its weights as `adapter_files` keys them
            (`layer_<i>/<slot>_fusion/<module>/<kernel|bias>`).
        name: str, the fusion's name.
        hidden_dim: int, the backbone's hidden size.
        architecture: str, `Architecture.name`.

    Raises:
        ValueError: for a fusion pruned per layer (AdapterHub fuses the same
            adapters in every layer), or an architecture not written.
    """
    names = _names(architecture)
    if isinstance(fusion["adapters"], dict):
        raise ValueError(f"AdapterFusion {name!r} fuses different adapters in different layers "
                         "(pruned per layer), which AdapterHub's format cannot hold.")
    config = {"config": dict(fusion["config"]), "adapter_names": list(fusion["adapters"]),
              "hidden_size": hidden_dim, "model_class": names.model_class, "model_name": "",
              "model_type": names.model_type, "name": name, "version": VERSION}
    locations = {_fusion_slot(theirs): theirs for theirs in names.locations}
    parameters = {ours: theirs for theirs, ours in LINEAR.items()}
    renamed = {}
    for key, value in tensors.items():
        layer, slot, module, parameter = key.split("/")
        renamed[f"{names.layers}.{layer.removeprefix('layer_')}.{locations[slot]}"
                f".adapter_fusion_layer.{name}.{module}.{parameters[parameter]}"] = (
            np.ascontiguousarray(value.T if parameter == "kernel" else value))
    return config, renamed
