"""Hugging Face checkpoint converters, one small module per architecture.

Each module declares a `Converter`: which `model_type`s it reads, how
`config.json` maps to the keras-hub backbone's arguments, a table from
Hugging Face tensor names to Keras weight paths, and the tokenizer.
`keras_adapters.saving.checkpoints` does the rest for all of them.
"""

from keras_adapters.saving.converters import bert, distil_bert, electra, roberta, xlm_roberta  # noqa: F401,E501  (register)
from keras_adapters.saving.converters.base import CONVERTERS, Converter, converter_for

__all__ = ["CONVERTERS", "Converter", "converter_for"]
