"""`Converter`: what one architecture's Hugging Face checkpoints need."""

import dataclasses
import json
import math
import os

HF_ACTIVATIONS = {  # Hugging Face `hidden_act` -> `AdapterBackbone.hidden_activation` name
    "gelu": "gelu",
    "gelu_new": "gelu_approximate",
    "gelu_pytorch_tanh": "gelu_approximate",
    "gelu_fast": "gelu_approximate",
    "relu": "relu",
}

CONVERTERS = {}  # Hugging Face model_type -> Converter


@dataclasses.dataclass(frozen=True)
class Converter:
    """One architecture's Hugging Face checkpoint format.

    Tables hold `(Hugging Face name, Keras weight path, shape)` rows; shape
    letters come from `dims` (V vocab_size, P positions, H hidden size...). A
    2-D tensor bound to a `/kernel` is a PyTorch Linear weight, (out, in): it
    is transposed, then reshaped to the Keras shape (query (H, H) becomes
    (H, heads, head_dim)).

    Attributes:
        model_types: the `config.json` `model_type`s it reads.
        adapter_cls: the `AdapterBackbone` subclass it builds.
        prefix: the base model's name prefix (`"bert."`), stripped where present.
        sizes: function from `config.json` to the backbone's size arguments.
        dims: function from `config.json` to the shape letters' sizes.
        activation_key, layer_norm_eps: the activation's config key; the
            layer-norm epsilon keras-hub fixes for this architecture.
        embeddings, layer: tables; `layer` rows are relative to
            `layer_prefix` (`"encoder.layer.{i}."`) and `transformer_layer_{i}/`.
        optional: rows a checkpoint may lack (BERT's pooler, ELECTRA's
            embedding projection): a missing one leaves its weight randomly
            initialised, with a warning, where the backbone has it.
        ignored: name prefixes and suffixes of tensors a backbone has no use
            for (pretraining heads, index buffers).
        renames: old-style names and their current ones (`LayerNorm.gamma`).
        prepare: function `(tensors, config) -> tensors` run on the tensors
            (prefix stripped) before the tables, or None.
        tokenizer: function `(folder, config) -> keras-hub tokenizer`.
    """

    model_types: tuple
    adapter_cls: type
    prefix: str
    sizes: callable
    dims: callable
    embeddings: tuple
    layer: tuple
    tokenizer: callable
    layer_prefix: str = "encoder.layer.{i}."
    optional: tuple = ()
    activation_key: str = "hidden_act"
    layer_norm_eps: float = 1e-12
    ignored: tuple = (("cls.", "lm_head.", "generator_", "discriminator_predictions.",
                       "vocab_", "qa_outputs.", "classifier.", "pre_classifier."),
                      ("position_ids", "token_type_ids"))
    renames: tuple = (("LayerNorm.gamma", "LayerNorm.weight"), ("LayerNorm.beta", "LayerNorm.bias"))
    prepare: callable = None

    def backbone_kwargs(self, config, path="config.json"):
        """The `adapter_cls` arguments for a `config.json` dict.

        Raises:
            ValueError: naming `path` and the field, for an unsupported
                activation, relative position embeddings, a layer-norm epsilon
                other than keras-hub's for this architecture, or a hidden size
                that is not a multiple of the heads.
        """
        act = config.get(self.activation_key, "gelu")
        if act not in HF_ACTIVATIONS:
            raise ValueError(f"{path}: unsupported {self.activation_key} {act!r}; expected one "
                             f"of {sorted(HF_ACTIVATIONS)}.")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only absolute position embeddings are supported.")
        eps = config.get("layer_norm_eps", self.layer_norm_eps)
        if not math.isclose(eps, self.layer_norm_eps, rel_tol=1e-3):
            raise ValueError(f"{path}: layer_norm_eps {eps} is not keras-hub's "
                             f"{self.layer_norm_eps} for {self.adapter_cls.__name__}.")
        sizes = self.sizes(config)
        if sizes["hidden_dim"] % sizes["num_heads"]:
            raise ValueError(f"{path}: the hidden size is not a multiple of the heads.")
        return {**sizes, "hidden_activation": HF_ACTIVATIONS[act]}

    def table(self, config):
        """Every required `(name, path, shape letters)` row for this config."""
        rows = list(self.embeddings)
        for i in range(self.sizes(config)["num_layers"]):
            rows += [(self.layer_prefix.format(i=i) + hf, f"transformer_layer_{i}/{path}", shape)
                     for hf, path, shape in self.layer]
        return rows


def register(converter):
    """Make `converter` read its model types; returns it."""
    for model_type in converter.model_types:
        CONVERTERS[model_type] = converter
    return converter


def converter_for(config, path="config.json"):
    """The `Converter` for a `config.json` dict (no `model_type`: BERT).

    Raises:
        ValueError: naming `path`, for a model_type no converter reads.
    """
    model_type = config.get("model_type", "bert")
    if model_type not in CONVERTERS:
        raise ValueError(f"{path}: model_type {model_type!r} is not supported; expected one of "
                         f"{sorted(CONVERTERS)}.")
    return CONVERTERS[model_type]


def read_json(folder, name, required=True):
    """`folder/name` as a dict ({} if absent and not `required`).

    Raises:
        FileNotFoundError: naming the folder and file, if `required` and absent.
    """
    file = os.path.join(folder, name)
    if not os.path.exists(file):
        if required:
            raise FileNotFoundError(f"Checkpoint folder {folder!r} has no {name}.")
        return {}
    with open(file, encoding="utf-8") as f:
        return json.load(f)


def require_file(folder, name):
    """The path `folder/name`.

    Raises:
        FileNotFoundError: naming the folder and file, if it does not exist.
    """
    file = os.path.join(folder, name)
    if not os.path.exists(file):
        raise FileNotFoundError(f"Checkpoint folder {folder!r} has no {name}.")
    return file


def check_vocabulary_size(file, size, vocabulary_size):
    """Raise unless a tokenizer's `size` tokens fit the model's `vocabulary_size`.

    Raises:
        ValueError: naming `file`: token ids past `vocabulary_size` would have
            no embedding.
    """
    if size > vocabulary_size:
        raise ValueError(
            f"{file} has {size} tokens, but config.json's vocab_size is {vocabulary_size}: "
            "token ids past it have no embedding. The vocabulary does not match the model.")
