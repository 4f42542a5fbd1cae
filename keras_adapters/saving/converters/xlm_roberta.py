"""Hugging Face XLM-RoBERTa (`XLMRobertaModel`) to keras-hub XLM-RoBERTa.

The format is RoBERTa's; the tokenizer is SentencePiece
(`sentencepiece.bpe.model`), with fairseq's id offsets as keras-hub applies them.
"""

from keras_hub.models import XLMRobertaTokenizer

from keras_adapters.models.architectures.xlm_roberta import AdapterXLMRobertaBackbone
from keras_adapters.saving.converters import roberta
from keras_adapters.saving.converters.base import register, require_file


def tokenizer(folder, config):
    return XLMRobertaTokenizer(proto=require_file(folder, "sentencepiece.bpe.model"))


CONVERTER = register(roberta.converter(("xlm-roberta",), AdapterXLMRobertaBackbone, tokenizer))
