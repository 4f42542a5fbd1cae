"""Hugging Face ELECTRA (`ElectraModel`, the discriminator) to keras-hub ELECTRA."""

from keras_hub.models import ElectraTokenizer

from keras_adapters.models.architectures.electra import AdapterElectraBackbone
from keras_adapters.saving.converters import bert
from keras_adapters.saving.converters.base import Converter, register


def sizes(config):
    return dict(
        vocab_size=config["vocab_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
        hidden_dim=config["hidden_size"],
        embedding_dim=config["embedding_size"],
        intermediate_dim=config["intermediate_size"],
        dropout=config.get("hidden_dropout_prob", 0.1),
        max_sequence_length=config.get("max_position_embeddings", 512),
        num_segments=config.get("type_vocab_size", 2),
    )


CONVERTER = register(Converter(
    model_types=("electra",),
    adapter_cls=AdapterElectraBackbone,
    prefix="electra.",
    sizes=sizes,
    dims=bert.dims,
    # BERT's embeddings in the embedding size E, then a projection to H.
    embeddings=tuple((hf, path, shape.replace("H", "E")) for hf, path, shape in bert.EMBEDDINGS),
    layer=bert.LAYER,
    # Present when E != H, as is keras-hub's `embeddings_projection`. ElectraModel
    # has no pooler: keras-hub's `pooled_dense` stays random (a warning says so).
    optional=(("embeddings_project.weight", "embeddings_projection/kernel", "HE"),
              ("embeddings_project.bias", "embeddings_projection/bias", "H"),
              *bert.POOLER),
    tokenizer=bert.word_piece_tokenizer(ElectraTokenizer),
))
