r"""Where a training step's time goes: full fine-tuning against adapters, op by op.

Profiles two training steps of each arm of `adapter_speed.py` (same model,
same flags) with the TensorFlow profiler and reads the trace it writes:

- op time per op type, summed over TensorFlow's executor threads (seconds
  per step). Ops that run at once share the cores, so this overstates the
  work of an arm whose ops overlap;
- concurrency: the share of the step during which 0, 1 or 2+ ops run at
  once: how much of that work overlaps on the cores.

  python bench/profile_step.py --profile_output=bench/results/profile_step.json
"""

import collections
import glob
import os
import sys
import tempfile
import time

from absl import app, flags
from tensorflow.tsl.profiler.protobuf import xplane_pb2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import adapter_speed  # noqa: E402  (the arms and their flags)
import tensorflow as tf  # noqa: E402

from keras_adapters.utils.atomic import write_json  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("profile_output", "bench/results/profile_step.json", "JSON destination.")
flags.DEFINE_integer("profiled_steps", 2, "Steps traced per arm.")
ARMS = ("full", "adapters")
MATMULS = ("_MklMatMul", "_MklBatchMatMulV2", "MatMul", "BatchMatMulV2", "_MklNativeFusedMatMul")


def trace(arm, logdir):
    """Profile `--profiled_steps` steps of `arm`; return (xspace, seconds per step)."""
    features, labels = adapter_speed.batch()
    model = adapter_speed.build(arm)
    for _ in range(2):  # trace and warm up
        model.train_on_batch(features, labels)
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(FLAGS.profiled_steps):
        model.train_on_batch(features, labels)
    seconds = (time.perf_counter() - start) / FLAGS.profiled_steps
    tf.profiler.experimental.stop()
    path = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    return space, seconds


def op_events(space):
    """`(op type, start ps, end ps)` of every op on the executor threads."""
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                op_type = plane.event_metadata[event.metadata_id].name.split(":")[-1]
                if op_type == "Process":  # the executor's span around its ops
                    continue
                start = line.timestamp_ns * 1000 + event.offset_ps
                yield op_type, start, start + event.duration_ps


def summarise(space, seconds):
    events = list(op_events(space))
    steps = FLAGS.profiled_steps
    by_type = collections.Counter()
    for op_type, start, end in events:
        by_type[op_type] += (end - start) / 1e12 / steps
    edges = sorted([(s, 1) for _, s, _ in events] + [(e, -1) for _, _, e in events])
    running, last, share = 0, edges[0][0], collections.Counter()
    for time_ps, change in edges:
        share[min(running, 2)] += time_ps - last
        running, last = running + change, time_ps
    total = sum(share.values())
    return {
        "seconds_per_step": seconds,
        "op_seconds_per_step": sum(by_type.values()),
        "matmul_op_seconds_per_step": sum(v for k, v in by_type.items() if k in MATMULS),
        "top_op_types": dict(by_type.most_common(12)),
        "share_of_time_with_ops_running": {
            "0": share[0] / total, "1": share[1] / total, "2+": share[2] / total},
    }


def main(argv):
    del argv
    if FLAGS.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    result = {"config": {name: FLAGS[name].value for name in (
        "num_layers", "hidden_dim", "batch_size", "seq_length", "adapter_size",
        "profiled_steps", "inter_op_threads")}}
    with tempfile.TemporaryDirectory() as logdir:
        for arm in ARMS:
            result[arm] = summarise(*trace(arm, os.path.join(logdir, arm)))
    result["ratios"] = {
        name: result["adapters"][name] / result["full"][name]
        for name in ("seconds_per_step", "op_seconds_per_step", "matmul_op_seconds_per_step")}
    write_json(FLAGS.profile_output, result)
    for arm in ARMS:
        print(f"{arm:9s} step {result[arm]['seconds_per_step']:.2f} s, op time "
              f"{result[arm]['op_seconds_per_step']:.2f} s (matmuls "
              f"{result[arm]['matmul_op_seconds_per_step']:.2f} s), time with 1 / 2+ ops "
              f"running {result[arm]['share_of_time_with_ops_running']['1']:.0%} / "
              f"{result[arm]['share_of_time_with_ops_running']['2+']:.0%}")
    for name, value in result["ratios"].items():
        print(f"adapters / full {name:28s} {value:.3f}x")


if __name__ == "__main__":
    app.run(main)
