r"""Adapter training and inference speed against full fine-tuning and the bare backbone.

Issue 4's first two benchmarks, on a BERT-base-sized model (12 layers, hidden
768, 12 heads, random weights) at sequence length 128:

- training step time and peak memory: full fine-tuning, adapters (size 64),
  and adapters with specialised AdapterDrop of the lowest 5 layers (whose
  layer norms are then frozen too);
- inference time: the bare frozen backbone against the same with adapters.

`--train_arms` picks the training arms. Besides the four below there are
`adapters_drop_<n>` (specialised AdapterDrop at depth n), `robust`
(robust AdapterDrop: n drawn at every step, every layer norm trained) and
`lora_<r>` (keras-hub's `enable_lora(rank=r)`: the query and value
projections), each also compared with the plain adapters. For the GLUE
suite's AdapterDrop and LoRA arms, at all-MiniLM-L6-v2's size and batch:

  python bench/adapter_speed.py --num_layers=6 --hidden_dim=384 --batch_size=32 \
      --train_arms=full,adapters,robust,adapters_drop_1,adapters_drop_3,adapters_drop_5 \
      --output=bench/results/adapter_drop_speed_minilm.json
  python bench/adapter_speed.py --num_layers=6 --hidden_dim=384 --batch_size=32 \
      --train_arms=full,adapters,lora_8,lora_16 --output=bench/results/lora_speed_minilm.json

A fourth training arm, `layer_norms`, trains only the layer norms and the
head: adapters that cost nothing, with backprop as deep as the adapter
arm's. Each ratio is printed beside its matmul FLOP ratio
(`matmul_macs_per_token`), the bound that frozen weights allow.

Time arms run in one process, alternating every round so machine noise hits
them alike; the medians are compared. Peak memory is the peak resident set
(VmHWM) of a fresh child process per arm (`--arm`) that builds the model and
trains two steps; its resident set before the first step is recorded too, so
the memory training adds can be compared apart from the runtime and weights
every arm holds. Prints a table and writes JSON.

  python bench/adapter_speed.py --output=bench/results/adapter_speed.json

`--jit_compile` compiles every arm with XLA; `--inter_op_threads=1` runs one
op at a time.
"""

import json
import os
import re
import subprocess
import sys
import time

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from absl import app, flags

from keras_adapters import AdapterBertBackbone, AdapterConfig, freeze_for_adapter_tuning
from keras_adapters.utils.atomic import write_json
from keras_adapters.utils.keras_internals import child_layers

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "bench/results/adapter_speed.json", "JSON destination.")
flags.DEFINE_integer("num_layers", 12, "Transformer layers.")
flags.DEFINE_integer("hidden_dim", 768, "Hidden size.")
flags.DEFINE_integer("num_heads", 12, "Attention heads.")
flags.DEFINE_integer("batch_size", 16, "Batch size.")
flags.DEFINE_integer("seq_length", 128, "Tokens per example.")
flags.DEFINE_integer("adapter_size", 64, "Adapter bottleneck size.")
flags.DEFINE_integer("drop_first_n", 5, "AdapterDrop depth of the adapters_drop arm.")
flags.DEFINE_integer("steps", 5, "Timed steps per arm and round.")
flags.DEFINE_integer("rounds", 7, "Alternating rounds of the training arms. A round's ratio "
                     "ranged from 0.65x to 0.75x in one run, so one round is not enough.")
flags.DEFINE_integer("inference_rounds", 9,
                     "Alternating rounds of the inference arms. Their 3% difference needs more "
                     "than the training arms' 30%: with 3 rounds it came out from 0.99x to 1.07x.")
flags.DEFINE_integer("inter_op_threads", 0,
                     "TensorFlow inter-op threads; 0 keeps TensorFlow's default (one per core). "
                     "1 runs one op at a time, which shows how much of full fine-tuning's speed "
                     "comes from overlapping its weight-gradient matmuls with the backward chain.")
flags.DEFINE_boolean("jit_compile", False, "Compile every arm with XLA.")
flags.DEFINE_string("arm", None, "Internal: measure one arm's peak memory and exit.")
flags.DEFINE_list("train_arms", "full,adapters,adapters_drop,layer_norms",
                  "Training arms, timed in this order each round: full, adapters, "
                  "adapters_drop (at --drop_first_n), adapters_drop_<n>, robust, layer_norms, "
                  "lora_<r>. "
                  "full and adapters are required.")

INFERENCE_ARMS = ("backbone", "adapters")
VOCABULARY = 30522


