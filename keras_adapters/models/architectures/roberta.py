"""RoBERTa (Liu et al., 2019) with adapters: keras-hub's `RobertaBackbone`."""

import keras_hub

from keras_adapters.models.adapter_backbone import (
    AdapterBackbone,
    Architecture,
    register_architecture,
)


@register_architecture
class AdapterRobertaBackbone(AdapterBackbone, keras_hub.models.RobertaBackbone):
    """keras-hub's `RobertaBackbone` with named bottleneck adapters and AdapterDrop.

    Its arguments, inputs and outputs are `RobertaBackbone`'s, plus those of
    `keras_adapters.models.adapter_backbone.AdapterBackbone` (adapters,
    AdapterDrop, the feed-forward activation). Usually built by
    `keras_adapters.add_adapters` from a `RobertaBackbone`.

    Example:

    ```python
    backbone = keras_hub.models.RobertaBackbone.from_preset("roberta_base_en")
    backbone = keras_adapters.add_adapters(backbone, keras_adapters.AdapterConfig(adapter_size=64))
    isinstance(backbone, keras_hub.models.RobertaBackbone)  # True
    ```
    """

    architecture = Architecture(
        name="roberta",
        backbone_cls=keras_hub.models.RobertaBackbone,
        hidden_activation="gelu",
        pooler=None,
        vocabulary_size="vocabulary_size",
    )
