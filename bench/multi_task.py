r"""Parallel multi-task inference with AdapterDrop against separate single-task passes.

Rücklé et al., 2021, "AdapterDrop", §4 / Fig. 5 ("parallel" inference): with T
tasks whose adapters are dropped from the lowest n layers, those n layers are
computed once for all tasks (`AdapterModel.parallel`) instead of once per task.
On a BERT-base-sized model (12 layers, hidden 768, 12 heads, vocabulary 30522,
random weights, adapters of size 64 with the default initialisation) at batch
8 and sequence length 128, forward passes only (`training=False`):

- headline: T=8 tasks at shared depth n=5. Separate arm: 8 single-task passes,
  each its own graph traced with that task active and AdapterDrop depth 5.
  Parallel arm: one `parallel` call returning all 8 tasks. Speed-up =
  time(separate) / time(parallel); FLOP bound 96/61 = 1.57x.
- sweep: n in 0..num_layers, T in --tasks. Every task's single-task model has
  the same size, so one single-task pass (task 0, depth n) is timed per depth
  and the separate time of T tasks is taken as T times it; the parallel model
  is timed for each (n, T).
- control: two bare keras-hub backbones with different weights, on different
  batches, as two calls against one graph running both. Nothing is shared,
  so its speed-up is what one graph of independent streams gains by itself.
  `--inter_op_threads=1` runs one op at a time, so streams cannot overlap.

Every arm is a `tf.function` (no XLA) traced once on a fixed input signature,
run --warmup times untimed, then timed --repeats times, arms interleaved within
each repeat so background load hits them alike; the medians (wall seconds per
batch, `time.perf_counter`) are compared. The FLOP bound of each point is
T·L / (n + T·(L − n)) in transformer layers (embeddings, pooler, heads and
adapters ignored). Prints a table, writes JSON and a Fig. 5-style plot (PNG,
Agg): speed-up against n, one line per T, dashed FLOP bounds. The headline
first checks that each task's parallel logits equal its single-task logits.

  python bench/multi_task.py --output=bench/results/multi_task.json \
      --plot=bench/results/multi_task.png

On this 2-core CPU, `--repeats=3` took 26 minutes (2026-11-22).
"""

import os
import time

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from absl import app, flags, logging
from matplotlib.figure import Figure

from keras_adapters import AdapterBertBackbone
from keras_adapters.configuration.adapter_config import AdapterConfig
from keras_adapters.models.adapter_backbone import add_adapters
from keras_adapters.models.adapter_model import AdapterModel
from keras_adapters.utils.atomic import atomic_path, write_json

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "bench/results/multi_task.json", "JSON destination.")
flags.DEFINE_string("plot", "bench/results/multi_task.png", "PNG plot destination.")
flags.DEFINE_integer("num_layers", 12, "Transformer layers L.")
flags.DEFINE_integer("hidden_dim", 768, "Hidden size (intermediate size is 4x).")
flags.DEFINE_integer("num_heads", 12, "Attention heads.")
flags.DEFINE_integer("adapter_size", 64, "Adapter bottleneck size.")
flags.DEFINE_integer("batch_size", 8, "Examples per batch.")
flags.DEFINE_integer("seq_length", 128, "Tokens per example.")
flags.DEFINE_integer("repeats", 5, "Timed calls per arm (the median is kept).")
flags.DEFINE_integer("warmup", 1, "Untimed calls per arm before timing.")
flags.DEFINE_list("tasks", ["2", "4", "8", "16"], "Task counts T of the sweep.")
flags.DEFINE_integer("headline_tasks", 8, "Task count T of the headline.")
flags.DEFINE_integer("headline_depth", 5, "Shared depth n of the headline.")
flags.DEFINE_integer("inter_op_threads", 0,
                     "TensorFlow inter-op threads; 0 keeps TensorFlow's default (one per core). "
                     "1 runs one op at a time, so independent task streams cannot overlap.")

VOCABULARY = 30522
NUM_CLASSES = 2
INPUTS = ("token_ids", "segment_ids", "padding_mask")


def task_name(index):
    return f"task{index}"


def bert_config():
    """Keyword arguments of a `BertBackbone` of the flags' size."""
    return {"vocabulary_size": VOCABULARY, "num_layers": FLAGS.num_layers,
            "num_heads": FLAGS.num_heads, "hidden_dim": FLAGS.hidden_dim,
            "intermediate_dim": 4 * FLAGS.hidden_dim, "max_sequence_length": 512}


def build_model(num_tasks):
    """An `AdapterModel` on a random BERT with `num_tasks` adapters and 2-class heads."""
    keras.utils.set_random_seed(0)
    plain = AdapterBertBackbone(**bert_config())
    config = AdapterConfig(adapter_size=FLAGS.adapter_size)
    model = AdapterModel(add_adapters(plain, config, name=task_name(0)))
    model.add_classification_head(task_name(0), NUM_CLASSES)
    for index in range(1, num_tasks):
        model.add_adapter(task_name(index), config)
        model.add_classification_head(task_name(index), NUM_CLASSES)
    return model


