"""One small module per keras-hub encoder architecture: its `Architecture` table
and its `AdapterBackbone` subclass. Importing this package registers all five.

To add an architecture, copy one of these modules (see README, "Adding an
architecture").
"""

from keras_adapters.models.architectures.bert import AdapterBertBackbone
from keras_adapters.models.architectures.distil_bert import AdapterDistilBertBackbone
from keras_adapters.models.architectures.electra import AdapterElectraBackbone
from keras_adapters.models.architectures.roberta import AdapterRobertaBackbone
from keras_adapters.models.architectures.xlm_roberta import AdapterXLMRobertaBackbone

__all__ = [
    "AdapterBertBackbone",
    "AdapterDistilBertBackbone",
    "AdapterElectraBackbone",
    "AdapterRobertaBackbone",
    "AdapterXLMRobertaBackbone",
]
