r"""Fine-tune bottleneck adapters (or the whole model) on a GLUE task.

Trains under a `tf.distribute` strategy, scores the dev set with the task's
official GLUE metric after every epoch, and writes to `--model_dir`:
checkpoints, the best epoch's weights (`best/`), TensorBoard logs,
`eval_results.json`, the adapter-only weights (`adapter_weights.safetensors`;
also the adapter as a folder, `adapter/`, that `load_adapter` and
`--fusion_adapters` read; `--tuning=lora`: keras-hub's `lora_weights.lora.h5`
instead), and a SavedModel whose `serving_default` takes raw text.
`--tuning=fusion` trains an AdapterFusion over `--fusion_adapters` instead
(the folder is then `fusion/`, and `fusion_attention.json` holds each fused
adapter's mean attention weight on the dev set, per layer). A killed run
resumes where its last backup left off when the same command is run again.

Example (the default: MRPC, all-MiniLM-L6-v2, adapters of size 64):

  python run_classifier.py --data_dir=../shared/data/glue --model_dir=/tmp/mrpc

An AdapterFusion for RTE over adapters trained by such runs:

  python run_classifier.py --task=rte --tuning=fusion \
      --fusion_adapters=/tmp/cola/adapter,/tmp/mrpc/adapter,/tmp/rte/adapter \
      --data_dir=../shared/data/glue --model_dir=/tmp/rte_fusion
"""

import time

import keras
import numpy as np
from absl import app, flags, logging

from keras_adapters.data.pipeline import (
    batch_examples,
    make_dataset,
    make_preprocessor,
    tokenize_examples,
)
from keras_adapters.models.classifiers import text_classifier
from keras_adapters.models.fusion_pruning import fusion_attention
from keras_adapters.saving.adapter_files import save_adapter, save_adapter_fusion
from keras_adapters.serving.export import export_text_classifier
from keras_adapters.tasks.glue import data as glue
from keras_adapters.tasks.glue import metrics
from keras_adapters.training import cli, distribute
from keras_adapters.training.callbacks import KeepBest, StepTimes
from keras_adapters.utils.atomic import write_json

FLAGS = flags.FLAGS
cli.define_flags()
flags.DEFINE_string("task", "mrpc", f"GLUE task: one of {sorted(glue.TASKS)}.")
flags.DEFINE_string("data_dir", None,
                    "Folder of GLUE task folders (CoLA, MRPC, ...) for --data_source=tsv, "
                    "or the TFDS data_dir for --data_source=tfds.")
flags.DEFINE_enum("data_source", "tsv", ["tsv", "tfds"],
                  "Read the original GLUE TSV files, or tensorflow-datasets.")
flags.DEFINE_integer("max_train_examples", None, "Use only the first N training examples.")
flags.DEFINE_float("classifier_dropout", None,
                   "Dropout before the logits. Default: the architecture's classifier default "
                   "(BERT 0.1, RoBERTa 0.0, DistilBERT 0.2, ELECTRA 0.1).")
flags.DEFINE_integer("max_eval_examples", None, "Use only the first N examples of each dev split.")
flags.DEFINE_list("eval_drop_first_n", [],
                  "After training, also score the dev sets of the exported weights with the "
                  "adapters of the lowest n layers dropped, for each n listed (e.g. 0,1,2,3: "
                  "AdapterDrop's inference trade-off, Rücklé et al., 2021, Fig. 2); into "
                  "eval_results.json's \"adapter_drop\". --tuning=adapters or fusion.")