def build(arm):
    """A compiled classifier for a training arm, or a backbone for inference.

    Weights are random, so the adapter arms build their backbone directly
    rather than copying a plain one: no second copy inflates their memory.
    """
    keras.utils.set_random_seed(0)
    adapters = {}
    if has_adapters(arm):
        adapters = {"default": AdapterConfig(adapter_size=FLAGS.adapter_size).to_dict()}
    backbone = AdapterBertBackbone(
        vocabulary_size=VOCABULARY, num_layers=FLAGS.num_layers, num_heads=FLAGS.num_heads,
        hidden_dim=FLAGS.hidden_dim, intermediate_dim=4 * FLAGS.hidden_dim,
        max_sequence_length=512, adapter_configs=adapters,
        active_adapter="default" if adapters else None,
        drop_first_n=drop_depth(arm), robust_adapter_drop=arm == "robust", seed=0)
    if arm.startswith("lora_"):
        backbone.enable_lora(rank=lora_rank(arm))  # Freezes the rest of the backbone.
    model = keras_hub.models.BertTextClassifier(backbone, num_classes=2, preprocessor=None)
    if adapters:
        freeze_for_adapter_tuning(model)
    if arm == "layer_norms":
        freeze_all_but_layer_norms(backbone)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=FLAGS.jit_compile)
    return model


def has_adapters(arm):
    return arm not in ("full", "layer_norms") and not arm.startswith("lora_")


def lora_rank(arm):
    """The rank r of a `lora_<r>` arm, else 0."""
    return int(arm.removeprefix("lora_")) if arm.startswith("lora_") else 0


def drop_depth(arm):
    """The AdapterDrop depth n an arm trains at (robust: 0, drawn per step)."""
    if arm == "adapters_drop":
        return FLAGS.drop_first_n
    if arm.startswith("adapters_drop_"):
        return int(arm.removeprefix("adapters_drop_"))
    return 0


def freeze_all_but_layer_norms(backbone):
    """Leave only the transformer layers' layer norms (and the head) trainable.

    Leaf by leaf: freezing a container and re-enabling children leaves no
    trainable weight in Keras 3.
    """
    def freeze(layer):
        children = child_layers(layer)
        if not children:
            layer.trainable = isinstance(layer, keras.layers.LayerNormalization)
        for child in children:
            freeze(child)

    for layer in child_layers(backbone):
        freeze(layer)
    backbone.embeddings_layer_norm.trainable = False


def matmul_macs_per_token(arm, training=True):
    """Multiply-adds per token in the matmuls of one training step of `arm`.

    With `training=False`, of one forward pass. Per layer, the forward pass
    has the projections (4 d^2 + 2 d i, i the intermediate size), attention's
    scores and weighted values (2 s d, no weights) and, where adapters run,
    two adapters of two d x m projections (4 d m). Backprop through a layer
    costs each matmul's input gradient (attention's twice: both operands are
    activations) plus the weight gradients of what trains: every projection
    under full fine-tuning, the adapters otherwise. It stops inside the
    lowest layer with trained weights, after that layer's feed-forward block.
    Under robust AdapterDrop that is always the first layer (its layer norms
    train), and the count is the mean over the drawn n = 0 ... layers - 1.
    Keras' LoRA adds `A @ B` to the query and value kernels at every call
    and multiplies by the sum, so those two projections get full-size
    weight gradients (2 d^2) in every layer; the merge itself, once per
    step rather than per token, is left out with embeddings, pooler and
    head: under 0.1% here.
    """
    if arm == "robust":
        return float(np.mean([step_macs(arm, n, 0, training) for n in range(FLAGS.num_layers)]))
    n = drop_depth(arm)
    return step_macs(arm, n, n, training)


def step_macs(arm, first_adapter, first_trained, training):
    """`matmul_macs_per_token` with adapters from layer `first_adapter` up,
    and trained weights from layer `first_trained` up."""
    d, i, s, m = FLAGS.hidden_dim, 4 * FLAGS.hidden_dim, FLAGS.seq_length, FLAGS.adapter_size
    projections, attention = 4 * d * d + 2 * d * i, 2 * s * d
    adapters = 4 * d * m if has_adapters(arm) else 0
    total = 0
    for index in range(FLAGS.num_layers):
        adapted = adapters if index >= first_adapter else 0
        total += projections + attention + adapted
        if not training or index < first_trained:
            continue
        if arm == "full":
            total += 2 * projections + 2 * attention
        elif lora_rank(arm):  # Layer 0 needs no input gradient of query, key or value.
            below = d * d + 2 * d * i if index == first_trained else projections
            total += below + 2 * attention + 2 * d * d
        elif index == first_trained:
            total += 2 * d * i + 2 * adapted
        else:
            total += projections + 2 * attention + 2 * adapted
    return total


def batch():
    rng = np.random.default_rng(0)
    shape = (FLAGS.batch_size, FLAGS.seq_length)
    features = {"token_ids": rng.integers(0, VOCABULARY, shape).astype("int32"),
                "segment_ids": np.zeros(shape, "int32"),
                "padding_mask": np.ones(shape, "int32")}
    return features, rng.integers(0, 2, FLAGS.batch_size)


def step_seconds(run, steps):
    start = time.perf_counter()
    for _ in range(steps):
        run()
    return (time.perf_counter() - start) / steps


def runners(arms, training):
    features, labels = batch()
    result = {}
    for arm in arms:
        model = build(arm if training else ("full" if arm == "backbone" else "adapters"))
        if training:
            result[arm] = lambda m=model: m.train_on_batch(features, labels)
        else:
            result[arm] = lambda m=model: m.predict_on_batch(features)
        result[arm]()  # Trace before timing.
    return result


