"""Hugging Face BERT (`BertModel`, `model_type` "bert") to keras-hub BERT."""

from keras_hub.models import BertTokenizer

from keras_adapters.models.architectures.bert import AdapterBertBackbone
from keras_adapters.saving.converters.base import (
    Converter,
    check_vocabulary_size,
    read_json,
    register,
    require_file,
)

EMBEDDINGS = (
    ("embeddings.word_embeddings.weight", "token_embedding/embeddings", "VH"),
    ("embeddings.position_embeddings.weight", "position_embedding/embeddings", "PH"),
    ("embeddings.token_type_embeddings.weight", "segment_embedding/embeddings", "TH"),
    ("embeddings.LayerNorm.weight", "embeddings_layer_norm/gamma", "H"),
    ("embeddings.LayerNorm.bias", "embeddings_layer_norm/beta", "H"),
)
# BERT's layer, shared by ELECTRA: "encoder.layer.{i}." + name.
LAYER = (
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
POOLER = (
    ("pooler.dense.weight", "pooled_dense/kernel", "HH"),
    ("pooler.dense.bias", "pooled_dense/bias", "H"),
)


def sizes(config):
    return dict(
        vocabulary_size=config["vocab_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
        hidden_dim=config["hidden_size"],
        intermediate_dim=config["intermediate_size"],
        dropout=config.get("hidden_dropout_prob", 0.1),
        max_sequence_length=config.get("max_position_embeddings", 512),
        num_segments=config.get("type_vocab_size", 2),
    )


def dims(config):
    return dict(V=config["vocab_size"], P=config.get("max_position_embeddings", 512),
                T=config.get("type_vocab_size", 2), H=config["hidden_size"],
                I=config["intermediate_size"], E=config.get("embedding_size"))


def word_piece_tokenizer(cls):
    """A tokenizer function making a keras-hub WordPiece tokenizer `cls` from
    `vocab.txt` and `tokenizer_config.json` (optional)."""

    def tokenizer(folder, config):
        vocab = require_file(folder, "vocab.txt")
        with open(vocab, encoding="utf-8") as f:
            check_vocabulary_size(vocab, sum(1 for _ in f), config["vocab_size"])
        settings = read_json(folder, "tokenizer_config.json", required=False)
        lowercase = settings.get("do_lower_case", True)
        strip_accents = settings.get("strip_accents")  # None: follows lowercasing.
        return cls(vocabulary=vocab, lowercase=lowercase,
                   strip_accents=lowercase if strip_accents is None else strip_accents,
                   split_on_cjk=settings.get("tokenize_chinese_chars", True))

    return tokenizer


CONVERTER = register(Converter(
    model_types=("bert",),
    adapter_cls=AdapterBertBackbone,
    prefix="bert.",
    sizes=sizes,
    dims=dims,
    embeddings=EMBEDDINGS,
    layer=LAYER,
    optional=POOLER,
    tokenizer=word_piece_tokenizer(BertTokenizer),
))
