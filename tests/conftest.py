"""Shared pytest fixtures."""

import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Real GLUE and SQuAD data in their original layout (see ../shared/data/README.md).
GLUE_DIR = REPO_ROOT.parent / "shared" / "data" / "glue"
SQUAD_DIR = REPO_ROOT.parent / "shared" / "data" / "squad"
SQUAD_DEV = SQUAD_DIR / "dev-v1.1.json"
SQUAD_TRAIN = SQUAD_DIR / "train-v1.1-first44articles.json"


@pytest.fixture
def glue_dir() -> pathlib.Path:
    """The real GLUE folder; skips the test when it is absent."""
    if not GLUE_DIR.is_dir():
        pytest.skip(f"real GLUE data not found at {GLUE_DIR}: expected the shared data "
                    "folder next to the repository (../shared/data/glue)")
    return GLUE_DIR


def require_squad():
    """Skip the calling test when the real SQuAD files are absent."""
    if not SQUAD_DIR.is_dir():
        pytest.skip(f"real SQuAD data not found at {SQUAD_DIR}: expected the shared data "
                    "folder next to the repository (../shared/data/squad)")


def _split_cpu_in_two():
    """Two logical CPU devices, so MirroredStrategy tests have replicas.

    It must run before TensorFlow initialises its devices, hence at import.
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


_split_cpu_in_two()


# SavedModels served the way a serving team would: a fresh process that
# imports only TensorFlow and tensorflow-text, loads them and calls signatures.
_SERVE_IN_FRESH_PROCESS = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)
results = []
for export_dir, signature, inputs in json.loads(sys.argv[1]):
    signatures = tf.saved_model.load(export_dir).signatures
    outputs = signatures[signature](**{name: tf.constant(value) for name, value in inputs.items()})
    results.append({name: [v.decode() for v in value.numpy().ravel()]
                    if value.dtype == tf.string else value.numpy().tolist()
                    for name, value in outputs.items()})
    results[-1]["__signatures__"] = sorted(signatures)
print(json.dumps(results))
"""


def serve_in_fresh_process(*calls):
    """Call SavedModel signatures in one new Python process.

    Args:
        *calls: `(export_dir, signature, inputs)` triples, `inputs` a dict of
            input name to a JSON-serialisable list (or scalar).

    Returns:
        A list with each call's dict of output name to a NumPy array (strings
        as a list of str), plus `"__signatures__"`: the names of the
        SavedModel's signatures.
    """
    import json
    import subprocess
    import sys

    import numpy as np

    payload = json.dumps([(str(d), signature, inputs) for d, signature, inputs in calls])
    result = subprocess.run([sys.executable, "-c", _SERVE_IN_FRESH_PROCESS, payload],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [{name: value if value and isinstance(value[0], str) else np.array(value)
             for name, value in outputs.items()}
            for outputs in json.loads(result.stdout.strip().splitlines()[-1])]


def saved_model_cli_show(export_dir):
    """The output of `saved_model_cli show --all --dir export_dir`."""
    import subprocess
    import sys

    cli = pathlib.Path(sys.executable).parent / "saved_model_cli"
    result = subprocess.run([str(cli), "show", "--all", "--dir", str(export_dir)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
