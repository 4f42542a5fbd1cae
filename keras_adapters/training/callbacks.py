"""Keras callbacks for the training scripts: stop on NaN, atomic epoch weights, keep the best.

Order them in `fit` as: `StopOnNaN` first (so no later callback saves NaN
weights), the evaluation, `KeepBest`, `EpochWeights`, then `resume.Backup`.
"""

import json
import math
import os
import statistics
import sys
import time

import keras
from absl import logging

from keras_adapters.utils.atomic import atomic_path, write_json

BEST_WEIGHTS = "model.weights.h5"
BEST_RESULTS = "best_results.json"


class StopOnNaN(keras.callbacks.Callback):
    """Raise `FloatingPointError` as soon as the training loss is NaN or infinite.

    Unlike Keras' `TerminateOnNaN`, which lets the epoch end (and its
    checkpoint callbacks run on the corrupt weights), this stops inside the
    step's `on_train_batch_end`, before any later callback saves anything.
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            step = int(self.model.optimizer.iterations.numpy())
            raise FloatingPointError(
                f"Training loss is {float(loss)} at optimizer step {step} (batch {batch} of "
                "this epoch). Stopped before saving these weights; the last backup and "
                "checkpoints are from before it. Try a lower --learning_rate."
            )


class StepTimes(keras.callbacks.Callback):
    """Wall-clock seconds of each training step this process runs.

    A step is `on_train_batch_begin` to `on_train_batch_end`: the compiled
    train function's call on one batch (tracing included, the first time a
    batch shape is seen). Put it first among the callbacks.

    Example:

    ```python
    step_times = StepTimes()
    model.fit(dataset, epochs=3, callbacks=[step_times])
    step_times.summary()  # {"steps": 345, "median": 0.41, "mean": 0.43}
    ```
    """

    def __init__(self):
        super().__init__()
        self.seconds = []
        self._start = None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)

    def summary(self):
        """`{"steps", "median", "mean"}` (seconds) of the steps timed so far; a
        run resumed after its last step times none (`median` and `mean` None)."""
        if not self.seconds:
            return {"steps": 0, "median": None, "mean": None}
        return {"steps": len(self.seconds), "median": round(statistics.median(self.seconds), 5),
                "mean": round(statistics.fmean(self.seconds), 5)}


class EpochWeights(keras.callbacks.Callback):
    """After every epoch, write the model's weights to `pattern.format(epoch=N)`, atomically.

    Args:
        pattern: str, a `.weights.h5` path with an `{epoch}` field (1-based),
            e.g. `"<model_dir>/checkpoints/epoch_{epoch:02d}.weights.h5"`.
    """

    def __init__(self, pattern):
        super().__init__()
        self.pattern = pattern

    def on_epoch_end(self, epoch, logs=None):
        path = self.pattern.format(epoch=epoch + 1)
        with atomic_path(path) as temporary:
            self.model.save_weights(temporary + ".weights.h5")
            os.rename(temporary + ".weights.h5", temporary)


class KeepBest(keras.callbacks.Callback):
    """Keep the weights of the epoch with the best dev metric in `directory`, apart from the latest.

    Reads `logs[monitor]` at epoch end (an evaluation callback placed before
    this one puts it there), and when it beats the best so far replaces
    `directory` atomically with `model.weights.h5` and `best_results.json`
    (`{"epoch", "monitor", "value", "logs"}`). The best so far is read back
    from `directory`, so it survives a resumed run.

    Args:
        directory: str.
        monitor: str, the logs key, e.g. `"dev_f1"`.
        mode: `"max"` or `"min"`.

    Raises:
        KeyError: at epoch end, if `logs` has no `monitor`.
    """

    def __init__(self, directory, monitor, mode="max"):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min'; got {mode!r}.")
        self.directory = directory
        self.monitor = monitor
        self.mode = mode

    def best(self):
        """The kept `best_results.json` dict, or None."""
        path = os.path.join(self.directory, BEST_RESULTS)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def restore(self, model):
        """Load the kept epoch's weights into `model`; returns `best()` (None: nothing kept)."""
        kept = self.best()
        if kept is not None:
            model.load_weights(os.path.join(self.directory, BEST_WEIGHTS))
        return kept

    def _improves(self, value):
        best = self.best()
        if best is None or best["monitor"] != self.monitor:
            return True
        return value > best["value"] if self.mode == "max" else value < best["value"]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(f"KeepBest monitors {self.monitor!r}, not in the epoch's logs "
                           f"{sorted(logs)}.")
        value = float(logs[self.monitor])
        if not self._improves(value):
            return
        with atomic_path(self.directory) as temporary:
            os.makedirs(temporary)
            self.model.save_weights(os.path.join(temporary, BEST_WEIGHTS))
            write_json(os.path.join(temporary, BEST_RESULTS), {
                "epoch": epoch + 1, "monitor": self.monitor, "value": value,
                "logs": {k: float(v) for k, v in logs.items()}})
        logging.info("Epoch %d: best %s so far (%.4f); kept in %s.", epoch + 1, self.monitor,
                     value, self.directory)


class EpochProgress(keras.callbacks.Callback):
    """Keras' progress bar, with the run's own epoch count ("Epoch 3/4").

    The scripts train one `fit` call per epoch (to resume mid-epoch), so
    Keras' own logger would count each call as the last epoch. On a terminal
    the bar shows steps, loss and time left; otherwise one line per epoch.

    Args:
        epochs: int, the run's number of epochs.
        steps_per_epoch: int.
        interactive: bool or None; None: whether standard output is a terminal.
    """

    def __init__(self, epochs, steps_per_epoch, interactive=None):
        super().__init__()
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.interactive = sys.stdout.isatty() if interactive is None else interactive
        self.first_step = 0  # Steps of this epoch done before a resumed fit.
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        print(f"Epoch {epoch + 1}/{self.epochs}", flush=True)
        self.bar = keras.utils.Progbar(self.steps_per_epoch, verbose=1 if self.interactive else 2,
                                       unit_name="step")
        if self.first_step:
            self.bar.update(self.first_step)

    def on_train_batch_end(self, batch, logs=None):
        # Not finalized here: `on_epoch_end` prints the epoch's line once.
        self.bar.update(self.first_step + batch + 1, list((logs or {}).items()), finalize=False)

    def on_epoch_end(self, epoch, logs=None):
        self.bar.update(self.steps_per_epoch, list((logs or {}).items()), finalize=True)
        self.first_step = 0
