r"""AdapterFusion and AdapterDrop's fusion pruning on real GLUE (Rücklé et al., 2021, §5).

On all-MiniLM-L6-v2 (6 layers, hidden 384) and the local GLUE data, in stages
that each skip what an earlier invocation finished (run_classifier.py runs
resume after a kill; a target's evaluation is written when it completes):

1. `adapters`: one `seq_bn` adapter per task in --tasks (the AdapterFusion
   paper's choice; size 64, the pretrained layer norms), each a
   run_classifier.py run: 3 epochs at 1e-3 (SST-2: 1 epoch of its 67k pairs).
2. `fusions`: per target in --targets, a `"dynamic"` AdapterFusion over all
   those adapters with a new head (run_classifier.py --tuning=fusion,
   3 epochs at --fusion_learning_rate).
3. `evaluate`, per target, on its dev set, in one process:
   - the single-task adapter (its run's exported epoch), and the full fusion;
   - the fusion with its lowest 1, 2, 3 layers dropped at inference
     (`drop_first_n`; the adapters under them are not run either);
   - the fusion pruned to --keep adapters by mean attention on the dev set
     (`prune_adapter_fusion`), without and then with --retrain_epochs of
     fusion training on the train set;
   - inference seconds per batch of 32 dev pairs padded to 128 tokens, every
     arm a `tf.function` traced once, arms alternating within each of
     --repeats rounds; medians and the speed-ups over the full fusion.
   It writes each target's JSON, and a heat map of the fusion's mean
   attention per layer and adapter (the AdapterFusion paper's Fig. 5).

  python bench/fusion_glue.py --output_dir=/tmp/fusion_glue \
      --data_dir=../shared/data/glue --results=bench/results/fusion_glue.json \
      --plot=bench/results/fusion_attention.png
"""

import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging
from matplotlib.figure import Figure

from keras_adapters import (
    add_adapters,
    fusion_attention,
    load_adapter,
    load_adapter_fusion,
    load_adapter_weights,
    prune_adapter_fusion,
)
from keras_adapters.data.pipeline import make_dataset, make_preprocessor
from keras_adapters.models.classifiers import text_classifier
from keras_adapters.models.freezing import freeze_for_adapter_tuning
from keras_adapters.saving.checkpoints import from_pretrained
from keras_adapters.tasks.glue import data as glue
from keras_adapters.tasks.glue import metrics
from keras_adapters.training.optimization import create_optimizer
from keras_adapters.utils.atomic import atomic_path, write_json

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Where the runs go (outside the repository).")
flags.DEFINE_string("data_dir", "../shared/data/glue", "The GLUE folder.")
flags.DEFINE_list("stages", ["adapters", "fusions", "evaluate"], "Stages to run, in order.")
flags.DEFINE_list("tasks", ["cola", "sst2", "mrpc", "stsb", "rte"], "Tasks with an adapter.")
flags.DEFINE_list("targets", ["rte", "mrpc", "stsb"], "Fusion target tasks.")
flags.DEFINE_float("fusion_learning_rate", 2e-4, "Peak learning rate of fusion training.")
flags.DEFINE_integer("keep", 2, "Adapters a pruned fusion keeps.")
flags.DEFINE_integer("retrain_epochs", 1, "Fusion training epochs after pruning.")
flags.DEFINE_integer("retrain_examples", None, "Retrain on the first N training examples only.")
flags.DEFINE_integer("repeats", 5, "Timing rounds.")
flags.DEFINE_string("results", "bench/results/fusion_glue.json", "Summary JSON.")
flags.DEFINE_string("plot", "bench/results/fusion_attention.png", "Attention heat maps (PNG).")
flags.mark_flag_as_required("output_dir")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADAPTER_FLAGS = ["--adapter_placement=seq_bn", "--adapter_size=64", "--notrain_layer_norms",
                 "--max_seq_length=128", "--batch_size=32"]
EPOCHS = {"sst2": 1}  # Else 3.
TIMING_BATCH, TIMING_LENGTH = 32, 128


def _run_dir(kind, task):
    return os.path.join(FLAGS.output_dir, kind, task)


def _run_classifier(kind, task, *extra):
    """run_classifier.py into `<output_dir>/<kind>/<task>`, unless it finished before."""
    model_dir = _run_dir(kind, task)
    if os.path.exists(os.path.join(model_dir, "eval_results.json")):
        return
    command = [sys.executable, os.path.join(REPO, "run_classifier.py"), f"--task={task}",
               f"--data_dir={FLAGS.data_dir}", f"--model_dir={model_dir}", *ADAPTER_FLAGS, *extra]
    logging.info("Running %s", " ".join(command))
    subprocess.run(command, check=True)


