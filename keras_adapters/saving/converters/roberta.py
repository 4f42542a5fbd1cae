"""Hugging Face RoBERTa (`RobertaModel`) to keras-hub RoBERTa.

RoBERTa numbers positions from `pad_token_id + 1` (2): keras-hub's
position embeddings are the checkpoint's rows from there on. RoBERTa also
adds the one row of its token-type embeddings to every token; keras-hub's
RoBERTa has no token types, so that row is added to every position row,
which is the same sum. Its pooler, which keras-hub's RoBERTa lacks, is not
read.
"""

import json

from keras_hub.models import RobertaTokenizer

from keras_adapters.models.architectures.roberta import AdapterRobertaBackbone
from keras_adapters.saving.converters import bert
from keras_adapters.saving.converters.base import (
    Converter,
    check_vocabulary_size,
    register,
    require_file,
)

POSITION = "embeddings.position_embeddings.weight"
TOKEN_TYPE = "embeddings.token_type_embeddings.weight"


def position_offset(config):
    return config.get("pad_token_id", 1) + 1


def sizes(config):
    """BERT's, without token types and with positions from the offset on."""
    sizes = bert.sizes(config)
    del sizes["num_segments"]
    return {**sizes,
            "max_sequence_length": config["max_position_embeddings"] - position_offset(config)}


def dims(config):
    return dict(V=config["vocab_size"], H=config["hidden_size"], I=config["intermediate_size"],
                Q=config["max_position_embeddings"] - position_offset(config))


def prepare(tensors, config):
    """Position rows from the offset on, with the token-type row added."""
    tensors = dict(tensors)
    if POSITION in tensors:
        name, value = tensors[POSITION]
        if TOKEN_TYPE in tensors:
            _, token_type = tensors.pop(TOKEN_TYPE)
            value = value + token_type[:1]
        tensors[POSITION] = (name, value[position_offset(config):])
    return tensors


def byte_pair_tokenizer(cls):
    """A tokenizer function making a keras-hub BPE tokenizer from vocab.json and merges.txt."""

    def tokenizer(folder, config):
        vocabulary = require_file(folder, "vocab.json")
        with open(vocabulary, encoding="utf-8") as f:
            check_vocabulary_size(vocabulary, len(json.load(f)), config["vocab_size"])
        return cls(vocabulary=vocabulary, merges=require_file(folder, "merges.txt"))

    return tokenizer


def converter(model_types, adapter_cls, tokenizer):
    """RoBERTa's format, shared by XLM-RoBERTa."""
    return Converter(
        model_types=model_types,
        adapter_cls=adapter_cls,
        prefix="roberta.",
        sizes=sizes,
        dims=dims,
        layer_norm_eps=1e-5,
        embeddings=(
            ("embeddings.word_embeddings.weight", "embeddings/token_embedding/embeddings", "VH"),
            (POSITION, "embeddings/position_embedding/embeddings", "QH"),
            ("embeddings.LayerNorm.weight", "embeddings_layer_norm/gamma", "H"),
            ("embeddings.LayerNorm.bias", "embeddings_layer_norm/beta", "H"),
        ),
        layer=bert.LAYER,
        ignored=(("lm_head.", "pooler.", "classifier.", "qa_outputs."),
                 ("position_ids", "token_type_ids")),
        prepare=prepare,
        tokenizer=tokenizer,
    )


CONVERTER = register(converter(("roberta",), AdapterRobertaBackbone,
                               byte_pair_tokenizer(RobertaTokenizer)))
