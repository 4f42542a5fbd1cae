"""keras-hub's own classes made for a given tokenizer or backbone."""

import keras


def keras_hub_class_for(instance, kind, attribute):
    """The keras-hub subclass of `kind` made for `instance`'s class, or None.

    keras-hub ties each preprocessor to a tokenizer class (`tokenizer_cls`)
    and each task model to a backbone class (`backbone_cls`). This returns the
    one whose `attribute` is the most specific class of `instance`:
    `XLMRobertaTextClassifier`, not `RobertaTextClassifier`, for an
    XLM-RoBERTa backbone. Only keras-hub's own classes count, not the
    subclasses `register_architecture` adds for adapter backbones.

    Args:
        instance: a keras-hub tokenizer or backbone (with or without adapters).
        kind: the keras-hub base class sought, e.g.
            `keras_hub.models.TextClassifier`.
        attribute: `"tokenizer_cls"` or `"backbone_cls"`.

    Example:

    ```python
    keras_hub_class_for(tokenizer, keras_hub.models.TextClassifierPreprocessor,
                        "tokenizer_cls")  # BertTextClassifierPreprocessor
    ```
    """
    candidates = [c for c in keras.saving.get_custom_objects().values()
                  if isinstance(c, type) and issubclass(c, kind)
                  and c.__module__.startswith("keras_hub.")]
    for cls in type(instance).__mro__:
        for candidate in candidates:
            if getattr(candidate, attribute) is cls:
                return candidate
    return None