def make_batch(seed=0):
    """One random batch: dict of int32 `(batch_size, seq_length)` tensors."""
    rng = np.random.default_rng(seed)
    shape = (FLAGS.batch_size, FLAGS.seq_length)
    return {"token_ids": tf.constant(rng.integers(0, VOCABULARY, shape), tf.int32),
            "segment_ids": tf.zeros(shape, tf.int32),
            "padding_mask": tf.ones(shape, tf.int32)}


def trace(function, num_batches=1):
    """`function` of `num_batches` batches as a graph function, traced now.

    Tracing does not run the graph. A model's graph keeps the adapter that
    was active while tracing.
    """
    spec = {name: tf.TensorSpec((FLAGS.batch_size, FLAGS.seq_length), tf.int32)
            for name in INPUTS}
    graph_function = tf.function(function, input_signature=[spec] * num_batches,
                                 jit_compile=False)
    graph_function.get_concrete_function()
    return graph_function


def traced(model):
    """`model(inputs, training=False)` as a graph function of one batch, traced now."""
    return trace(lambda inputs: model(inputs, training=False))


def single_task_functions(model, tasks):
    """Dict from task name to its traced single-task function."""
    functions = {}
    for task in tasks:
        model.set_active_adapters(task)
        functions[task] = traced(model)
    return functions


def median_seconds(arms, batch):
    """Median wall seconds of one call of each arm, arms interleaved per repeat.

    Args:
        arms: dict from arm name to a function of the batch (already traced).
        batch: the input of every arm.

    Returns:
        dict from arm name to float seconds.
    """
    for _ in range(FLAGS.warmup):
        for run in arms.values():
            run(batch)
    seconds = {arm: [] for arm in arms}
    for _ in range(FLAGS.repeats):
        for arm, run in arms.items():
            start = time.perf_counter()
            run(batch)
            seconds[arm].append(time.perf_counter() - start)
    return {arm: float(np.median(values)) for arm, values in seconds.items()}


def flop_bound(num_tasks, depth):
    """FLOP ratio separate/parallel in transformer layers: T·L / (n + T·(L − n))."""
    layers = FLAGS.num_layers
    return num_tasks * layers / (depth + num_tasks * (layers - depth))


def check_outputs(parallel, singles, batch):
    """Raise unless every task's parallel logits equal its single-task logits."""
    for task, logits in parallel(batch).items():
        np.testing.assert_allclose(logits.numpy(), singles[task](batch).numpy(),
                                   rtol=1e-4, atol=1e-4, err_msg=task)


def headline(model, batch):
    """T separate single-task graphs against one parallel graph at depth n.

    Returns:
        dict: seconds per batch of both arms, speed-up (separate/parallel)
        and its FLOP bound.
    """
    num_tasks, depth = FLAGS.headline_tasks, FLAGS.headline_depth
    tasks = [task_name(i) for i in range(num_tasks)]
    model.backbone.set_drop_first_n(depth)
    singles = single_task_functions(model, tasks)
    parallel = traced(model.parallel(tasks, drop_first_n=depth))
    check_outputs(parallel, singles, batch)
    seconds = median_seconds({
        "separate": lambda inputs: [run(inputs) for run in singles.values()],
        "parallel": parallel,
    }, batch)
    return {"tasks": num_tasks, "depth": depth,
            "separate_seconds": seconds["separate"], "parallel_seconds": seconds["parallel"],
            "speedup": seconds["separate"] / seconds["parallel"],
            "flop_bound": flop_bound(num_tasks, depth)}


def control(batch):
    """Two bare keras-hub backbones in one graph against two calls; nothing shared.

    The backbones have different random weights and get different batches,
    so a speed-up can only come from TensorFlow running two independent
    streams of ops in one graph. It is the part of the parallel model's
    speed-up at n = 0 that AdapterDrop has no part in.

    Returns:
        dict: seconds for two batches as two calls and as one graph, and the
        speed-up (calls/graph).
    """
    backbones = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        backbones.append(keras_hub.models.BertBackbone(**bert_config()))

    def both_backbones(one, two):
        return [backbones[0](one, training=False), backbones[1](two, training=False)]

    first, second = (traced(backbone) for backbone in backbones)
    both = trace(both_backbones, num_batches=2)
    seconds = median_seconds({
        "calls": lambda pair: [first(pair[0]), second(pair[1])],
        "graph": lambda pair: both(*pair),
    }, (batch, make_batch(seed=1)))
    return {"calls_seconds": seconds["calls"], "graph_seconds": seconds["graph"],
            "speedup": seconds["calls"] / seconds["graph"]}


