"""AdamW with linear warmup then linear decay (Houlsby et al., 2019, §3.1)."""

import keras
from keras import ops

from keras_adapters.utils.keras_internals import SumBeforeClipping


@keras.saving.register_keras_serializable(package="keras_adapters")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak_learning_rate`, then linear decay to 0.

    The BERT fine-tuning schedule that Houlsby et al. (2019, §3.1) use for
    adapters: the rate rises linearly over the first `warmup_steps` steps and
    falls linearly to zero at `total_steps`.

    Args:
        peak_learning_rate: float > 0.
        total_steps: int > 0, the number of optimizer steps of the run.
        warmup_steps: int in [0, total_steps].

    Raises:
        ValueError: on values outside those ranges.

    Example:

    ```python
    schedule = keras_adapters.WarmupLinearDecay(1e-3, warmup_steps=46, total_steps=460)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule)
    ```
    """

    def __init__(self, peak_learning_rate, total_steps, warmup_steps):
        if peak_learning_rate <= 0 or total_steps <= 0:
            raise ValueError(
                "peak_learning_rate and total_steps must be positive; got "
                f"{peak_learning_rate} and {total_steps}."
            )
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"warmup_steps must be in [0, {total_steps}]; got {warmup_steps}."
            )
        self.peak_learning_rate = peak_learning_rate
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = step / max(self.warmup_steps, 1)
        decay = (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1)
        fraction = ops.where(step < self.warmup_steps, warmup, decay)
        return self.peak_learning_rate * ops.clip(fraction, 0.0, 1.0)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }


@keras.saving.register_keras_serializable(package="keras_adapters")
class AdamW(SumBeforeClipping, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` that clips the gradient summed over replicas.

    Keras' own clips each replica's share before summing, so under
    `MirroredStrategy`, `TPUStrategy` or `MultiWorkerMirroredStrategy` its
    `global_clipnorm` changes training whenever it engages. This one trains
    N replicas as one device on the global batch (`SumBeforeClipping`; tested
    in `tests/test_multi_worker.py`). On one device it is Keras' AdamW.
    Arguments as `keras.optimizers.AdamW`.
    """


def create_optimizer(
    learning_rate, total_steps, warmup_proportion=0.1, weight_decay=0.01
):
    """AdamW on a `WarmupLinearDecay` schedule, as in BERT and adapter-bert.

    Args:
        learning_rate: float, the peak learning rate.
        total_steps: int, optimizer steps in the run.
        warmup_proportion: float in [0, 1], the share of steps spent warming
            up. Defaults to 0.1 (Houlsby §3.1).
        weight_decay: float. Decoupled weight decay, not applied to biases or
            layer norm parameters. Defaults to 0.01.

    Returns:
        An `AdamW` (epsilon 1e-6, global gradient clipping at norm 1.0 of the
        gradient summed over replicas, as in BERT's `optimization.py` on one
        device).

    Raises:
        ValueError: if `warmup_proportion` is outside [0, 1], or through
            `WarmupLinearDecay`.
    """
    if not 0 <= warmup_proportion <= 1:
        raise ValueError(f"warmup_proportion must be in [0, 1]; got {warmup_proportion}.")
    schedule = WarmupLinearDecay(
        learning_rate, total_steps, int(round(warmup_proportion * total_steps))
    )
    optimizer = AdamW(
        learning_rate=schedule,
        weight_decay=weight_decay,
        epsilon=1e-6,
        global_clipnorm=1.0,
    )
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer
