"""A text classifier on any supported encoder backbone, for the training scripts."""

import keras
import keras_hub

from keras_adapters.layers.heads import ClassificationHead
from keras_adapters.models.adapter_backbone import features
from keras_adapters.utils.keras_hub_classes import keras_hub_class_for


def text_classifier(backbone, num_classes, dropout=None):
    """A classifier from token features to logits, without a preprocessor.

    keras-hub's own text classifier for the backbone's architecture
    (`BertTextClassifier`, `RobertaTextClassifier`, `XLMRobertaTextClassifier`,
    `DistilBertTextClassifier`) with `preprocessor=None`; for an architecture
    keras-hub has none for (ELECTRA), a functional model putting a
    `ClassificationHead` named `logits` on the backbone's pooled output.

    Args:
        backbone: a keras-hub encoder backbone, with or without adapters.
        num_classes: int (1 for regression).
        dropout: float in [0, 1), on the pooled features before the logits;
            None (the default): the classifier's own default (BERT 0.1,
            RoBERTa and XLM-R 0.0, DistilBERT 0.2, ELECTRA 0.1).

    Returns:
        A `keras.Model` from the backbone's int32 inputs `(batch, seq)` to
        float logits `(batch, num_classes)`.

    Example:

    ```python
    backbone, tokenizer = keras_adapters.from_pretrained()
    model = keras_adapters.text_classifier(keras_adapters.add_adapters(backbone), 2)
    ```
    """
    cls = keras_hub_class_for(backbone, keras_hub.models.TextClassifier, "backbone_cls")
    rate = {} if dropout is None else {"dropout": dropout}
    if cls is not None:
        return cls(backbone, num_classes=num_classes, preprocessor=None, **rate)
    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name)
              for name in backbone.input}
    head = ClassificationHead(num_classes, **rate, dtype=backbone.dtype_policy, name="logits")
    return keras.Model(inputs, head(features(backbone(inputs))), name="text_classifier")
