"""AdapterDrop's gate: which transformer layers run their adapters.

Rücklé et al., "AdapterDrop: On the Efficiency of Adapters in Transformers"
(EMNLP 2021, arXiv 2010.11918): specialised AdapterDrop (§3) and robust
AdapterDrop (§4) share this one in-graph mechanism.
"""

import contextlib

import keras
import tensorflow as tf
from keras import ops


def check_drop_first_n(n, num_layers):
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= num_layers:
        raise ValueError(
            f"drop_first_n must be an integer in [0, {num_layers}] "
            f"(the number of layers); got {n!r}."
        )


@keras.saving.register_keras_serializable(package="keras_adapters")
class AdapterDrop(keras.layers.Layer):
    """Which transformer layers run their adapters: all but the lowest n.

    AdapterDrop (Rücklé et al., 2021). Specialised AdapterDrop (§3) skips the
    adapters of a fixed number n of lowest layers, in training and at
    inference. Robust AdapterDrop (§4) draws n uniformly from
    {0, ..., num_layers - 1} at every training step, so one model can then
    run at any n. Both are this one gate, computed inside the graph: under
    `tf.function`, any `tf.distribute` strategy and in SavedModels.

    Args:
        num_layers: int, transformer layers in the stack.
        drop_first_n: int in [0, num_layers], n at inference, and in training
            unless `robust`. Held in a non-trainable int32 weight
            `drop_first_n`, so inference can change it without retracing
            (training reads it when traced: `static_gates`).
        robust: bool, draw n at every training step. Defaults to False.
        seed: int or None, seeds the draws (a `keras.random.SeedGenerator`,
            whose state is saved with the weights).

    Call arguments:
        inputs: any tensor; only places the layer in a functional graph.
        training: bool. Draw n when `robust`.

    Returns:
        bool `(num_layers,)`: True where the layer runs its adapters.

    Raises:
        ValueError: if `drop_first_n` is not an integer in [0, num_layers].

    Example:

    ```python
    gate = keras_adapters.AdapterDrop(num_layers=6, drop_first_n=2)
    gate(np.zeros(()))  # [False, False, True, True, True, True]
    ```
    """

    def __init__(self, num_layers, drop_first_n=0, robust=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        check_drop_first_n(drop_first_n, num_layers)
        self.num_layers = num_layers
        self.robust = robust
        self.seed = seed
        self.depth = self.add_weight(
            shape=(),
            dtype="int32",
            initializer=keras.initializers.Constant(drop_first_n),
            trainable=False,
            name="drop_first_n",
        )
        self.seed_generator = keras.random.SeedGenerator(seed) if robust else None
        self._override = None

    @contextlib.contextmanager
    def override(self, drop_first_n):
        """Calls traced inside this context use `drop_first_n` as n.

        For a serving signature that takes n as an input (Rücklé et al.,
        §4: one robust model, the compute chosen at inference): trace the
        model's call inside the context, with n a tensor input.

        Args:
            drop_first_n: int scalar tensor.
        """
        self._override = drop_first_n
        try:
            yield
        finally:
            self._override = None

    @property
    def drop_first_n(self):
        """n at inference (Rücklé et al., §3): the `drop_first_n` weight's value.

        Returns:
            int in [0, num_layers], read at once (through `tf.init_scope`),
            even while a function is being traced.
        """
        with tf.init_scope():
            return int(ops.convert_to_numpy(self.depth))

    def static_gates(self, training):
        """The gates as Python bools, when a traced training step can fix them.

        Specialised AdapterDrop trains at one depth, so the training step is
        traced with the layers' adapters simply present or absent, with no
        `cond` per adapter and layer norm. A `cond` hands every intermediate
        its gradient needs out of its branch; at BERT-base size, batch 16
        and sequence 128, the step then peaked 0.3 GiB higher (3.36 against
        3.07 GiB, bench/adapter_speed.py's adapter arm). The depth
        is read when the step is traced, as `trainable` is (and as
        `freeze_for_adapter_tuning` reads it): after changing it, freeze and
        compile again before training.

        Args:
            training: the call's `training` flag.

        Returns:
            list of `num_layers` bools (True: run the adapters), or None
            when the gates must stay in the graph: at inference (where
            `drop_first_n` changes take effect in compiled functions), under
            robust AdapterDrop, and inside `override`.
        """
        if not training or self.robust or self._override is not None:
            return None
        n = self.drop_first_n
        return [index >= n for index in range(self.num_layers)]

    def call(self, inputs, training=None):
        if self._override is not None:
            n = ops.cast(self._override, "int32")
        elif self.robust and training:
            n = keras.random.randint(
                (), 0, self.num_layers, dtype="int32", seed=self.seed_generator
            )
        else:
            n = ops.convert_to_tensor(self.depth)
        return ops.greater_equal(ops.arange(self.num_layers, dtype="int32"), n)

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor((self.num_layers,), dtype="bool")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_layers": self.num_layers,
                "drop_first_n": self.drop_first_n,
                "robust": self.robust,
                "seed": self.seed,
            }
        )
        return config
