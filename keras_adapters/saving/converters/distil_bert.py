"""Hugging Face DistilBERT (`DistilBertModel`) to keras-hub DistilBERT."""

from keras_hub.models import DistilBertTokenizer

from keras_adapters.models.architectures.distil_bert import AdapterDistilBertBackbone
from keras_adapters.saving.converters import bert
from keras_adapters.saving.converters.base import Converter, register


def sizes(config):
    return dict(
        vocabulary_size=config["vocab_size"],
        num_layers=config["n_layers"],
        num_heads=config["n_heads"],
        hidden_dim=config["dim"],
        intermediate_dim=config["hidden_dim"],
        dropout=config.get("dropout", 0.1),
        max_sequence_length=config.get("max_position_embeddings", 512),
    )


def dims(config):
    return dict(V=config["vocab_size"], P=config.get("max_position_embeddings", 512),
                H=config["dim"], I=config["hidden_dim"])


_LINEARS = {"q_lin": "query", "k_lin": "key", "v_lin": "value", "out_lin": "attention_output"}

CONVERTER = register(Converter(
    model_types=("distilbert",),
    adapter_cls=AdapterDistilBertBackbone,
    prefix="distilbert.",
    sizes=sizes,
    dims=dims,
    activation_key="activation",
    embeddings=(
        ("embeddings.word_embeddings.weight",
         "token_and_position_embedding/token_embedding/embeddings", "VH"),
        ("embeddings.position_embeddings.weight",
         "token_and_position_embedding/position_embedding/embeddings", "PH"),
        ("embeddings.LayerNorm.weight", "embeddings_layer_norm/gamma", "H"),
        ("embeddings.LayerNorm.bias", "embeddings_layer_norm/beta", "H"),
    ),
    layer_prefix="transformer.layer.{i}.",
    layer=(
        *((f"attention.{hf}.{kind}", f"self_attention_layer/{keras}/{variable}", shape)
          for hf, keras in _LINEARS.items()
          for kind, variable, shape in (("weight", "kernel", "HH"), ("bias", "bias", "H"))),
        ("sa_layer_norm.weight", "self_attention_layer_norm/gamma", "H"),
        ("sa_layer_norm.bias", "self_attention_layer_norm/beta", "H"),
        ("ffn.lin1.weight", "feedforward_intermediate_dense/kernel", "IH"),
        ("ffn.lin1.bias", "feedforward_intermediate_dense/bias", "I"),
        ("ffn.lin2.weight", "feedforward_output_dense/kernel", "HI"),
        ("ffn.lin2.bias", "feedforward_output_dense/bias", "H"),
        ("output_layer_norm.weight", "feedforward_layer_norm/gamma", "H"),
        ("output_layer_norm.bias", "feedforward_layer_norm/beta", "H"),
    ),
    tokenizer=bert.word_piece_tokenizer(DistilBertTokenizer),
))
