"""BERT (Devlin et al., 2019) with adapters: keras-hub's `BertBackbone`."""

import keras_hub

from keras_adapters.models.adapter_backbone import (
    AdapterBackbone,
    Architecture,
    register_architecture,
)


@register_architecture
class AdapterBertBackbone(AdapterBackbone, keras_hub.models.BertBackbone):
    """keras-hub's `BertBackbone` with named bottleneck adapters and AdapterDrop.

    Its arguments, inputs and outputs are `BertBackbone`'s, plus those of
    `keras_adapters.models.adapter_backbone.AdapterBackbone` (adapters,
    AdapterDrop, the feed-forward activation). Usually built by
    `keras_adapters.add_adapters` from a `BertBackbone`.

    Example:

    ```python
    backbone = keras_hub.models.BertBackbone.from_preset("bert_base_en_uncased")
    backbone = keras_adapters.add_adapters(backbone, keras_adapters.AdapterConfig(adapter_size=64))
    isinstance(backbone, keras_hub.models.BertBackbone)  # True
    ```
    """

    architecture = Architecture(
        name="bert",
        backbone_cls=keras_hub.models.BertBackbone,
        hidden_activation="gelu_approximate",
        pooler="pooled_dense",
        vocabulary_size="vocabulary_size",
    )
