"""End to end: run_squad.py on slices of the real SQuAD files."""

import json
import subprocess
import sys

import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the SavedModel's tokenizer ops)

from keras_adapters.tasks.squad.postprocessing import score_predictions
from tests.helpers import REPO_ROOT, SQUAD_TRAIN, require_squad, run_tpu_stand_in
from tests.helpers import SQUAD_DEV as DEV

COMMON = ["--max_predict_examples=30", "--batch_size=16", "--max_seq_length=192",
          f"--predict_file={DEV}"]


def _run(model_dir, *argv):
    command = [sys.executable, str(REPO_ROOT / "run_squad.py"), f"--model_dir={model_dir}",
               *COMMON, *argv]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((model_dir / "eval_results.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    require_squad()
    model_dir = tmp_path_factory.mktemp("squad")
    results = _run(model_dir, f"--train_file={SQUAD_TRAIN}",
                   "--max_train_examples=48", "--num_epochs=1")
    return model_dir, results


def test_predictions_json_is_official_and_rescoring_gives_the_reported_numbers(trained):
    model_dir, results = trained
    predictions = json.loads((model_dir / "predictions.json").read_text())
    assert len(predictions) == results["questions"] == 30
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in predictions.items())
    dev = json.loads(DEV.read_text())
    for article in dev["data"]:
        for paragraph in article["paragraphs"]:
            paragraph["qas"] = [qa for qa in paragraph["qas"] if qa["id"] in predictions]
            for qa in paragraph["qas"]:  # every answer is a span of its context
                assert predictions[qa["id"]] in paragraph["context"]
    rescored = score_predictions(dev, predictions)
    assert rescored["exact_match"] == pytest.approx(results["exact_match"])
    assert rescored["f1"] == pytest.approx(results["f1"])
    nbest = json.loads((model_dir / "nbest_predictions.json").read_text())
    assert all(entries[0]["text"] == predictions[q] for q, entries in nbest.items())
    assert (model_dir / "adapter_weights.safetensors").exists()


def test_the_best_epoch_is_kept_with_its_dev_scores(trained):
    model_dir, results = trained
    best = json.loads((model_dir / "best" / "best_results.json").read_text())
    assert results["best"] == best
    assert best["epoch"] == 1 and best["monitor"] == "dev_f1"
    assert best["value"] == pytest.approx(results["f1"])  # one epoch: the final model
    assert best["logs"]["dev_exact_match"] == pytest.approx(results["exact_match"])
    assert (model_dir / "best" / "model.weights.h5").exists()


def test_saved_model_answers_raw_text_like_predictions_json(trained):
    model_dir, _ = trained
    predictions = json.loads((model_dir / "predictions.json").read_text())
    questions = {qa["id"]: (qa["question"], paragraph["context"])
                 for article in json.loads(DEV.read_text())["data"]
                 for paragraph in article["paragraphs"] for qa in paragraph["qas"]}
    ids = sorted(predictions)
    serve = tf.saved_model.load(str(model_dir / "saved_model")).signatures["serving_default"]
    outputs = serve(question=tf.constant([questions[i][0] for i in ids]),
                    context=tf.constant([questions[i][1] for i in ids]))
    answers = [a.decode() for a in outputs["answer"].numpy()]
    assert answers == [predictions[i] for i in ids]
    for i, answer, start, end in zip(ids, answers, outputs["answer_start"].numpy(),
                                     outputs["answer_end"].numpy()):
        assert questions[i][1][start:end] == answer


def test_predict_mode_reloads_the_checkpoint_and_reproduces_predictions(trained, tmp_path):
    model_dir, results = trained
    before = json.loads((model_dir / "predictions.json").read_text())
    again = _run(model_dir, "--mode=predict")
    assert json.loads((model_dir / "predictions.json").read_text()) == before
    assert again["f1"] == pytest.approx(results["f1"])


def test_tpu_branch_predicts_with_static_shapes_like_the_dynamic_path(trained):
    """--strategy=tpu's stand-in (two replicas): full batches cut to bucket lengths, the
    last filled with empty rows; the same answers as the dynamic path."""
    model_dir, results = trained
    before = json.loads((model_dir / "predictions.json").read_text())
    result = run_tpu_stand_in("run_squad", f"--model_dir={model_dir}", "--mode=predict",
                              *COMMON)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MirroredStrategy with 2 replica(s)" in result.stderr
    assert json.loads((model_dir / "predictions.json").read_text()) == before
    again = json.loads((model_dir / "eval_results.json").read_text())
    assert again["f1"] == pytest.approx(results["f1"])


def test_predict_mode_without_checkpoint_fails_clearly(tmp_path):
    require_squad()
    command = [sys.executable, str(REPO_ROOT / "run_squad.py"), f"--model_dir={tmp_path}",
               "--mode=predict", *COMMON]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "found no checkpoints" in result.stderr
