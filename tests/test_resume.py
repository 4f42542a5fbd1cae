"""Preemption-safe training: backups, exact mid-epoch resume, NaN stop, best-model keeping."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from keras_adapters.training.callbacks import EpochProgress, EpochWeights, KeepBest, StopOnNaN
from keras_adapters.training.resume import STATE_FILE, Backup, TrainingState, fit_resumable
from tests.helpers import REPO_ROOT, backup_step, write_hf_folder, write_mrpc_folder
from tests.helpers import tiny_hf_tensors as tiny_tensors

STEPS, EPOCHS, BATCH = 5, 2, 4


def _model(seed=0):
    """A small model with dropout, so resuming must carry the seed generators."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dropout(0.3)(keras.layers.Dense(8, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def _epoch_dataset(epoch):
    import tensorflow as tf

    from keras_adapters.data.pipeline import shuffle

    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * BATCH, 6)).astype("float32")
    y = x.sum(1, keepdims=True)
    data = tf.data.Dataset.from_tensor_slices((x, y))
    return shuffle(data, STEPS * BATCH, seed=1, epoch=epoch).batch(BATCH)


class _Kill(keras.callbacks.Callback):
    """Stand-in for a kill: raise after optimizer step `at`."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.at:
            raise KeyboardInterrupt


def _train(directory, kill_at=None, every=1):
    model = _model()
    state = TrainingState(model, str(directory), {"run": 1})
    callbacks = [Backup(state, STEPS, every)] + ([_Kill(kill_at)] if kill_at else [])
    fit_resumable(model, _epoch_dataset, epochs=EPOCHS, steps_per_epoch=STEPS, state=state,
                  callbacks=callbacks, verbose=0)
    return model


def test_interrupted_runs_resume_to_the_uninterrupted_weights(tmp_path):
    reference = _train(tmp_path / "reference")
    for kill_at in (3, 7):  # mid first epoch, then mid second
        with pytest.raises(KeyboardInterrupt):
            _train(tmp_path / "resumed", kill_at=kill_at)
    resumed = _train(tmp_path / "resumed")
    assert int(resumed.optimizer.iterations.numpy()) == STEPS * EPOCHS
    for a, b in zip(reference.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_resume_without_the_seed_state_diverges(tmp_path):
    """The dropout seed state matters: the test above could fail."""
    reference = _train(tmp_path / "reference")
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "resumed", kill_at=3)
    path = tmp_path / "resumed" / STATE_FILE
    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
    arrays = {k: (v + 1 if "seed_generator_state" in k else v)
              for k, v in load_file(str(path)).items()}
    save_file(arrays, str(path), metadata=metadata)
    resumed = _train(tmp_path / "resumed")
    differences = [np.abs(a.numpy() - b.numpy()).max()
                   for a, b in zip(reference.weights, resumed.weights)]
    assert max(differences) > 1e-4


def test_backup_holds_trainable_optimizer_and_seed_state_only(tmp_path):
    model = _model()
    model.layers[1].trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    state = TrainingState(model, str(tmp_path), {"run": 1})
    state.save(0)
    saved = {key.split(":", 1)[1] for key in load_file(str(tmp_path / STATE_FILE))}
    seeds = {v.path for v in model.variables if v.name == "seed_generator_state"}
    assert seeds and saved == seeds | {
        v.path for v in [*model.trainable_variables, *model.optimizer.variables]}
    assert not any(v.path in saved for v in model.layers[1].weights)
    assert sorted(os.listdir(tmp_path)) == [STATE_FILE]  # no temporary left behind


def test_backup_from_other_settings_is_refused(tmp_path):
    model = _model()
    TrainingState(model, str(tmp_path), {"batch_size": 32, "task": "mrpc"}).save(3)
    with pytest.raises(ValueError, match=r"state.safetensors: the backup's batch_size=32 "
                                         r"differs from this run's 16"):
        TrainingState(model, str(tmp_path), {"batch_size": 16, "task": "mrpc"}).restore()


def test_nan_loss_stops_before_any_checkpoint(tmp_path):
    model = _model()
    x = np.ones((8, 6), "float32")
    y = np.full((8, 1), np.nan, "float32")
    pattern = str(tmp_path / "epoch_{epoch:02d}.weights.h5")
    state = TrainingState(model, str(tmp_path / "backup"), {})
    with pytest.raises(FloatingPointError, match="loss is nan at optimizer step 1"):
        model.fit(x, y, batch_size=4, epochs=2, verbose=0,
                  callbacks=[StopOnNaN(), EpochWeights(pattern), Backup(state, 2, 1)])
    assert not os.listdir(tmp_path)


def test_keep_best_keeps_the_best_epoch_across_runs(tmp_path):
    model = _model()
    keep = KeepBest(str(tmp_path / "best"), monitor="dev_f1")
    for epoch, f1 in enumerate([0.5, 0.7, 0.6]):
        model.layers[1].kernel.assign(np.full((6, 8), f1, "float32"))
        keep.set_model(model)
        keep.on_epoch_end(epoch, {"dev_f1": f1, "loss": 1.0})
    best = KeepBest(str(tmp_path / "best"), monitor="dev_f1").best()
    assert best["epoch"] == 2 and best["value"] == 0.7
    reloaded = _model()
    reloaded.load_weights(str(tmp_path / "best" / "model.weights.h5"))
    np.testing.assert_array_equal(reloaded.layers[1].kernel.numpy(), np.full((6, 8), 0.7, "float32"))
    with pytest.raises(KeyError, match="dev_accuracy"):
        KeepBest(str(tmp_path / "other"), monitor="dev_accuracy").on_epoch_end(0, {"x": 1})


# ------------------------------------------------ a real run_classifier.py, killed twice

def _command(checkpoint, glue_dir, model_dir):
    return [sys.executable, str(REPO_ROOT / "run_classifier.py"), "--task=mrpc",
            f"--init_from={checkpoint}", f"--data_dir={glue_dir}", f"--model_dir={model_dir}",
            "--max_seq_length=16", "--batch_size=4", "--num_epochs=2", "--adapter_size=4",
            "--save_every_steps=1", "--deterministic_ops", "--learning_rate=1e-2",
            "--export_from=last"]  # The adapter file then holds the final weights.


def _run_and_kill(command, model_dir, after_step, sig):
    """Start a run and send `sig` once its backup has passed `after_step`."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.time() + 600
    while backup_step(model_dir) < after_step:
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.time() < deadline, "no backup appeared"
        time.sleep(0.05)
    process.send_signal(sig)
    process.communicate(timeout=300)
    return process.returncode


