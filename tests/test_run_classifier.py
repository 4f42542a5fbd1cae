"""End to end: run_classifier.py on a slice of real MRPC, then its artefacts."""

import json
import subprocess
import sys

import h5py
import keras_hub
import numpy as np
import pytest
import sklearn.metrics
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops for loading)
from safetensors.numpy import load_file

import run_classifier  # noqa: F401  (defines the flags)
from keras_adapters.configuration.adapter_config import AdapterConfig
from keras_adapters.models.adapter_backbone import add_adapters
from keras_adapters.saving.adapter_files import (
    load_adapter,
    load_adapter_fusion,
    load_adapter_weights,
)
from keras_adapters.saving.checkpoints import from_pretrained
from keras_adapters.tasks.glue import data as glue
from keras_adapters.training import cli
from tests.helpers import (
    GLUE_DIR,
    REPO_ROOT,
    backup_step,
    run_tpu_stand_in,
    script_flags,
    tiny_hf_tensors,
    write_hf_folder,
)

TRAIN, DEV = 64, 40
COMMON = [f"--max_train_examples={TRAIN}", f"--max_eval_examples={DEV}", "--num_epochs=1",
          "--batch_size=16", "--max_seq_length=64"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    if not GLUE_DIR.is_dir():
        pytest.skip(f"real GLUE data not found at {GLUE_DIR}")
    model_dir = tmp_path_factory.mktemp("mrpc")
    command = [sys.executable, str(REPO_ROOT / "run_classifier.py"), "--task=mrpc",
               f"--data_dir={GLUE_DIR}", f"--model_dir={model_dir}", *COMMON]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir


def _dev_slice():
    return glue.load_examples("mrpc", "dev", GLUE_DIR).head(DEV)


def test_run_writes_every_artefact(finished_run):
    for name in ("eval_results.json", "adapter_weights.safetensors", "saved_model",
                 "checkpoints/epoch_01.weights.h5", "logs"):
        assert (finished_run / name).exists(), name
    results = json.loads((finished_run / "eval_results.json").read_text())
    assert results["task"] == "mrpc" and results["train_examples"] == TRAIN
    assert set(results["dev"]) == {"f1", "accuracy"}


def test_saved_model_reloads_in_a_fresh_process_and_reproduces_metrics(finished_run):
    dev = _dev_slice()
    serving = tf.saved_model.load(str(finished_run / "saved_model")).signatures["serving_default"]
    probabilities = serving(sentence1=tf.constant(dev.text_a),
                            sentence2=tf.constant(dev.text_b))["probabilities"].numpy()
    assert probabilities.shape == (DEV, 2)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    predictions = probabilities.argmax(1)
    reported = json.loads((finished_run / "eval_results.json").read_text())["dev"]
    assert reported["accuracy"] == pytest.approx(
        sklearn.metrics.accuracy_score(dev.labels, predictions))
    assert reported["f1"] == pytest.approx(sklearn.metrics.f1_score(dev.labels, predictions))


def test_adapter_weights_rebuild_the_exported_model(finished_run):
    dev = _dev_slice()
    backbone, tokenizer = from_pretrained()
    model = keras_hub.models.BertTextClassifier(
        add_adapters(backbone, AdapterConfig(adapter_size=64), name="mrpc"), num_classes=2,
        preprocessor=None)
    load_adapter_weights(model, str(finished_run / "adapter_weights.safetensors"))
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=64)
    features = preprocessor(x=(tf.constant(dev.text_a), tf.constant(dev.text_b)))
    rebuilt = tf.nn.softmax(model.predict(features, verbose=0)).numpy()
    serving = tf.saved_model.load(str(finished_run / "saved_model")).signatures["serving_default"]
    exported = serving(sentence1=tf.constant(dev.text_a),
                       sentence2=tf.constant(dev.text_b))["probabilities"].numpy()
    np.testing.assert_allclose(rebuilt, exported, atol=1e-5)
    # The adapters trained: the head is not at its zero-bias start.
    assert np.abs(model.get_layer("logits").bias.numpy()).max() > 0


