"""bench/glue_suite.py end to end: a tiny model on slices of real MRPC and RTE."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import sklearn.metrics

from keras_adapters.saving.checkpoints import from_pretrained
from keras_adapters.tasks.glue import data as glue
from tests.helpers import GLUE_DIR, REPO_ROOT, tiny_hf_tensors, write_hf_folder

TASKS, ARMS = ("mrpc", "rte"), ("adapters", "full", "adapterhub", "lora_8")
TRAIN, DEV = 48, 32


def _suite(tmp, *extra):
    command = [sys.executable, str(REPO_ROOT / "bench" / "glue_suite.py"),
               f"--output_dir={tmp / 'runs'}", f"--data_dir={GLUE_DIR}",
               f"--tasks={','.join(TASKS)}", f"--arms={','.join(ARMS)}", "--max_seeds=1",
               "--drop_depths=0,1,2",
               f"--run_flags=--init_from={tmp / 'bert'},--max_train_examples={TRAIN},"
               f"--max_eval_examples={DEV},--max_seq_length=16,--batch_size=16",
               f"--results={tmp / 'suite.json'}", f"--table={tmp / 'suite.md'}",
               f"--plot={tmp / 'suite.png'}", *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    if not GLUE_DIR.is_dir():
        pytest.skip(f"real GLUE data not found at {GLUE_DIR}")
    if importlib.util.find_spec("adapters") is None:
        pytest.skip("adapters is not installed (the test extra installs it)")
    tmp = tmp_path_factory.mktemp("suite")
    write_hf_folder(tmp / "bert", tiny_hf_tensors())
    log = _suite(tmp)
    return tmp, log, json.loads((tmp / "suite.json").read_text())


def _eval_results(tmp, task, arm):
    return json.loads((tmp / "runs" / task / arm / "seed_42" / "eval_results.json").read_text())


def test_every_row_is_its_runs_eval_results(suite):
    tmp, log, report = suite
    assert "8 of 8 runs to go" in log
    rows = {(r["task"], r["arm"]): r for r in report["runs"]}
    assert set(rows) == {(t, a) for t in TASKS for a in ARMS}
    for (task, arm), row in rows.items():
        results = _eval_results(tmp, task, arm)
        metric = {"mrpc": "f1", "rte": "accuracy"}[task]
        assert row["score"] == pytest.approx(100 * results["dev"][metric])
        assert row["parameters"] == results["parameters"]
        assert row["commit"]
        cell = report["glue"]["tasks"][task].get(arm)
        if arm in ("adapters", "full"):
            assert cell["values"] == [row["score"]] and cell["n"] == 1 and cell["std"] is None
    for arm in ("adapters", "full"):
        assert report["glue"]["mean"][arm] == pytest.approx(
            np.mean([100 * _eval_results(tmp, t, arm)["dev"][m]
                     for t, m in (("mrpc", "f1"), ("rte", "accuracy"))]))
    table = (tmp / "suite.md").read_text()
    mrpc = report["glue"]["tasks"]["mrpc"]
    assert f"| mrpc (f1) | {mrpc['adapters']['mean']:.1f} (1) | {mrpc['full']['mean']:.1f} (1) |" \
        in table
    assert (tmp / "suite.png").read_bytes()[:4] == b"\x89PNG"


def test_drop_curves_start_at_the_dev_score(suite):
    tmp, _, report = suite
    for task in TASKS:
        results = _eval_results(tmp, task, "adapters")
        assert set(results["adapter_drop"]) == {"0", "1", "2"}
        # --export_from=last: n = 0 scores the weights "dev" scored.
        assert results["adapter_drop"]["0"] == {"dev": results["dev"]}
        curve = report["adapter_drop"]["tasks"][task]["standard"]
        assert curve["0"] == pytest.approx(report["glue"]["tasks"][task]["adapters"]["mean"])


def test_adapterhub_runs_are_scored_with_the_official_metrics(suite):
    tmp, _, _ = suite
    for task in TASKS:
        folder = tmp / "runs" / task / "adapterhub" / "seed_42"
        outputs = np.array(json.loads((folder / "adapterhub_outputs.json").read_text())[
            "dev_outputs"])
        dev = glue.load_examples(task, "dev", GLUE_DIR).head(DEV)
        scores = _eval_results(tmp, task, "adapterhub")["dev"]
        predictions = outputs.argmax(1)
        assert scores["accuracy"] == pytest.approx(
            sklearn.metrics.accuracy_score(dev.labels, predictions))
        if task == "mrpc":
            assert scores["f1"] == pytest.approx(sklearn.metrics.f1_score(dev.labels, predictions))
        # The same configuration: as many trained parameters as our adapters.
        assert (_eval_results(tmp, task, "adapterhub")["parameters"]["trained"]
                == _eval_results(tmp, task, "adapters")["parameters"]["trained"])
        config = json.loads((folder / "adapter" / "adapter_config.json").read_text())["config"]
        assert (config["non_linearity"], config["init_weights"], config["mh_adapter"],
                config["output_adapter"]) == ("gelu", "houlsby", True, True)
        head = json.loads((folder / "adapter" / "head_config.json").read_text())["config"]
        assert (head["layers"], head["use_pooler"]) == (1, True)


def test_lora_trains_keras_hub_lora_factors_and_the_head(suite):
    tmp, _, _ = suite
    backbone, _ = from_pretrained(str(tmp / "bert"))
    backbone.enable_lora(8)
    head = backbone.hidden_dim * 2 + 2  # The classifier's dense layer; the pooler is frozen.
    trained = sum(int(np.prod(w.shape)) for w in backbone.trainable_weights) + head
    assert _eval_results(tmp, "mrpc", "lora_8")["parameters"]["trained"] == trained
    backbone.load_lora_weights(str(tmp / "runs" / "mrpc" / "lora_8" / "seed_42" /
                                   "lora_weights.lora.h5"))
    factors_b = [w for w in backbone.weights if w.path.endswith("lora_kernel_b")]
    assert len(factors_b) == 2 * backbone.num_layers  # Query and value.
    # B starts at zero: every layer's moved only if training reached every layer.
    assert all(np.any(w.numpy()) for w in factors_b), [w.path for w in factors_b]


def test_a_second_invocation_runs_nothing_and_reports_the_same(suite):
    tmp, _, report = suite
    written = {p: p.stat().st_mtime_ns for p in (tmp / "runs").glob("*/*/*/eval_results.json")}
    log = _suite(tmp)
    assert "0 of 8 runs to go" in log
    assert {p: p.stat().st_mtime_ns for p in written} == written
    assert json.loads((tmp / "suite.json").read_text()) == report


def test_wnli_is_in_the_table_but_not_the_means():
    # In a subprocess: the suite's flags share names with run_classifier's, imported by other tests.
    check = """
import glue_suite
run = lambda score: {"score": score, "step_seconds": 1.0, "metric": "m",
                     "adapter_drop": {0: {"m": score / 100}}}
grouped = {"mrpc": {"adapters": [run(80.0)], "full": [run(70.0)]},
           "wnli": {"adapters": [run(50.0)], "full": [run(40.0)]}}
table = glue_suite.glue_table(grouped, ("adapters", "full"))
assert set(table["tasks"]) == {"mrpc", "wnli"}, table
assert table["mean_over"] == ["mrpc"] and table["mean"] == {"adapters": 80.0, "full": 70.0}, table
# The AdapterDrop curves, and their average, are MRPC, STS-B, RTE and CoLA's.
assert set(glue_suite.adapter_drop(grouped)) == {"mrpc"}
"""
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                            cwd=REPO_ROOT / "bench", timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
