"""`predictions.json` from `write_predictions` scores the same under the official script.

The official standalone SQuAD v1.1 evaluator (`evaluate-v1.1.py`, Rajpurkar
et al., vendored verbatim in tests/data) is run in a subprocess, as a user
would run it, on the real dev set and on a `predictions.json` written by
`squad_postprocessing.write_predictions`; its printed exact match and F1
must equal `squad_postprocessing.score_predictions` for the same answers.
"""

import json
import os
import subprocess
import sys

import pytest

from keras_adapters.tasks.squad import postprocessing as sp
from tests.helpers import REPO_ROOT, SQUAD_DEV, require_squad

OFFICIAL_SCRIPT = REPO_ROOT / "tests" / "data" / "evaluate-v1.1.py"
# Both sides sum the same per-question scores in the same order and only
# scale differently (100 * (s / n) here, 100.0 * s / n in the script), so
# they agree to a few ulps of a number below 100.
TOLERANCE = 1e-9


@pytest.fixture
def squad_dev_file():
    """The real SQuAD v1.1 dev file; skips the test when it is absent."""
    require_squad()
    return SQUAD_DEV


def _altered_answer(index, gold):
    """A deterministic prediction for the question at `index` with first gold answer `gold`.

    Cycles through an exact copy, a copy that only differs by case, articles
    and punctuation (exact under the official normalisation), extra words,
    a dropped last word, unrelated text and an empty answer.
    """
    words = gold.split()
    kind = index % 6
    if kind == 0:
        return gold
    if kind == 1:
        return "The " + gold.upper() + "!"
    if kind == 2:
        return gold + " and several unrelated extra words"
    if kind == 3:
        return " ".join(words[:-1])  # empty for one-word answers
    if kind == 4:
        return "zzyzx quokka"
    return ""


def _all_question_predictions(dataset):
    """Predictions for every question of `dataset`, in file order."""
    predictions = {}
    qas = (qa for article in dataset["data"] for paragraph in article["paragraphs"]
           for qa in paragraph["qas"])
    for index, qa in enumerate(qas):
        predictions[qa["id"]] = _altered_answer(index, qa["answers"][0]["text"])
    return predictions


def test_official_script_scores_written_predictions_like_score_predictions(
        squad_dev_file, tmp_path):
    with open(squad_dev_file, encoding="utf-8") as f:
        dataset = json.load(f)
    predictions = _all_question_predictions(dataset)
    num_questions = sum(len(p["qas"]) for a in dataset["data"] for p in a["paragraphs"])
    assert len(predictions) == num_questions

    predictions_path, _ = sp.write_predictions(predictions, {}, tmp_path)
    assert os.path.basename(predictions_path) == "predictions.json"

    # The official script opens files with the locale encoding; force UTF-8
    # so the dev set's non-ASCII text decodes on any machine.
    env = dict(os.environ, PYTHONUTF8="1")
    completed = subprocess.run(
        [sys.executable, str(OFFICIAL_SCRIPT), str(squad_dev_file), predictions_path],
        capture_output=True, text=True, env=env, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr
    # Every question answered and the dev file's version accepted: no warnings.
    assert completed.stderr == ""
    official = json.loads(completed.stdout)

    ours = sp.score_predictions(squad_dev_file, predictions)

    assert set(official) == {"exact_match", "f1"}
    assert set(ours) == {"exact_match", "f1"}
    for key in ("exact_match", "f1"):
        assert ours[key] == pytest.approx(official[key], rel=0, abs=TOLERANCE), key
        assert 0.0 < official[key] < 100.0, (key, official[key])
    # Partial answers earn F1 but not EM, so the two must differ.
    assert official["f1"] > official["exact_match"] + 1.0
    # The parsed dict also scores the same as the path.
    assert sp.score_predictions(dataset, predictions) == ours
