"""Task heads that read an encoder backbone's features."""

import keras


@keras.saving.register_keras_serializable(package="keras_adapters")
class ClassificationHead(keras.layers.Layer):
    """A classification (or regression) head on an encoder backbone's features.

    The default is keras-hub's BERT classifier head: dropout, then a dense
    layer on the pooled output (the pooler's output where the architecture
    has a pooler, BERT and ELECTRA; else the first token's hidden state, see
    `AdapterBackbone.features`). With `layers=2, use_pooler=False` it is
    AdapterHub's default `ClassificationHead`: dropout, dense of the hidden
    size, tanh, dropout, dense to the classes, on the first token's hidden
    state. In general `layers - 1` hidden blocks (dropout, dense of the
    hidden size, `activation`), then dropout and the output dense layer.

    Args:
        num_classes: int, output width (1 for a regression task such as stsb).
        dropout: float in [0, 1), before each dense layer. Defaults to 0.1.
        layers: int >= 1, the number of dense layers. Defaults to 1.
        activation: str, a Keras activation name, after each hidden dense
            layer. Defaults to `"tanh"`.
        use_pooler: bool. True reads `pooled_output`; False the first
            token's state in `sequence_output`. Defaults to True.
        **kwargs: `keras.layers.Layer` arguments.

    Call arguments:
        outputs: the backbone's features dict: `pooled_output`, float
            `(batch, hidden_dim)`, and `sequence_output`, float
            `(batch, seq, hidden_dim)`.
        training: bool.

    Returns:
        float logits `(batch, num_classes)`, in the layer's compute dtype.

    Raises:
        ValueError: if `layers` < 1.

    Example:

    ```python
    head = keras_adapters.ClassificationHead(num_classes=3)
    logits = head({"pooled_output": np.ones((2, 384), "float32")})  # (2, 3)
    ```
    """

    def __init__(self, num_classes, dropout=0.1, layers=1, activation="tanh", use_pooler=True,
                 **kwargs):
        super().__init__(**kwargs)
        if layers < 1:
            raise ValueError(f"layers must be >= 1; got {layers}.")
        self.num_classes = num_classes
        self.dropout = dropout
        self.layers = layers
        self.activation = activation
        self.use_pooler = use_pooler
        self.output_dropout = keras.layers.Dropout(
            dropout, dtype=self.dtype_policy, name="output_dropout")
        self.hidden_dense = []  # Built with the hidden size.
        self.output_dense = keras.layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype=self.dtype_policy,
            name="output_dense",
        )

    def build(self, outputs_shape):
        shape = outputs_shape["pooled_output"]
        self.hidden_dense = []
        for index in range(self.layers - 1):
            dense = keras.layers.Dense(
                shape[-1], activation=self.activation,
                kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                dtype=self.dtype_policy, name=f"hidden_dense_{index}")
            dense.build(shape)
            self.hidden_dense.append(dense)
        self.output_dense.build(shape)
        self.built = True

    def call(self, outputs, training=None):
        if self.use_pooler:
            x = outputs["pooled_output"]
        else:
            x = outputs["sequence_output"][:, 0, :]
        for dense in self.hidden_dense:
            x = dense(self.output_dropout(x, training=training))
        return self.output_dense(self.output_dropout(x, training=training))

    def compute_output_shape(self, outputs_shape):
        return (*outputs_shape["pooled_output"][:-1], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "dropout": self.dropout,
                       "layers": self.layers, "activation": self.activation,
                       "use_pooler": self.use_pooler})
        return config
