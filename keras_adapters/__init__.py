"""Bottleneck adapters and AdapterDrop for Keras 3 and keras-hub encoder backbones."""

from keras_adapters.configuration.adapter_config import AdapterConfig
from keras_adapters.configuration.adapter_fusion_config import AdapterFusionConfig
from keras_adapters.data.pipeline import make_preprocessor, text_dataset
from keras_adapters.layers.adapter_drop import AdapterDrop
from keras_adapters.layers.adapter_fusion import AdapterFusion
from keras_adapters.layers.bottleneck_adapter import BottleneckAdapter
from keras_adapters.layers.heads import ClassificationHead
from keras_adapters.models.adapter_backbone import AdapterBackbone, add_adapters
from keras_adapters.models.adapter_encoder import (
    AdapterTransformerEncoder,
    LayerAdapter,
    LayerFusion,
)
from keras_adapters.models.adapter_model import AdapterModel
from keras_adapters.models.architectures import (
    AdapterBertBackbone,
    AdapterDistilBertBackbone,
    AdapterElectraBackbone,
    AdapterRobertaBackbone,
    AdapterXLMRobertaBackbone,
)
from keras_adapters.models.classifiers import text_classifier
from keras_adapters.models.freezing import (
    ParameterCounts,
    count_parameters,
    freeze_for_adapter_tuning,
)
from keras_adapters.models.fusion_pruning import (
    FusionAttention,
    fusion_attention,
    prune_adapter_fusion,
)
from keras_adapters.models.parallel import ParallelAdapterModel
from keras_adapters.saving.adapter_files import (
    load_adapter,
    load_adapter_fusion,
    load_adapter_weights,
    save_adapter,
    save_adapter_fusion,
    save_adapter_weights,
)
from keras_adapters.saving.checkpoints import DEFAULT_CHECKPOINT, from_pretrained
from keras_adapters.training.optimization import WarmupLinearDecay, create_optimizer
from keras_adapters.version import __version__ as __version__

__all__ = [
    "AdapterBackbone",
    "AdapterBertBackbone",
    "AdapterDistilBertBackbone",
    "AdapterElectraBackbone",
    "AdapterRobertaBackbone",
    "AdapterXLMRobertaBackbone",
    "AdapterConfig",
    "AdapterDrop",
    "AdapterFusion",
    "AdapterFusionConfig",
    "AdapterModel",
    "AdapterTransformerEncoder",
    "BottleneckAdapter",
    "ClassificationHead",
    "DEFAULT_CHECKPOINT",
    "FusionAttention",
    "ParallelAdapterModel",
    "ParameterCounts",
    "LayerAdapter",
    "LayerFusion",
    "WarmupLinearDecay",
    "add_adapters",
    "count_parameters",
    "create_optimizer",
    "freeze_for_adapter_tuning",
    "fusion_attention",
    "from_pretrained",
    "load_adapter",
    "load_adapter_fusion",
    "load_adapter_weights",
    "make_preprocessor",
    "prune_adapter_fusion",
    "save_adapter",
    "save_adapter_fusion",
    "save_adapter_weights",
    "text_classifier",
    "text_dataset",
]