def test_run_classifier_killed_twice_mid_epoch_ends_like_an_uninterrupted_run(tmp_path):
    checkpoint = write_hf_folder(tmp_path / "tiny", tiny_tensors())
    glue_dir = write_mrpc_folder(tmp_path)  # 200 examples: 50 steps per epoch
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    done = subprocess.run(_command(checkpoint, glue_dir, reference), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    command = _command(checkpoint, glue_dir, resumed)
    assert _run_and_kill(command, resumed, 5, signal.SIGKILL) == -signal.SIGKILL
    assert 5 <= backup_step(resumed) < 50  # killed mid first epoch
    # SIGTERM: a preemption notice; the run saves after its running step and exits 143.
    assert _run_and_kill(command, resumed, 60, signal.SIGTERM) == 143
    assert 60 <= backup_step(resumed) < 100
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Resumed from" in done.stderr

    expected = load_file(str(reference / "adapter_weights.safetensors"))
    actual = load_file(str(resumed / "adapter_weights.safetensors"))
    assert expected.keys() == actual.keys()
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    results = [json.loads((d / "eval_results.json").read_text()) for d in (reference, resumed)]
    assert results[0]["dev"] == results[1]["dev"]
    assert results[0]["best"]["epoch"] == results[1]["best"]["epoch"]
    assert (resumed / "best" / "model.weights.h5").exists()
    assert (resumed / "checkpoints" / "epoch_02.weights.h5").exists()


def test_epoch_progress_counts_the_runs_epochs_when_resumed_mid_epoch(capsys):
    progress = EpochProgress(epochs=4, steps_per_epoch=3, interactive=False)
    progress.first_step = 1  # Resumed after the first step of the third epoch.
    progress.on_epoch_begin(2)
    for batch in range(2):
        progress.on_train_batch_end(batch, {"loss": 0.5})
    progress.on_epoch_end(2, {"loss": 0.5})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Epoch 3/4" and len(lines) == 2  # One line per epoch off a terminal.
    assert lines[1].startswith("3/3 - ") and "loss: 0.5000" in lines[1]


def test_backup_saves_when_steps_per_execution_jumps_past_a_multiple():
    class State:
        saved = []

        def save(self, step):
            self.saved.append(step)

    class Model:
        optimizer = type("Optimizer", (), {"iterations": keras.Variable(0, dtype="int64")})()

    backup = Backup(State(), steps_per_epoch=100, every_steps=3)
    backup.set_model(Model())
    backup.on_train_begin()
    try:
        for step in (2, 4, 6, 8, 10):  # Two steps per execution.
            Model.optimizer.iterations.assign(step)
            backup.on_train_batch_end(step - 1)
    finally:
        backup.on_train_end()
    assert State.saved == [4, 6, 10]  # Past 3, 6 and 9: none skipped.
