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


# A SavedModel served the way a serving team would: a fresh process that
# imports only TensorFlow and tensorflow-text, loads it and calls a signature.
_SERVE_IN_FRESH_PROCESS = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)
export_dir, signature, inputs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
serve = tf.saved_model.load(export_dir).signatures[signature]
outputs = serve(**{name: tf.constant(value) for name, value in inputs.items()})
print(json.dumps({name: [v.decode() for v in value.numpy().ravel()] if value.dtype == tf.string
                  else value.numpy().tolist() for name, value in outputs.items()}))
"""


def serve_in_fresh_process(export_dir, inputs, signature="serving_default"):
    """Call `signature` of the SavedModel at `export_dir` in a new Python process.

    Args:
        inputs: dict of input name to a JSON-serialisable list (or scalar).

    Returns:
        dict of output name to a NumPy array (strings as a list of str).
    """
    import json
    import subprocess
    import sys

    import numpy as np

    result = subprocess.run(
        [sys.executable, "-c", _SERVE_IN_FRESH_PROCESS, str(export_dir), signature,
         json.dumps(inputs)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = json.loads(result.stdout.strip().splitlines()[-1])
    return {name: value if value and isinstance(value[0], str) else np.array(value)
            for name, value in outputs.items()}


def saved_model_cli_show(export_dir):
    """The output of `saved_model_cli show --all --dir export_dir`."""
    import subprocess
    import sys

    cli = pathlib.Path(sys.executable).parent / "saved_model_cli"
    result = subprocess.run([str(cli), "show", "--all", "--dir", str(export_dir)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