def sweep_depth(model, single, depth, task_counts, batch):
    """Speed-ups at shared depth `depth` for every task count.

    Args:
        model: the `AdapterModel`.
        single: traced single-task function (task 0); reads the AdapterDrop
            depth at run time.
        depth: int n.
        task_counts: list of int T.
        batch: the input.

    Returns:
        list of dicts, one per T: seconds per batch of one single-task pass,
        of T of them (T times it) and of the parallel model, the speed-up
        (separate/parallel) and its FLOP bound.
    """
    model.backbone.set_drop_first_n(depth)
    arms = {"single": single}
    for num_tasks in task_counts:
        tasks = [task_name(i) for i in range(num_tasks)]
        arms[num_tasks] = traced(model.parallel(tasks, drop_first_n=depth))
    seconds = median_seconds(arms, batch)
    logging.info("depth %d: single-task pass %.3f s", depth, seconds["single"])
    return [{"depth": depth, "tasks": num_tasks,
             "single_pass_seconds": seconds["single"],
             "separate_seconds": num_tasks * seconds["single"],
             "parallel_seconds": seconds[num_tasks],
             "speedup": num_tasks * seconds["single"] / seconds[num_tasks],
             "flop_bound": flop_bound(num_tasks, depth)}
            for num_tasks in task_counts]


def print_table(points, task_counts):
    """Measured speed-up (FLOP bound) per depth n (rows) and task count T (columns)."""
    by_key = {(p["depth"], p["tasks"]): p for p in points}
    print("speed-up of parallel over separate, measured (FLOP bound)")
    print(f"{'n':>3} {'single s':>9}" + "".join(f"{f'T={t}':>16}" for t in task_counts))
    for depth in range(FLAGS.num_layers + 1):
        row = [by_key[depth, t] for t in task_counts]
        print(f"{depth:>3} {row[0]['single_pass_seconds']:>9.3f}" + "".join(
            f"{p['speedup']:>9.2f} ({p['flop_bound']:.2f})" for p in row))


def plot(points, task_counts, path):
    """Write a PNG: speed-up against shared depth n, one line per T, dashed bounds."""
    figure = Figure(figsize=(6, 4.5))
    axes = figure.subplots()
    depths = list(range(FLAGS.num_layers + 1))
    for index, num_tasks in enumerate(task_counts):
        row = sorted((p for p in points if p["tasks"] == num_tasks), key=lambda p: p["depth"])
        color = f"C{index}"
        axes.plot(depths, [p["speedup"] for p in row], "o-", color=color,
                  label=f"{num_tasks} tasks")
        axes.plot(depths, [p["flop_bound"] for p in row], "--", color=color, alpha=0.6)
    axes.axhline(1.0, color="grey", linewidth=0.8)
    axes.set_xticks(depths)
    axes.set_xlabel("shared layers n (adapters dropped)")
    axes.set_ylabel("speed-up, separate / parallel")
    axes.set_title(f"Parallel multi-task inference, L={FLAGS.num_layers}, "
                   f"batch {FLAGS.batch_size}x{FLAGS.seq_length} (dashed: FLOP bound)",
                   fontsize=9)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)


def main(argv):
    del argv
    if FLAGS.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    task_counts = sorted(int(t) for t in FLAGS.tasks)
    model = build_model(max(task_counts + [FLAGS.headline_tasks]))
    batch = make_batch()
    top = headline(model, batch)
    logging.info("headline: %s", top)
    two_streams = control(batch)
    logging.info("control: %s", two_streams)
    model.set_active_adapters(task_name(0))
    single = traced(model)
    points = [point for depth in range(FLAGS.num_layers + 1)
              for point in sweep_depth(model, single, depth, task_counts, batch)]
    result = {
        "config": {name: FLAGS[name].value for name in (
            "num_layers", "hidden_dim", "num_heads", "adapter_size", "batch_size",
            "seq_length", "repeats", "warmup", "inter_op_threads")}
        | {"intermediate_dim": 4 * FLAGS.hidden_dim, "vocabulary_size": VOCABULARY,
           "tasks": task_counts},
        "method": (
            "Wall seconds per batch, median of repeats, arms interleaved. speedup = "
            "separate_seconds / parallel_seconds. Headline: separate is T single-task "
            "graphs, one per task. Sweep: separate_seconds = T x single_pass_seconds "
            "(one single-task pass timed per depth; every task's model has the same "
            "size). flop_bound = T*L / (n + T*(L - n)), transformer layers only. "
            "Control: two bare keras-hub backbones (different weights, different "
            "batches) as two tf.function calls against one tf.function running both; "
            "speedup = calls_seconds / graph_seconds."),
        "headline": top,
        "control": two_streams,
        "sweep": points,
        "cpu_count": os.cpu_count(),
    }
    write_json(FLAGS.output, result)
    plot(points, task_counts, FLAGS.plot)
    print_table(points, task_counts)
    print(f"headline T={top['tasks']} n={top['depth']}: separate {top['separate_seconds']:.3f} s, "
          f"parallel {top['parallel_seconds']:.3f} s, speed-up {top['speedup']:.2f}x "
          f"(FLOP bound {top['flop_bound']:.2f}x)")
    print(f"control, two bare backbones: two calls {two_streams['calls_seconds']:.3f} s, "
          f"one graph {two_streams['graph_seconds']:.3f} s, "
          f"speed-up {two_streams['speedup']:.2f}x")


if __name__ == "__main__":
    app.run(main)
