"""`tf.distribute` strategies by name, as in the TF Model Garden's `distribute_utils`."""

import socket

import tensorflow as tf

from keras_adapters.utils.keras_internals import enable_multi_worker_fit

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


def check_tpu_reachable(tpu_address, timeout=10.0):
    """Raise if a `grpc://host:port` TPU address does not accept connections.

    `TPUClusterResolver` waits indefinitely on such an address when no TPU is
    there; this fails within `timeout` seconds instead. Names and "" (looked
    up by the resolver itself) pass unchecked.

    Raises:
        ConnectionError: naming the address, if nothing listens there.
    """
    if not tpu_address.startswith("grpc://"):
        return
    host, _, port = tpu_address.removeprefix("grpc://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise ConnectionError(f"--tpu={tpu_address}: no TPU answers there ({e}).") from e


def connect_to_cluster(resolver):
    """Connect to the TPU `resolver` names and initialise it: the network calls.

    A seam: tests without a TPU replace it (and `tpu_strategy`); every other
    line of the TPU path runs in them.
    """
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)


def tpu_strategy(resolver):
    """`tf.distribute.TPUStrategy` over the connected TPU (a seam, as `connect_to_cluster`)."""
    return tf.distribute.TPUStrategy(resolver)


def connect_to_tpu(tpu_address):
    """Connect to a TPU and initialise it; returns its cluster resolver.

    Args:
        tpu_address: str, a TPU name or `grpc://` address ("" for a local TPU
            VM).

    This call blocks while looking for the TPU; it is the only TPU-specific
    step, everything after it is shared with the other strategies.

    Raises:
        ConnectionError: a `grpc://` address where nothing listens
            (`check_tpu_reachable`).
    """
    check_tpu_reachable(tpu_address)
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
    connect_to_cluster(resolver)
    return resolver


def get_strategy(name="default", tpu_address=None, devices=None):
    """A `tf.distribute.Strategy` by name.

    Args:
        name: one of `STRATEGIES`. `default` is the no-op strategy (one
            device, no replication); `one_device` pins to the first device in
            `devices` (default "/gpu:0" if a GPU exists, else "/cpu:0");
            `mirrored` replicates over `devices` (default: all GPUs, else the
            CPU); `multi_worker_mirrored` reads the cluster from `TF_CONFIG`
            (and makes Keras' `fit` work under it: `enable_multi_worker_fit`);
            `tpu` needs `tpu_address`.
        tpu_address: str, for `tpu` only: see `connect_to_tpu`.
        devices: list of device strings, or None for the defaults above.

    Returns:
        The strategy. Build the model and optimizer inside `strategy.scope()`.

    Raises:
        ValueError: for an unknown name, or `tpu` without `tpu_address`.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}.")
    if name == "tpu":
        if tpu_address is None:
            raise ValueError("--strategy=tpu needs --tpu (a TPU name or grpc:// address).")
        return tpu_strategy(connect_to_tpu(tpu_address))
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        default = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
        return tf.distribute.OneDeviceStrategy((devices or [default])[0])
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    enable_multi_worker_fit()
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy):
    """Whether this process writes the run's files.

    True for a one-process strategy, and for the chief of a cluster: the
    `chief` task, or worker 0 when `TF_CONFIG` names none. The other workers
    train and evaluate with it, but write nothing.
    """
    return strategy.extended.should_checkpoint


def needs_static_shapes(strategy_name):
    """Whether the strategy named `strategy_name` needs static shapes (a TPU's does)."""
    return strategy_name == "tpu"
