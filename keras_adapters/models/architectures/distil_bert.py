"""DistilBERT (Sanh et al., 2019) with adapters: keras-hub's `DistilBertBackbone`."""

import keras_hub

from keras_adapters.models.adapter_backbone import (
    AdapterBackbone,
    Architecture,
    register_architecture,
)


@register_architecture
class AdapterDistilBertBackbone(AdapterBackbone, keras_hub.models.DistilBertBackbone):
    """keras-hub's `DistilBertBackbone` with named bottleneck adapters and AdapterDrop.

    Its arguments, inputs and outputs are `DistilBertBackbone`'s, plus those of
    `keras_adapters.models.adapter_backbone.AdapterBackbone` (adapters,
    AdapterDrop, the feed-forward activation). Usually built by
    `keras_adapters.add_adapters` from a `DistilBertBackbone`.

    Example:

    ```python
    backbone = keras_hub.models.DistilBertBackbone.from_preset("distil_bert_base_en_uncased")
    backbone = keras_adapters.add_adapters(backbone, keras_adapters.AdapterConfig(adapter_size=64))
    isinstance(backbone, keras_hub.models.DistilBertBackbone)  # True
    ```
    """

    architecture = Architecture(
        name="distil_bert",
        backbone_cls=keras_hub.models.DistilBertBackbone,
        hidden_activation="gelu",
        pooler=None,
        vocabulary_size="vocabulary_size",
    )
