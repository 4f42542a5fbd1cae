"""The README's main job reaches its target (slow: about 15 minutes on 2 cores)."""

import json
import subprocess
import sys
import time

import pytest

from tests.helpers import GLUE_DIR, REPO_ROOT


@pytest.mark.slow
def test_default_mrpc_adapter_job_reaches_f1_085_within_20_minutes(tmp_path):
    if not GLUE_DIR.is_dir():
        pytest.skip(f"real GLUE data not found at {GLUE_DIR}")
    start = time.time()
    subprocess.run([sys.executable, str(REPO_ROOT / "run_classifier.py"),
                    f"--data_dir={GLUE_DIR}", f"--model_dir={tmp_path}"],
                   check=True, capture_output=True, timeout=1800)
    minutes = (time.time() - start) / 60
    dev = json.loads((tmp_path / "eval_results.json").read_text())["dev"]
    assert dev["f1"] >= 0.85, dev
    assert minutes < 20, minutes
