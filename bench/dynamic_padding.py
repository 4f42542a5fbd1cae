r"""Training-step time: batches trimmed to their longest example vs fixed padding.

The arms train the same adapter model (all-MiniLM-L6-v2, adapter_size 64) on
real GLUE training data, in one process, alternating arms each round so
machine noise hits all alike: "fixed" pads every batch to --max_seq_length
(what a preprocessor attached to the model does), "trimmed" cuts each
shuffled batch to its longest example (the scripts' GLUE batches), and
"grouped" is `keras_adapters.text_dataset` (batches of similar length, then
trimmed), the helper for user code. Prints a table and writes JSON.

  python bench/dynamic_padding.py --data_dir=../shared/data/glue \
      --output=bench/results/dynamic_padding.json
  python bench/dynamic_padding.py --task=sst2 --output=bench/results/dynamic_padding_sst2.json
"""

import json
import os
import time

import keras
import keras_hub
import numpy as np
from absl import app, flags

from keras_adapters import AdapterConfig, add_adapters, freeze_for_adapter_tuning, from_pretrained
from keras_adapters.data.pipeline import make_dataset, make_preprocessor, text_dataset
from keras_adapters.tasks.glue import data as glue
from keras_adapters.utils.atomic import write_json

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "../shared/data/glue", "GLUE folder.")
flags.DEFINE_string("output", "bench/results/dynamic_padding.json", "JSON destination.")
flags.DEFINE_string("task", "mrpc", "GLUE task whose training data is batched.")
flags.DEFINE_integer("steps", 20, "Timed steps per arm and round.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds.")
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_integer("max_seq_length", 128, "Fixed padding length.")


def build_model():
    backbone, tokenizer = from_pretrained()
    model = keras_hub.models.BertTextClassifier(
        add_adapters(backbone, AdapterConfig(adapter_size=64)), num_classes=2, preprocessor=None)
    freeze_for_adapter_tuning(model)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, tokenizer


def batches(preprocessor, examples, static_shapes):
    dataset = make_dataset(preprocessor, examples.text_a, examples.text_b, examples.labels,
                           FLAGS.batch_size, static_shapes=static_shapes)
    return list(dataset.take(FLAGS.steps))


def time_steps(model, data):
    start = time.perf_counter()
    for features, labels in data:
        model.train_on_batch(features, labels)
    return (time.perf_counter() - start) / len(data)


def main(argv):
    del argv
    model, tokenizer = build_model()
    preprocessor = make_preprocessor(tokenizer, FLAGS.max_seq_length)
    examples = glue.load_examples(FLAGS.task, "train", FLAGS.data_dir)
    grouped = text_dataset(preprocessor, examples.text_a, examples.text_b, examples.labels,
                           batch_size=FLAGS.batch_size, training=True, seed=0)
    arms = {"trimmed": batches(preprocessor, examples, False),
            "fixed": batches(preprocessor, examples, True),
            "grouped": list(grouped.take(FLAGS.steps))}
    for data in arms.values():  # Trace every shape before timing.
        time_steps(model, data)
    seconds = {arm: [] for arm in arms}
    for _ in range(FLAGS.rounds):
        for arm, data in arms.items():
            seconds[arm].append(time_steps(model, data))
    result = {
        "task": FLAGS.task, "model": "all-MiniLM-L6-v2 + adapters(64)",
        "batch_size": FLAGS.batch_size, "steps_per_round": FLAGS.steps, "rounds": FLAGS.rounds,
        "mean_length_trimmed": float(np.mean([b[0]["token_ids"].shape[1]
                                              for b in arms["trimmed"]])),
        "mean_length_grouped": float(np.mean([b[0]["token_ids"].shape[1]
                                              for b in arms["grouped"]])),
        "fixed_length": FLAGS.max_seq_length,
        "seconds_per_step": {arm: float(np.median(v)) for arm, v in seconds.items()},
        "cpu_count": os.cpu_count(),
    }
    for arm in ("trimmed", "grouped"):
        result[f"speedup_{arm}_vs_fixed"] = (
            result["seconds_per_step"]["fixed"] / result["seconds_per_step"][arm])
    print(f"{'arm':<10}{'s/step':>10}")
    for arm, value in result["seconds_per_step"].items():
        print(f"{arm:<10}{value:>10.3f}")
    for arm in ("trimmed", "grouped"):
        print(f"{arm} is {result[f'speedup_{arm}_vs_fixed']:.2f}x faster than fixed (mean length "
              f"{result[f'mean_length_{arm}']:.0f} vs {FLAGS.max_seq_length})")
    write_json(FLAGS.output, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    app.run(main)
