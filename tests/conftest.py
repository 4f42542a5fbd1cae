"""Shared pytest fixtures."""

import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Real GLUE data in its original layout (see ../shared/data/README.md).
GLUE_DIR = REPO_ROOT.parent / "shared" / "data" / "glue"


@pytest.fixture
def glue_dir() -> pathlib.Path:
    """The real GLUE folder; skips the test when it is absent."""
    if not GLUE_DIR.is_dir():
        pytest.skip(f"real GLUE data not found at {GLUE_DIR}: expected the shared data "
                    "folder next to the repository (../shared/data/glue)")
    return GLUE_DIR


def _split_cpu_in_two():
    """Two logical CPU devices, so MirroredStrategy tests have replicas.

    It must run before TensorFlow initialises its devices, hence at import.
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


_split_cpu_in_two()
