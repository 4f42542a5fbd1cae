r"""Inference speed of a pruned AdapterFusion against the full one (Rücklé et al., 2021, §5).

Each fused adapter adds, per token and layer, its adapter (2·H·m multiply-adds)
and the fusion's key and value projections of its output (2·H²); the query
(H²) is paid once. Pruning a fusion of N adapters to k removes (N − k) of
those. For two model sizes with random weights (BERT-base: 12 layers, H 768,
8 adapters; all-MiniLM-L6-v2: 6 layers, H 384, 5 adapters), `seq_bn`
adapters of size 64 and a `"dynamic"` fusion over them, at batch 8 and
sequence length 128, forward passes only, this times:

- `fusion`: the fusion over all N adapters;
- `pruned`: `prune_adapter_fusion(..., keep=2)` of it (the other adapters are
  not computed);
- `single_adapter`: one of the adapters alone, for scale.

Every arm is a `tf.function` traced once on a fixed input signature, warmed
up, then timed --repeats times with the arms interleaved in each round;
medians are compared. The FLOP bound of the speed-up counts multiply-adds per
token: the layer's own projections 12·H² and attention 2·T·H, plus the terms
above (embeddings and head ignored).

  python bench/fusion_pruning.py --output=bench/results/fusion_pruning.json
"""

import time

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from absl import app, flags

from keras_adapters import AdapterConfig, FusionAttention, add_adapters, prune_adapter_fusion
from keras_adapters.utils.atomic import write_json

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "bench/results/fusion_pruning.json", "JSON destination.")
flags.DEFINE_integer("batch_size", 8, "Examples per batch.")
flags.DEFINE_integer("sequence_length", 128, "Tokens per example.")
flags.DEFINE_integer("adapter_size", 64, "Adapter bottleneck size m.")
flags.DEFINE_integer("keep", 2, "Adapters the pruned fusion keeps.")
flags.DEFINE_integer("repeats", 7, "Timing rounds.")
flags.DEFINE_integer("warmup", 2, "Untimed calls per arm.")

SIZES = {  # name: (layers, hidden, heads, fused adapters)
    "bert_base": (12, 768, 12, 8),
    "minilm_l6": (6, 384, 12, 5),
}


def flop_bound(hidden, adapters, keep, length, adapter_size):
    """Multiply-adds per token and layer, full fusion over pruned: the ideal speed-up."""
    base = 12 * hidden**2 + 2 * length * hidden + hidden**2  # + the fusion's query

    def fused(n):
        return base + n * (2 * hidden**2 + 2 * hidden * adapter_size)

    return fused(adapters) / fused(keep)


def build(layers, hidden, heads, adapters):
    """A random BERT with `adapters` seq_bn adapters, a fusion over all, and its pruned copy."""
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=30522, num_layers=layers, num_heads=heads, hidden_dim=hidden,
        intermediate_dim=4 * hidden, max_sequence_length=512)
    backbone = add_adapters(backbone, name=None)
    names = [f"task_{i}" for i in range(adapters)]
    for name in names:
        backbone.add_adapter(name, AdapterConfig(placement="seq_bn", adapter_size=FLAGS.adapter_size,
                                                 train_layer_norms=False))
    fusion = backbone.add_adapter_fusion(names)
    # Which adapters are kept does not change the cost: the first `keep`.
    weights = np.tile(np.arange(adapters, 0, -1, dtype="float64"), (layers, 1))
    pruned = prune_adapter_fusion(backbone, fusion, FLAGS.keep,
                                  attention=FusionAttention(names, weights / weights.sum(1)[:, None]))
    return backbone, {"fusion": fusion, "pruned": pruned, "single_adapter": names[0]}


def time_arms(backbone, arms, features):
    functions = {}
    for arm, active in arms.items():
        backbone.set_active_adapters(active)  # Read when traced.
        function = tf.function(lambda x: backbone(x, training=False)["sequence_output"])
        functions[arm] = function.get_concrete_function(
            {key: tf.TensorSpec(value.shape, value.dtype) for key, value in features.items()})
        for _ in range(FLAGS.warmup):
            functions[arm](features).numpy()
    times = {arm: [] for arm in arms}
    for _ in range(FLAGS.repeats):
        for arm in arms:
            start = time.perf_counter()
            functions[arm](features).numpy()
            times[arm].append(time.perf_counter() - start)
    return {arm: float(np.median(values)) for arm, values in times.items()}


def main(argv):
    del argv
    shape = (FLAGS.batch_size, FLAGS.sequence_length)
    rng = np.random.default_rng(0)
    features = {"token_ids": tf.constant(rng.integers(1000, 30000, shape), tf.int32),
                "segment_ids": tf.zeros(shape, tf.int32), "padding_mask": tf.ones(shape, tf.int32)}
    results = {}
    for size, (layers, hidden, heads, adapters) in SIZES.items():
        backbone, arms = build(layers, hidden, heads, adapters)
        seconds = time_arms(backbone, arms, features)
        results[size] = {
            "layers": layers, "hidden": hidden, "fused_adapters": adapters, "kept": FLAGS.keep,
            "seconds_per_batch": seconds,
            "speedup_pruned_over_fusion": seconds["fusion"] / seconds["pruned"],
            "flop_bound": flop_bound(hidden, adapters, FLAGS.keep, FLAGS.sequence_length,
                                     FLAGS.adapter_size),
        }
        print(f"{size}: fusion of {adapters} {seconds['fusion']:.3f} s, pruned to {FLAGS.keep} "
              f"{seconds['pruned']:.3f} s, one adapter {seconds['single_adapter']:.3f} s; "
              f"speed-up {results[size]['speedup_pruned_over_fusion']:.2f}x "
              f"(FLOP bound {results[size]['flop_bound']:.2f}x)")
    write_json(FLAGS.output, {"batch_size": FLAGS.batch_size,
                              "sequence_length": FLAGS.sequence_length,
                              "adapter_size": FLAGS.adapter_size, "repeats": FLAGS.repeats,
                              "sizes": results})


if __name__ == "__main__":
    app.run(main)
