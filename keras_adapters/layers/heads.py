"""Task heads that read an encoder backbone's features."""

import keras


@keras.saving.register_keras_serializable(package="keras_adapters")
class ClassificationHead(keras.layers.Layer):
    """Dropout, then a dense layer on the pooled output: keras-hub's BERT classifier head.

    Reads `pooled_output`: the pooler's output where the architecture has a
    pooler (BERT, ELECTRA), else the first token's hidden state
    (`AdapterBackbone.features`).

    Args:
        num_classes: int, output width (1 for a regression task such as stsb).
        dropout: float in [0, 1), on the pooled output. Defaults to 0.1.
        **kwargs: `keras.layers.Layer` arguments.

    Call arguments:
        outputs: the backbone's output dict; reads `pooled_output`, float
            `(batch, hidden_dim)`.
        training: bool.

    Returns:
        float logits `(batch, num_classes)`, in the layer's compute dtype.

    Example:

    ```python
    head = keras_adapters.ClassificationHead(num_classes=3)
    logits = head({"pooled_output": np.ones((2, 384), "float32")})  # (2, 3)
    ```
    """

    def __init__(self, num_classes, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.dropout = dropout
        self.output_dropout = keras.layers.Dropout(
            dropout, dtype=self.dtype_policy, name="output_dropout")
        self.output_dense = keras.layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype=self.dtype_policy,
            name="output_dense",
        )

    def build(self, outputs_shape):
        self.output_dense.build(outputs_shape["pooled_output"])
        self.built = True

    def call(self, outputs, training=None):
        pooled = self.output_dropout(outputs["pooled_output"], training=training)
        return self.output_dense(pooled)

    def compute_output_shape(self, outputs_shape):
        return (*outputs_shape["pooled_output"][:-1], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "dropout": self.dropout})
        return config
