"""Training that survives preemption: exact mid-epoch resume after SIGKILL or SIGTERM.

`TrainingState` is one file, `<model_dir>/backup/state.safetensors`, holding
everything a training step changes: the trainable weights, the optimizer's
variables (its step counter, hence the epoch, step and learning-rate schedule
position, and its slots) and every random seed generator's state (dropout,
robust AdapterDrop sampling). Frozen weights are not in it: they are reloaded
from the pretrained checkpoint, whose identity the file records. It is
replaced atomically, so a kill at any moment leaves the previous complete
backup.

`fit_resumable` runs `model.fit` one epoch at a time, each epoch's data in
that epoch's fixed shuffled order (`pipeline.epoch_seed`), and after a restore
skips the batches already trained. With deterministic ops the resumed run
ends with the weights an uninterrupted run ends with.

Keras' `BackupAndRestore` is not used: it restarts an interrupted epoch from
its first batch with the mid-epoch weights, and writes its weights and
metadata as two files, neither atomically.
"""

import json
import os
import signal
import threading

import keras
import numpy as np
from absl import logging
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from keras_adapters.training.callbacks import EpochProgress
from keras_adapters.utils.atomic import atomic_path

STATE_FILE = "state.safetensors"
_STEP_KEY = "global_step"
_RUN_KEY = "run_config"


class TrainingState:
    """Save and restore what training changes in `model`, under `directory`.

    Args:
        model: a compiled Keras model (its optimizer is built on demand).
        directory: str, the backup folder (created on the first save).
        run_config: JSON-serialisable dict of what must not change between a
            run and its resumption (task, batch size, seed, backbone
            identity...). Restoring with a different one raises.
    """

    def __init__(self, model, directory, run_config):
        self.model = model
        self.path = os.path.join(directory, STATE_FILE)
        self.run_config = json.loads(json.dumps(run_config))

    def _variables(self):
        """The trainable weights, optimizer variables and seed states, in a fixed order.

        Keyed by position, as Keras' own weight files are, not by path:
        auto-generated layer names differ between models built in one process.
        """
        optimizer = self.model.optimizer
        if not optimizer.built:
            with self.model.distribute_strategy.scope():  # Its slots mirror the weights.
                optimizer.build(self.model.trainable_variables)
        seeds = [v for v in self.model.variables if v.name == "seed_generator_state"]
        variables = [*self.model.trainable_variables, *optimizer.variables, *seeds]
        return {f"{i:05d}:{v.path}": v for i, v in enumerate(variables)}

    def save(self, global_step):
        """Write the state after `global_step` optimizer steps, atomically."""
        arrays = {path: np.asarray(v.numpy()) for path, v in self._variables().items()}
        metadata = {_STEP_KEY: str(global_step), _RUN_KEY: json.dumps(self.run_config)}
        with atomic_path(self.path) as temporary:
            save_file(arrays, temporary, metadata=metadata)

    def restore(self):
        """Load the saved state into the model; return its global step (0 if none).

        Raises:
            ValueError: naming the file and the field, if the backup was
                written by a run with a different `run_config`, or holds
                another number or shape of variables than this model trains.
        """
        if not os.path.exists(self.path):
            return 0
        with safe_open(self.path, framework="numpy") as f:
            metadata = f.metadata()
        saved_config = json.loads(metadata[_RUN_KEY])
        for key in sorted(set(saved_config) | set(self.run_config)):
            if saved_config.get(key) != self.run_config.get(key):
                raise ValueError(
                    f"{self.path}: the backup's {key}={saved_config.get(key)!r} differs "
                    f"from this run's {self.run_config.get(key)!r}. Resume with the same "
                    "flags, or use a fresh --model_dir."
                )
        arrays = load_file(self.path)
        variables = self._variables()
        if len(arrays) != len(variables):
            raise ValueError(f"{self.path} holds {len(arrays)} tensors; this model trains "
                             f"{len(variables)}.")
        pairs = list(zip(sorted(arrays.items()), variables.items()))
        for (key, array), (name, variable) in pairs:  # All checked before any is assigned.
            if array.shape != tuple(variable.shape):
                raise ValueError(
                    f"{self.path}: tensor {key!r} has shape {array.shape}, but the model's "
                    f"{name!r} has {tuple(variable.shape)}."
                )
        for (_, array), (_, variable) in pairs:
            variable.assign(array)
        step = int(metadata[_STEP_KEY])
        logging.info("Resumed from %s at step %d.", self.path, step)
        return step


class Backup(keras.callbacks.Callback):
    """Save a `TrainingState` every `every_steps` steps and after every epoch.

    Place it after the callbacks that act at epoch end (evaluation, best-model
    keeping): a run killed before the end-of-epoch save redoes the epoch's
    last steps and those callbacks. On SIGTERM (a preemption notice) it saves
    after the running step and exits with status 143.

    Args:
        state: a `TrainingState`.
        steps_per_epoch: int.
        every_steps: int > 0, optimizer steps between backups.
    """

    def __init__(self, state, steps_per_epoch, every_steps):
        super().__init__()
        if every_steps <= 0:
            raise ValueError(f"every_steps must be > 0; got {every_steps}.")
        self.state = state
        self.steps_per_epoch = steps_per_epoch
        self.every_steps = every_steps
        self._terminating = threading.Event()
        self._previous_handler = None

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        self._last_step = self._step()
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(
                signal.SIGTERM, lambda signum, frame: self._terminating.set())

    def on_train_end(self, logs=None):
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if self._terminating.is_set():
            self.state.save(step)
            logging.warning("SIGTERM: saved the training state at step %d; exiting.", step)
            raise SystemExit(128 + signal.SIGTERM)
        # With steps_per_execution > 1 the step moves by several at a time: save
        # when it passes a multiple of every_steps. An epoch's last step is
        # saved at epoch end, after its evaluation.
        passed = step // self.every_steps > self._last_step // self.every_steps
        self._last_step = step
        if passed and step % self.steps_per_epoch:
            self.state.save(step)

    def on_epoch_end(self, epoch, logs=None):
        self.state.save(self._step())


def fit_resumable(model, epoch_dataset, *, epochs, steps_per_epoch, state, callbacks,
                  verbose=1):
    """`model.fit` for `epochs` epochs, continuing from `state`'s last backup.

    Args:
        model: a compiled Keras model.
        epoch_dataset: function from the epoch index to that epoch's batches
            in a fixed order, `steps_per_epoch` of them.
        epochs: int, the total number of epochs.
        steps_per_epoch: int.
        state: the `TrainingState` the `Backup` among `callbacks` writes.
        callbacks: list of Keras callbacks, including a `Backup` of `state`.
        verbose: 0 (silent) or 1: an `EpochProgress` bar, since Keras' own
            logger would print "Epoch 3/3" for the third of four epochs.

    Returns:
        The optimizer step the run started from (0 for a fresh run).
    """
    start = state.restore()
    first_epoch, done = divmod(start, steps_per_epoch)
    progress = EpochProgress(epochs, steps_per_epoch)
    for epoch in range(first_epoch, epochs):
        skip = done if epoch == first_epoch else 0
        progress.first_step = skip
        # The order is fixed per epoch already: Keras' shuffle would only warn.
        model.fit(epoch_dataset(epoch).skip(skip), initial_epoch=epoch, epochs=epoch + 1,
                  steps_per_epoch=steps_per_epoch - skip,
                  callbacks=[progress, *callbacks] if verbose else callbacks,
                  verbose=0, shuffle=False)
    return start
