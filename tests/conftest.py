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
