"""Hugging Face ELECTRA (`ElectraModel`, the discriminator) to keras-hub ELECTRA."""

from keras_hub.models import ElectraTokenizer

from keras_adapters.models.architectures.electra import AdapterElectraBackbone
from keras_adapters.saving.converters import bert
from keras_adapters.saving.converters.base import Converter, register


def sizes(config):
    """BERT's, with keras-hub ELECTRA's `vocab_size` and the embedding size."""
    sizes = bert.sizes(config)
    return {**sizes, "vocab_size": sizes.pop("vocabulary_size"),
            "embedding_dim": config["embedding_size"]}


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
