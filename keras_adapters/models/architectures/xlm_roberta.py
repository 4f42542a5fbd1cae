"""XLM-RoBERTa (Conneau et al., 2020) with adapters: keras-hub's `XLMRobertaBackbone`."""

import keras_hub

from keras_adapters.models.adapter_backbone import (
    AdapterBackbone,
    Architecture,
    register_architecture,
)


@register_architecture
class AdapterXLMRobertaBackbone(AdapterBackbone, keras_hub.models.XLMRobertaBackbone):
    """keras-hub's `XLMRobertaBackbone` with named bottleneck adapters and AdapterDrop.

    Its arguments, inputs and outputs are `XLMRobertaBackbone`'s, plus those of
    `keras_adapters.models.adapter_backbone.AdapterBackbone` (adapters,
    AdapterDrop, the feed-forward activation). Usually built by
    `keras_adapters.add_adapters` from a `XLMRobertaBackbone`.

    Example:

    ```python
    backbone = keras_hub.models.XLMRobertaBackbone.from_preset("xlm_roberta_base_multi")
    backbone = keras_adapters.add_adapters(backbone, keras_adapters.AdapterConfig(adapter_size=64))
    isinstance(backbone, keras_hub.models.XLMRobertaBackbone)  # True
    ```
    """

    architecture = Architecture(
        name="xlm_roberta",
        backbone_cls=keras_hub.models.XLMRobertaBackbone,
        hidden_activation="gelu",
        pooler=None,
        vocabulary_size="vocabulary_size",
    )