def train_adapters():
    for task in FLAGS.tasks:
        _run_classifier("adapters", task, f"--num_epochs={EPOCHS.get(task, 3)}")


def train_fusions():
    folders = ",".join(os.path.join(_run_dir("adapters", t), "adapter") for t in FLAGS.tasks)
    for target in FLAGS.targets:
        _run_classifier("fusions", target, "--tuning=fusion", f"--fusion_adapters={folders}",
                        "--num_epochs=3", f"--learning_rate={FLAGS.fusion_learning_rate}")


def _score(task, model, dataset, labels):
    """The dev metrics of `model` with the backbone's active adapter or fusion now."""
    model.predict_function = None  # Keras keeps the one traced with the adapter active then.
    outputs = model.predict(dataset, verbose=0)[: len(labels)]
    scores = metrics.compute_metrics(task.name, labels,
                                     metrics.predictions_from_outputs(task, outputs))
    return {name: float(value) for name, value in scores.items()}


def _models(task):
    """`(backbone, single-task classifier, fused classifier, fusion name, tokenizer)`."""
    backbone, tokenizer = from_pretrained()
    backbone = add_adapters(backbone, name=None)
    for adapter in FLAGS.tasks:
        load_adapter(backbone, os.path.join(_run_dir("adapters", adapter), "adapter"))
    fusion = load_adapter_fusion(backbone, os.path.join(_run_dir("fusions", task.name), "fusion"))
    single = text_classifier(backbone, task.num_classes)
    load_adapter_weights(single, os.path.join(_run_dir("adapters", task.name),
                                              "adapter_weights.safetensors"))
    fused = text_classifier(backbone, task.num_classes)
    load_adapter_weights(fused, os.path.join(_run_dir("fusions", task.name),
                                             "adapter_weights.safetensors"))
    return backbone, single, fused, fusion, tokenizer


def _inference(model):
    return tf.function(lambda features: model(features, training=False))


def _timed(arms, features):
    """Median seconds per batch of each arm `(model, active, drop_first_n)`, alternating."""
    functions = {}
    for name, (model, backbone, active, n) in arms.items():
        backbone.set_active_adapters(active)  # Read when traced.
        function = _inference(model)
        functions[name] = function.get_concrete_function(
            {key: tf.TensorSpec(value.shape, value.dtype) for key, value in features.items()})
        backbone.set_drop_first_n(n)
        functions[name](features)  # Warm up.
    times = {name: [] for name in arms}
    for _ in range(FLAGS.repeats):
        for name, (_, backbone, _, n) in arms.items():
            backbone.set_drop_first_n(n)
            start = time.perf_counter()
            np.asarray(functions[name](features))
            times[name].append(time.perf_counter() - start)
    backbone.set_drop_first_n(0)
    return {name: float(np.median(values)) for name, values in times.items()}


