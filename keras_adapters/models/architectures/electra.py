"""ELECTRA (Clark et al., 2020) with adapters: keras-hub's `ElectraBackbone`."""

import keras_hub

from keras_adapters.models.adapter_backbone import (
    AdapterBackbone,
    Architecture,
    register_architecture,
)


@register_architecture
class AdapterElectraBackbone(AdapterBackbone, keras_hub.models.ElectraBackbone):
    """keras-hub's `ElectraBackbone` with named bottleneck adapters and AdapterDrop.

    Its arguments, inputs and outputs are `ElectraBackbone`'s, plus those of
    `keras_adapters.models.adapter_backbone.AdapterBackbone` (adapters,
    AdapterDrop, the feed-forward activation). Usually built by
    `keras_adapters.add_adapters` from a `ElectraBackbone`.

    Example:

    ```python
    backbone = keras_hub.models.ElectraBackbone.from_preset("electra_base_discriminator_en")
    backbone = keras_adapters.add_adapters(backbone, keras_adapters.AdapterConfig(adapter_size=64))
    isinstance(backbone, keras_hub.models.ElectraBackbone)  # True
    ```
    """

    architecture = Architecture(
        name="electra",
        backbone_cls=keras_hub.models.ElectraBackbone,
        hidden_activation="gelu_approximate",
        pooler="pooled_dense",
        vocabulary_size="vocab_size",
    )