@pytest.fixture(scope="module")
def fused_run(finished_run, tmp_path_factory):
    """An AdapterFusion for MRPC over the MRPC run's adapter and an RTE run's."""
    root = tmp_path_factory.mktemp("fusion")
    base = [sys.executable, str(REPO_ROOT / "run_classifier.py"), f"--data_dir={GLUE_DIR}",
            *COMMON]
    for command in ([*base, "--task=rte", f"--model_dir={root / 'rte'}"],
                    [*base, "--task=mrpc", "--tuning=fusion", f"--model_dir={root / 'fusion'}",
                     f"--fusion_adapters={root / 'rte' / 'adapter'},{finished_run / 'adapter'}"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
    return root


def test_a_fusion_run_trains_only_the_fusion_and_its_folders_rebuild_the_export(
        finished_run, fused_run):
    model_dir = fused_run / "fusion"
    assert json.loads((model_dir / "eval_results.json").read_text())["tuning"] == "fusion"
    trained = load_file(model_dir / "adapter_weights.safetensors")
    assert {key.split("/")[1] for key in trained if key.startswith("transformer_layer")} == {
        "fusion_rte.mrpc"}
    backbone, tokenizer = from_pretrained()
    backbone = add_adapters(backbone, name=None)
    for adapter in (fused_run / "rte" / "adapter", finished_run / "adapter"):
        load_adapter(backbone, str(adapter))
    backbone.set_active_adapters(load_adapter_fusion(backbone, str(model_dir / "fusion")))
    model = keras_hub.models.BertTextClassifier(backbone, num_classes=2, preprocessor=None)
    load_adapter_weights(model, str(model_dir / "adapter_weights.safetensors"))
    dev = _dev_slice()
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=64)
    features = preprocessor(x=(tf.constant(dev.text_a), tf.constant(dev.text_b)))
    serving = tf.saved_model.load(str(model_dir / "saved_model")).signatures["serving_default"]
    exported = serving(sentence1=tf.constant(dev.text_a),
                       sentence2=tf.constant(dev.text_b))["probabilities"].numpy()
    np.testing.assert_allclose(tf.nn.softmax(model.predict(features, verbose=0)), exported,
                               atol=1e-5)
    attention = json.loads((model_dir / "fusion_attention.json").read_text())
    assert attention["adapters"] == ["rte", "mrpc"] and len(attention["per_layer"]) == 6
    np.testing.assert_allclose(np.sum(attention["per_layer"], axis=1), 1.0, rtol=1e-6)


def _tpu_stand_in(glue_dir, model_dir, *flags):
    return run_tpu_stand_in("run_classifier", "--task=rte", f"--data_dir={glue_dir}",
                            f"--model_dir={model_dir}", *COMMON, *flags)


@pytest.mark.parametrize("argv,epochs,rate", [
    ([], 4, 1e-3),
    (["--robust_adapter_drop"], 8, 5e-4),
    (["--robust_adapter_drop", "--num_epochs=4", "--learning_rate=1e-3"], 4, 1e-3),
    (["--robust_adapter_drop", "--tuning=fusion", "--fusion_adapters=a"], 8, 5e-5),
    (["--drop_first_n=2"], 4, 1e-3),
])
def test_robust_adapter_drop_trains_twice_the_epochs_at_half_the_rate_unless_told(
        argv, epochs, rate, tmp_path):
    with script_flags(tmp_path, *argv):
        assert (cli.num_epochs(), cli.learning_rate()) == (epochs, rate)


@pytest.mark.parametrize("argv,depth", [(["--drop_first_n=1"], 1),
                                        (["--drop_first_n=1", "--robust_adapter_drop"], 1)])
def test_the_script_backbone_runs_the_drop_first_n_it_is_given(argv, depth, tmp_path):
    """Specialised AdapterDrop (and robust's inference depth) reach the backbone the
    scripts build from a checkpoint folder."""
    folder = write_hf_folder(tmp_path / "tiny", tiny_hf_tensors())
    with script_flags(tmp_path, f"--init_from={folder}", "--max_seq_length=16", *argv):
        backbone, _ = cli.build_backbone("mrpc")
    assert backbone.drop_first_n == depth


@pytest.mark.parametrize("argv,recorded", [
    ([], {"learning_rate": None, "num_epochs": 4}),  # As before: older backups resume.
    (["--robust_adapter_drop"], {"learning_rate": 5e-4, "num_epochs": 8}),
])
def test_a_robust_backup_records_the_defaults_it_resolved(argv, recorded, tmp_path):
    """A robust run begun under the defaults before 50653cf does not resume under these."""
    folder = write_hf_folder(tmp_path / "tiny", tiny_hf_tensors())
    with script_flags(tmp_path, f"--init_from={folder}", *argv):
        config = cli.resume_config({"task": "mrpc"}, from_pretrained(str(folder))[0], 10)
    assert {name: config[name] for name in recorded} == recorded
    assert config["task"] == "mrpc" and config["steps_per_epoch"] == 10


def test_tpu_branch_runs_with_static_shapes_and_replicas(glue_dir, tmp_path):
    # Also robust AdapterDrop: its depth is drawn inside each replica's step.
    # (--steps_per_execution > 1 is tested on one device: Keras 3.15 fails any
    # model under MirroredStrategy with it, a plain Dense layer included.)
    result = _tpu_stand_in(glue_dir, tmp_path, "--drop_first_n=2", "--robust_adapter_drop")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "connected: ['grpc://127.0.0.1:" in result.stdout  # The resolver went through.
    assert "MirroredStrategy with 2 replica(s), 8 examples per replica and step" in result.stderr
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert set(results["dev"]) == {"accuracy"}
    assert (tmp_path / "saved_model" / "saved_model.pb").exists()
    assert backup_step(tmp_path) == TRAIN // 16  # Full batches of 16.

    odd = _tpu_stand_in(glue_dir, tmp_path / "odd", "--batch_size=15")
    assert odd.returncode != 0
    assert "--batch_size=15 must be a multiple of the 2 replicas" in odd.stderr


def test_export_from_best_serves_the_kept_epoch_and_progress_counts_epochs(glue_dir, tmp_path):
    """Two epochs: the log says "Epoch 2/2", and the exports hold best/'s weights."""
    command = [sys.executable, str(REPO_ROOT / "run_classifier.py"), "--task=rte",
               f"--data_dir={glue_dir}", f"--model_dir={tmp_path}", "--max_train_examples=32",
               "--max_eval_examples=16", "--num_epochs=2", "--batch_size=16",
               "--max_seq_length=32", "--learning_rate=3e-2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line for line in result.stdout.splitlines() if line.startswith("Epoch ")] == \
        ["Epoch 1/2", "Epoch 2/2"]
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("2/2 - ")]
    assert len(epoch_lines) == 2 and all("loss: " in line for line in epoch_lines)
    assert "shuffle=True" not in result.stderr
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert set(results) >= {"task", "dev", "best", "exported"} and "accuracy" in results["dev"]
    assert results["exported"] == {"from": "best", "epoch": results["best"]["epoch"]}
    exported = load_file(str(tmp_path / "adapter_weights.safetensors"))
    kernel = next(name for name in exported if name.startswith("logits/kernel"))
    epochs = [_h5_arrays(tmp_path / "checkpoints" / f"epoch_{e:02d}.weights.h5") for e in (1, 2)]
    matches = [any(np.array_equal(exported[kernel], a) for a in arrays) for arrays in epochs]
    assert matches == [results["best"]["epoch"] == 1, results["best"]["epoch"] == 2]


def _h5_arrays(path):
    """Every array in a Keras `.weights.h5` file."""
    arrays = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda _, item: arrays.append(item[()]) if isinstance(item, h5py.Dataset)
                     else None)
    return arrays