def _retrain(model, backbone, fusion, task, preprocessor):
    """`--retrain_epochs` of fusion training of `fusion` (and the head) on the train set."""
    train = glue.load_examples(task, "train", FLAGS.data_dir)
    train = train.head(FLAGS.retrain_examples) if FLAGS.retrain_examples else train
    dataset = make_dataset(preprocessor, train.text_a, train.text_b, train.labels, 32,
                           training=True, seed=0)
    backbone.set_active_adapters(fusion)
    freeze_for_adapter_tuning(model, fusion)
    steps = int(np.ceil(len(train) / 32)) * FLAGS.retrain_epochs
    loss = (keras.losses.MeanSquaredError() if task.is_regression
            else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.compile(optimizer=create_optimizer(FLAGS.fusion_learning_rate, total_steps=steps,
                                             warmup_proportion=0.1, weight_decay=0.01),
                  loss=loss)
    model.fit(dataset, epochs=FLAGS.retrain_epochs, verbose=2)


def evaluate(target):
    """The dev scores and inference times of every arm for one target task."""
    task = glue.get_task(target)
    backbone, single, fused, fusion, tokenizer = _models(task)
    preprocessor = make_preprocessor(tokenizer, 128)
    dev = glue.load_examples(task, "dev", FLAGS.data_dir)
    dev_batches = make_dataset(preprocessor, dev.text_a, dev.text_b, dev.labels, 32)
    scores = {}
    backbone.set_active_adapters(task.name)
    scores["single_adapter"] = _score(task, single, dev_batches, dev.labels)
    backbone.set_active_adapters(fusion)
    for n in range(4):
        backbone.set_drop_first_n(n)
        scores["fusion" if n == 0 else f"fusion_drop_{n}"] = _score(
            task, fused, dev_batches, dev.labels)
    backbone.set_drop_first_n(0)
    attention = fusion_attention(fused, fusion, dev_batches)
    pruned = prune_adapter_fusion(fused, fusion, FLAGS.keep, attention=attention)
    backbone.set_active_adapters(pruned)
    scores[f"pruned_{FLAGS.keep}"] = _score(task, fused, dev_batches, dev.labels)
    timing = make_dataset(preprocessor, dev.text_a[:TIMING_BATCH], dev.text_b[:TIMING_BATCH]
                          if dev.text_b is not None else None, dev.labels[:TIMING_BATCH],
                          TIMING_BATCH, static_shapes=True)
    features = next(iter(timing))[0]
    features = {k: tf.pad(v, [[0, 0], [0, TIMING_LENGTH - v.shape[1]]]) for k, v in
                features.items()} if features["token_ids"].shape[1] < TIMING_LENGTH else features
    arms = {"single_adapter": (single, backbone, task.name, 0), "fusion": (fused, backbone, fusion, 0),
            **{f"fusion_drop_{n}": (fused, backbone, fusion, n) for n in (1, 2, 3)},
            f"pruned_{FLAGS.keep}": (fused, backbone, pruned, 0)}
    seconds = _timed(arms, features)
    _retrain(fused, backbone, pruned, task, preprocessor)
    backbone.set_active_adapters(pruned)
    scores[f"pruned_{FLAGS.keep}_retrained"] = _score(task, fused, dev_batches, dev.labels)
    primary = metrics.primary_metric(task)
    return {
        "task": task.name, "metric": primary, "fused_adapters": attention.adapters,
        "kept_adapters": backbone.fused_adapters(pruned), "scores": scores,
        "seconds_per_batch": seconds,
        "speedup_over_fusion": {name: seconds["fusion"] / s for name, s in seconds.items()},
        "attention_per_layer": attention.per_layer.tolist(), "attention_mean": attention.mean.tolist(),
    }


def plot(results):
    figure = Figure(figsize=(4.2 * len(results) + 1.0, 3.6))
    for index, result in enumerate(results):
        axes = figure.add_subplot(1, len(results), index + 1)
        weights = np.array(result["attention_per_layer"])
        image = axes.imshow(weights, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        axes.set_xticks(range(len(result["fused_adapters"])), result["fused_adapters"])
        axes.set_yticks(range(len(weights)),
                        [f"layer {i}" for i in range(len(weights))] if index == 0 else [])
        axes.set_title(f"fusion for {result['task']}: mean attention")
        for (row, column), value in np.ndenumerate(weights):
            axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if value < 0.5 else "black")
    figure.colorbar(image, ax=figure.axes)
    with atomic_path(FLAGS.plot) as temporary:
        figure.savefig(temporary, format="png", dpi=120)


def main(argv):
    del argv
    if "adapters" in FLAGS.stages:
        train_adapters()
    if "fusions" in FLAGS.stages:
        train_fusions()
    if "evaluate" not in FLAGS.stages:
        return
    results = []
    for target in FLAGS.targets:
        path = os.path.join(FLAGS.output_dir, "evaluation", f"{target}.json")
        if not os.path.exists(path):
            keras.utils.set_random_seed(0)
            write_json(path, evaluate(target))
        with open(path) as f:
            results.append(json.load(f))
    write_json(FLAGS.results, {"targets": results, "adapter_flags": ADAPTER_FLAGS,
                               "fusion_learning_rate": FLAGS.fusion_learning_rate,
                               "keep": FLAGS.keep, "retrain_epochs": FLAGS.retrain_epochs})
    plot(results)
    for result in results:
        metric = result["metric"]
        print(f"\n{result['task']} ({metric}); kept {result['kept_adapters']}")
        for arm, scores in result["scores"].items():
            seconds = result["seconds_per_batch"].get(arm.removesuffix("_retrained"))
            speed = f"{seconds:.3f} s/batch" if seconds else ""
            print(f"  {arm:24s} {scores[metric]:.4f}  {speed}")


if __name__ == "__main__":
    app.run(main)