class GlueEvaluation(keras.callbacks.Callback):
    """Scores each dev split with the task's official metric after every epoch.

    The scores go into the epoch's logs as `<split>_<metric>` (so TensorBoard
    and the History record them) and into `self.results`.
    """

    def __init__(self, task, dev_sets):
        super().__init__()
        self.task = task
        self.dev_sets = dev_sets
        self.results = {}

    def evaluate(self):
        """Score every dev split now; returns and keeps `{split: {metric: value}}`."""
        for split, (dataset, labels) in self.dev_sets.items():
            # Static-shape batches end with empty rows (pipeline.fill_batch).
            outputs = self.model.predict(dataset, verbose=0)[: len(labels)]
            predictions = metrics.predictions_from_outputs(self.task, outputs)
            self.results[split] = metrics.compute_metrics(self.task.name, labels, predictions)
        return self.results

    def on_epoch_end(self, epoch, logs=None):
        for split, scores in self.evaluate().items():
            logging.info("epoch %d %s: %s", epoch + 1, split, scores)
            if logs is not None:
                logs.update({f"{split}_{name}": value for name, value in scores.items()})


def read_split(task, split, limit):
    """The first `limit` (None: all) examples of a split, from `--data_source`."""
    examples = glue.load_examples(task, split, FLAGS.data_dir, source=FLAGS.data_source)
    return examples.head(limit) if limit else examples


def dev_dataset(preprocessor, examples, static_shapes):
    """Batched `(features, labels)` of dev `examples`, in order."""
    return make_dataset(preprocessor, examples.text_a, examples.text_b, examples.labels,
                        FLAGS.batch_size, static_shapes=static_shapes)


def train_epochs(preprocessor, examples, static_shapes):
    """A function from an epoch index to its training batches, in a fixed order."""
    tokenized = tokenize_examples(preprocessor, examples.text_a, examples.text_b,
                                  examples.labels)
    return lambda epoch: batch_examples(tokenized, FLAGS.batch_size, training=True,
                                        seed=FLAGS.seed, epoch=epoch,
                                        static_shapes=static_shapes)


def build_classifier(task, steps_hint):
    """The classifier, its backbone, the tokenizer and steps per epoch, compiled.

    Call inside the strategy scope.
    """
    backbone, tokenizer = cli.build_backbone(task.name)
    model = text_classifier(backbone, task.num_classes, dropout=FLAGS.classifier_dropout)
    optimizer, steps_per_epoch = cli.prepare_for_training(model, *steps_hint)
    if task.is_regression:
        loss, train_metrics = keras.losses.MeanSquaredError(), []
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        train_metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    model.compile(optimizer=optimizer, loss=loss, metrics=train_metrics,
                  jit_compile=FLAGS.jit_compile, steps_per_execution=FLAGS.steps_per_execution)
    return model, backbone, tokenizer, steps_per_epoch


def score_dropped(evaluation, backbone):
    """`{n: {split: metrics}}` for each n in `--eval_drop_first_n`: the dev
    scores with no adapters in the lowest n layers. Leaves n as it was."""
    trained_depth = backbone.drop_first_n
    scores = {}
    for n in eval_depths():
        backbone.set_drop_first_n(n)  # Read by the compiled predict step when it runs.
        scores[str(n)] = dict(evaluation.evaluate())
    backbone.set_drop_first_n(trained_depth)
    return scores


def eval_depths():
    """`--eval_drop_first_n` as ints.

    Raises:
        flags.ValidationError: for an entry that is not an integer >= 0, or
            without --tuning=adapters or fusion.
    """
    if FLAGS.eval_drop_first_n and FLAGS.tuning not in ("adapters", "fusion"):
        raise flags.ValidationError("--eval_drop_first_n needs --tuning=adapters or fusion.")
    depths = []
    for entry in FLAGS.eval_drop_first_n:
        if not entry.isdigit():
            raise flags.ValidationError(
                f"--eval_drop_first_n takes integers >= 0, separated by commas; got {entry!r}.")
        depths.append(int(entry))
    return depths