def timed(arms, training):
    """Seconds per step (or batch) of each arm in each round."""
    run = runners(arms, training)
    seconds = {arm: [] for arm in arms}
    for _ in range(FLAGS.rounds if training else FLAGS.inference_rounds):
        for arm in arms:
            seconds[arm].append(step_seconds(run[arm], FLAGS.steps))
    return seconds


def ratios(train, inference):
    """Training ratios of `train` (by training arm) and the inference ratio of `inference`.

    Every arm against full fine-tuning; the AdapterDrop arms also against
    the plain adapters, and the adapters against `layer_norms` when it ran.
    """
    result = {f"{arm}_vs_full_step": train[arm] / train["full"] for arm in train if arm != "full"}
    result.update({f"{arm}_vs_adapters_step": train[arm] / train["adapters"]
                   for arm in train
                   if arm == "robust" or arm.startswith(("adapters_drop", "lora_"))})
    if "layer_norms" in train:
        result["adapters_vs_layer_norms_step"] = train["adapters"] / train["layer_norms"]
    result["adapters_vs_backbone_inference"] = inference["adapters"] / inference["backbone"]
    return result


def resident_gb(field):
    """This process's resident set now ("VmRSS") or at its peak ("VmHWM"), GiB.

    Not `ru_maxrss`: Linux carries that over from the parent across fork and
    exec, so every child would report the parent's size.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 2**20
    raise RuntimeError(f"/proc/self/status has no {field} line.")


def arm_memory(arm):
    """Memory of a fresh process that builds `arm` and trains it for two steps.

    Returns {"peak_gb": peak resident set, "built_gb": resident set once
    the model is built, before its first step}. Their difference is what
    training adds to the process and the weights: the traced step, activations
    kept for backprop, gradients and optimizer slots.
    """
    command = [sys.executable, __file__, f"--arm={arm}",
               *[a for a in sys.argv[1:] if not a.startswith("--arm")]]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv):
    del argv
    if FLAGS.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    if FLAGS.arm:
        model = build(FLAGS.arm)
        built = resident_gb("VmRSS")
        features, labels = batch()
        for _ in range(2):
            model.train_on_batch(features, labels)
        print(json.dumps({"peak_gb": resident_gb("VmHWM"), "built_gb": built}))
        return
    arms = FLAGS.train_arms
    known = re.compile(r"full|adapters|adapters_drop(_\d+)?|robust|layer_norms|lora_[1-9]\d*")
    unknown = [arm for arm in arms if not known.fullmatch(arm)]
    if unknown or not {"full", "adapters"} <= set(arms) or len(set(arms)) < len(arms):
        raise app.UsageError(f"--train_arms needs full and adapters, each arm once, and no "
                             f"other arms than the flag's help names; got {arms}.")
    train_rounds = timed(arms, training=True)
    infer_rounds = timed(INFERENCE_ARMS, training=False)
    train = {arm: float(np.median(v)) for arm, v in train_rounds.items()}
    infer = {arm: float(np.median(v)) for arm, v in infer_rounds.items()}
    macs = {arm: matmul_macs_per_token(arm) for arm in arms}
    inference_macs = {"backbone": matmul_macs_per_token("full", training=False),
                      "adapters": matmul_macs_per_token("adapters", training=False)}
    arm_memories = {arm: arm_memory(arm) for arm in arms}
    memory = {arm: m["peak_gb"] for arm, m in arm_memories.items()}
    training_memory = {arm: m["peak_gb"] - m["built_gb"] for arm, m in arm_memories.items()}
    result = {
        "config": {name: FLAGS[name].value for name in (
            "num_layers", "hidden_dim", "num_heads", "batch_size", "seq_length",
            "adapter_size", "drop_first_n", "train_arms", "steps", "rounds", "inference_rounds",
            "inter_op_threads", "jit_compile")},
        "train_seconds_per_step": train,
        "train_seconds_per_step_by_round": train_rounds,
        "train_peak_memory_gb": memory,
        "train_memory_above_built_model_gb": training_memory,
        "inference_seconds_per_batch": infer,
        "inference_seconds_per_batch_by_round": infer_rounds,
        "matmul_macs_per_token": {"train": macs, "inference": inference_macs},
        "ratios": {
            **ratios(train, infer),
            "adapters_vs_full_memory": memory["adapters"] / memory["full"],
            "adapters_vs_full_training_memory": training_memory["adapters"] / training_memory["full"],
        },
        "matmul_flop_ratios": ratios(macs, inference_macs),
        "cpu_count": os.cpu_count(),
    }
    write_json(FLAGS.output, result)
    print(f"{'ratio':34s} {'measured':>9s} {'matmul FLOPs':>13s}")
    for name, value in result["ratios"].items():
        flops = result["matmul_flop_ratios"].get(name)
        print(f"{name:34s} {value:8.3f}x " + (f"{flops:12.3f}x" if flops else ""))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    app.run(main)
