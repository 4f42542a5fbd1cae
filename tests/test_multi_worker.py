"""Two workers on localhost: `run_classifier.py --strategy=multi_worker_mirrored` end to end.

Each worker is its own process, as on two machines; `TF_CONFIG` names two
local ports. Compared with one process on the same global batch and seed.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
from safetensors.numpy import load_file

from tests.helpers import (
    REPO_ROOT,
    TINY_HF_CONFIG,
    backup_step,
    tiny_hf_tensors,
    write_hf_folder,
    write_mrpc_folder,
)

STEPS = 16  # 64 examples, global batch 8, 2 epochs.
# No dropout: its masks are drawn per replica, so they differ with the
# number of replicas; everything else is the same computation.
NO_DROPOUT = dict(TINY_HF_CONFIG, hidden_dropout_prob=0.0)

# Runs a script like `python run_classifier.py ...`, printing each file
# system write Python makes under the model folder (argv[1]) as it happens.
AUDITED = """
import os, runpy, sys

root = os.path.abspath(sys.argv[1]) + os.sep
WRITES = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree"}

def audit(event, args):
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if mode else flags & (os.O_WRONLY | os.O_RDWR)
    else:
        path, writing = args[0] if args else None, event in WRITES
    if writing and isinstance(path, str) and os.path.abspath(path).startswith(root):
        print("WRITE", event, path, file=sys.stderr, flush=True)

sys.addaudithook(audit)
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _free_ports(n):
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(n)]
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _flags(checkpoint, glue_dir, model_dir):
    return [f"--init_from={checkpoint}", f"--data_dir={glue_dir}", f"--model_dir={model_dir}",
            "--task=mrpc", "--max_seq_length=16", "--batch_size=8", "--num_epochs=2",
            "--adapter_size=4", "--learning_rate=1e-2", "--classifier_dropout=0",
            "--drop_first_n=1", "--robust_adapter_drop", "--save_every_steps=1",
            "--export_from=last"]  # The adapter file then holds the final weights.


def _start_workers(flags, model_dir):
    """Two `run_classifier.py` workers of one cluster; worker 0 is the chief."""
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        workers.append(subprocess.Popen(
            [sys.executable, "-c", AUDITED, str(model_dir), str(REPO_ROOT / "run_classifier.py"),
             *flags, "--strategy=multi_worker_mirrored"],
            env={**os.environ, "TF_CONFIG": json.dumps(tf_config)},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    return workers


def _finish(workers):
    """Wait for each worker; returns their standard errors."""
    errors = [worker.communicate(timeout=600)[1] for worker in workers]
    for worker, stderr in zip(workers, errors):
        assert worker.returncode == 0, stderr[-3000:]
    return errors


def test_two_workers_killed_and_resumed_end_like_one_process(tmp_path):
    checkpoint = write_hf_folder(tmp_path / "tiny", tiny_hf_tensors(NO_DROPOUT), NO_DROPOUT)
    glue_dir = write_mrpc_folder(tmp_path, rows=64)
    reference, model_dir = tmp_path / "one_process", tmp_path / "two_workers"
    done = subprocess.run([sys.executable, str(REPO_ROOT / "run_classifier.py"),
                           *_flags(checkpoint, glue_dir, reference)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    # Worker 1 is killed mid-run; the chief's next collective op fails, and it exits.
    flags = _flags(checkpoint, glue_dir, model_dir)
    chief, worker = _start_workers(flags, model_dir)
    deadline = time.time() + 600
    while backup_step(model_dir) < 3:
        assert chief.poll() is None, chief.communicate()[1][-3000:]
        assert time.time() < deadline, "no backup appeared"
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    killed_stderr = [p.communicate(timeout=300)[1] for p in (chief, worker)]
    assert chief.returncode not in (0, None) and worker.returncode == -signal.SIGKILL
    assert 3 <= backup_step(model_dir) < STEPS
    # Clean: the chief's last complete backup, no half-written file or folder.
    leftovers = [name for _, dirs, files in os.walk(model_dir) for name in dirs + files
                 if name.startswith(".")]
    assert leftovers == []

    # The same two commands again: both resume from the chief's backup and finish.
    rerun = _start_workers(flags, model_dir)
    chief_stderr, worker_stderr = _finish(rerun)
    assert "Resumed from" in chief_stderr and "Resumed from" in worker_stderr

    # The chief alone wrote: the audit saw its writes, none of the other worker's.
    assert "WRITE os.mkdir" in chief_stderr and "WRITE os.rename" in chief_stderr
    for stderr in (killed_stderr[1], worker_stderr):
        assert "Not the chief" in stderr and "WRITE " not in stderr
    # TensorBoard writes from C++, unaudited; its event files are named by process.
    chiefs = (chief.pid, rerun[0].pid)
    event_files = [f for _, _, files in os.walk(model_dir / "logs") for f in files]
    assert event_files and all(any(f".{pid}." in f for pid in chiefs) for f in event_files)

    expected = load_file(str(reference / "adapter_weights.safetensors"))
    actual = load_file(str(model_dir / "adapter_weights.safetensors"))
    assert expected.keys() == actual.keys()
    for name in expected:  # Measured: at most 1.8e-7 apart.
        np.testing.assert_allclose(actual[name], expected[name], rtol=0, atol=1e-6,
                                   err_msg=name)
    results = [json.loads((d / "eval_results.json").read_text()) for d in (reference, model_dir)]
    assert results[0]["dev"] == results[1]["dev"]
    assert (model_dir / "saved_model" / "saved_model.pb").exists()


# Keras clips each replica's share of the gradient before summing them;
# keras_adapters' AdamW sums first. Two replicas in one process, as on two GPUs.
CLIPPING = """
import json
import keras, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_adapters.training.optimization import AdamW

rng = np.random.default_rng(0)
x, y = rng.normal(size=(64, 6)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")

def train(strategy, optimizer_cls):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"),
                                  keras.layers.Dense(1)])
        model.compile(optimizer=optimizer_cls(learning_rate=0.05, global_clipnorm=0.1),
                      loss="mse")
    model.fit(x, 5 * y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    return np.concatenate([np.ravel(w) for w in model.get_weights()]).tolist()

mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
print(json.dumps({name: [train(tf.distribute.get_strategy(), cls), train(mirrored, cls)]
                  for name, cls in (("ours", AdamW), ("keras", keras.optimizers.AdamW))}))
"""


def test_adamw_clips_the_gradient_summed_over_replicas():
    done = subprocess.run([sys.executable, "-c", CLIPPING], capture_output=True, text=True,
                          timeout=600, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    weights = {name: np.array(pair) for name, pair in json.loads(done.stdout).items()}
    one_device, two_replicas = weights["ours"]
    np.testing.assert_allclose(two_replicas, one_device, rtol=0, atol=1e-6)
    # Keras' own AdamW trains differently on two replicas: it clips before summing.
    # (If this fails, Keras has fixed it and `SumBeforeClipping` can go.)
    one_device, two_replicas = weights["keras"]
    assert np.abs(two_replicas - one_device).max() > 1e-3
    np.testing.assert_allclose(weights["ours"][0], weights["keras"][0], rtol=0, atol=1e-6)