def train_and_evaluate(strategy):
    """The whole run; returns the final dev metrics per split."""
    task = glue.get_task(FLAGS.task)
    static_shapes = distribute.needs_static_shapes(FLAGS.strategy)
    train = read_split(task, "train", FLAGS.max_train_examples)
    dev = {split: read_split(task, split, FLAGS.max_eval_examples) for split in task.dev_splits}
    with strategy.scope():
        model, backbone, tokenizer, steps_per_epoch = build_classifier(
            task, (len(train), static_shapes))
    too_deep = [n for n in eval_depths() if n > backbone.num_layers]
    if too_deep:
        raise flags.ValidationError(f"--eval_drop_first_n: {too_deep} exceed(s) this "
                                    f"backbone's {backbone.num_layers} layers.")
    preprocessor = make_preprocessor(tokenizer, FLAGS.max_seq_length)
    evaluation = GlueEvaluation(task, {
        split: (dev_dataset(preprocessor, examples, static_shapes), examples.labels)
        for split, examples in dev.items()
    })
    best = KeepBest(cli.output_path("best"),
                    monitor=f"{task.dev_splits[0]}_{metrics.primary_metric(task)}")
    step_times = StepTimes()
    start = time.time()
    cli.fit(model, train_epochs(preprocessor, train, static_shapes), steps_per_epoch,
            backbone, callbacks=[step_times, evaluation], chief_callbacks=[best],
            run_config={"task": task.name, "data_source": FLAGS.data_source,
                        "max_train_examples": FLAGS.max_train_examples,
                        "classifier_dropout": FLAGS.classifier_dropout})
    train_seconds = time.time() - start
    if not evaluation.results:  # Resumed after the last epoch's backup: fit ran no step.
        evaluation.set_model(model)
        evaluation.evaluate()
    if not distribute.is_chief(strategy):
        return evaluation.results
    last_epoch = dict(evaluation.results)
    exported = cli.load_weights_to_export(model, best)
    write_json(cli.output_path("eval_results.json"), {
        "task": task.name,
        "tuning": FLAGS.tuning,
        "init_from": FLAGS.init_from,
        "train_examples": len(train),
        "train_seconds": round(train_seconds, 1),
        "train_step_seconds": step_times.summary(),
        "parameters": cli.parameter_counts(model),
        **last_epoch,  # "dev" (MNLI: "dev_matched", "dev_mismatched"): the last epoch.
        "best": best.best(),
        "exported": exported,
        **({"adapter_drop": score_dropped(evaluation, backbone)}
           if FLAGS.eval_drop_first_n else {}),
    })
    cli.save_tuned_weights(model, backbone)
    if FLAGS.tuning == "adapters":
        save_adapter(model, cli.output_path("adapter"), backbone.active_adapter)
    if FLAGS.tuning == "fusion":
        name = backbone.active_adapter
        save_adapter_fusion(model, cli.output_path("fusion"), name)
        dev_batches = evaluation.dev_sets[task.dev_splits[0]][0]
        attention = fusion_attention(model, name, dev_batches)
        write_json(cli.output_path("fusion_attention.json"), {
            "fusion": name, "adapters": attention.adapters, "mean": attention.mean.tolist(),
            "per_layer": [[None if np.isnan(v) else v for v in row]
                          for row in attention.per_layer.tolist()]})
    export_text_classifier(
        model, preprocessor, FLAGS.export_dir or cli.output_path("saved_model"),
        is_pair=task.is_pair, is_regression=task.is_regression)
    return evaluation.results


def main(argv):
    del argv
    cli.validate_flags()
    if FLAGS.classifier_dropout is not None and not 0 <= FLAGS.classifier_dropout < 1:
        raise flags.ValidationError(
            f"--classifier_dropout must be in [0, 1); got {FLAGS.classifier_dropout}.")
    glue.get_task(FLAGS.task)
    eval_depths()
    if FLAGS.data_source == "tsv" and not FLAGS.data_dir:
        raise flags.ValidationError("--data_source=tsv needs --data_dir.")
    results = train_and_evaluate(cli.start_run())
    logging.info("Dev results: %s", results)
    print({split: {k: round(v, 4) for k, v in scores.items()}
           for split, scores in results.items()})


if __name__ == "__main__":
    app.run(main)
