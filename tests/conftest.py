"""Shared pytest fixtures; shared helpers live in tests/helpers.py."""

import pytest


@pytest.fixture
def glue_dir():
    """The real GLUE folder; skips the test when it is absent."""
    from tests.helpers import GLUE_DIR

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
