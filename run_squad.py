r"""Train adapters (or the whole model) for SQuAD v1.1 extractive QA.

Follows google-research/bert `run_squad.py`: windows of `--max_seq_length`
tokens with `--doc_stride`, a span head, n-best decoding, and the official
SQuAD v1.1 exact match and F1, scored after every epoch. Writes to
`--model_dir`: checkpoints, the best epoch by dev F1 (`best/`), TensorBoard
logs, `predictions.json`, `nbest_predictions.json`,
`eval_results.json`, for adapters `adapter_weights.safetensors`, and a
SavedModel (`--export_dir`, default `<model_dir>/saved_model`) whose
`serving_default` answers raw (`question`, `context`) strings.

  python run_squad.py --train_file=../shared/data/squad/train-v1.1-first44articles.json \
      --predict_file=../shared/data/squad/dev-v1.1.json --model_dir=runs/squad_adapters
"""

import glob
import json
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from keras_adapters.serving import question_answering as squad_serving
from keras_adapters.tasks.squad import data as squad
from keras_adapters.tasks.squad import postprocessing as squad_postprocessing
from keras_adapters.tasks.squad.span_head import (
    OUTPUTS,
    SPAN_LOSS_WEIGHTS,
    build_span_model,
    span_loss,
)
from keras_adapters.training import cli, distribute
from keras_adapters.training.callbacks import KeepBest, StepTimes
from keras_adapters.utils.atomic import write_json

FLAGS = flags.FLAGS
cli.define_flags()
FLAGS.set_default("max_seq_length", 384)
FLAGS.set_default("num_epochs", 2)
flags.DEFINE_string("train_file", None, "SQuAD v1.1 JSON to train on.")
flags.DEFINE_string("predict_file", None, "SQuAD v1.1 JSON to predict and score.")
flags.DEFINE_enum("mode", "train_and_predict", ["train_and_predict", "predict"],
                  "predict loads the latest checkpoint in --model_dir.")
flags.DEFINE_integer("doc_stride", 128, "Tokens between the starts of context windows.")
flags.DEFINE_integer("max_query_length", 64, "Question tokens kept.")
flags.DEFINE_integer("n_best_size", 20, "Candidates per window and answers per question.")
flags.DEFINE_integer("max_answer_length", 30, "Longest answer, in tokens.")
flags.DEFINE_integer("max_train_examples", None, "Use only the first N training questions.")
flags.DEFINE_integer("max_predict_examples", None, "Use only the first N questions to predict.")


def read_features(path, training, limit, tokenizer):
    """The first `limit` (None: all) questions of a SQuAD file and their windows.

    Raises `squad.SquadFormatError` naming the file, JSON location and field.
    """
    examples = squad.read_squad(path, training=training)[:limit]
    features = squad.convert_to_features(
        examples, tokenizer, max_seq_length=FLAGS.max_seq_length, doc_stride=FLAGS.doc_stride,
        max_query_length=FLAGS.max_query_length, training=training)
    logging.info("%s: %d questions, %d windows", path, len(examples), len(features))
    return examples, features


def training_dataset(features, static_shapes, epoch):
    """Epoch `epoch`'s batches, in a fixed order, labels keyed like the model's outputs."""
    dataset = squad.features_to_dataset(features, FLAGS.batch_size, training=True,
                                        seed=FLAGS.seed, static_shapes=static_shapes,
                                        epoch=epoch)
    return dataset.map(lambda x, y: (x, {"start_logits": y["start_positions"],
                                         "end_logits": y["end_positions"]}))


def predict_logits(model, features):
    """Start and end logits, float32 `(num_features, max_seq_length)` each.

    Windows run in batches sorted by length, each cut to its longest window
    (under `--strategy=tpu`: to a bucket length, the last batch filled with
    empty rows); the logits are padded back with -inf, which post-processing
    never picks, and returned in feature order.
    """
    order = np.argsort([f.padding_mask.sum() for f in features], kind="stable")
    logits = {name: [] for name in OUTPUTS}
    for x in squad.features_to_dataset([features[i] for i in order], FLAGS.batch_size,
                                       static_shapes=distribute.needs_static_shapes(FLAGS.strategy)):
        # Not `predict_on_batch`: under a multi-replica strategy it gives every replica
        # the whole batch and returns their outputs one after the other.
        outputs = model.predict(tf.data.Dataset.from_tensors(x), verbose=0)
        for name in OUTPUTS:
            value = np.asarray(outputs[name])
            pad = FLAGS.max_seq_length - value.shape[1]
            logits[name].append(np.pad(value, ((0, 0), (0, pad)), constant_values=-np.inf))
    unsorted = np.empty_like(order)
    unsorted[order] = np.arange(len(order))
    return tuple(np.concatenate(logits[name])[: len(order)][unsorted] for name in OUTPUTS)


def scored_subset(path, qas_ids):
    """The SQuAD JSON at `path` restricted to `qas_ids`, for scoring a slice."""
    with open(path, encoding="utf-8") as f:
        dataset = json.load(f)
    wanted = set(qas_ids)
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            paragraph["qas"] = [qa for qa in paragraph["qas"] if qa["id"] in wanted]
    return dataset


class SquadEvaluation(keras.callbacks.Callback):
    """Predicts and scores `--predict_file` after every epoch.

    The official exact match and F1 (percent) go into the epoch's logs as
    `dev_exact_match` and `dev_f1` (for `KeepBest` and TensorBoard); the
    latest predictions stay in `self.predictions`, `self.nbest` and
    `self.scores`.
    """

    def __init__(self, examples, features):
        super().__init__()
        self.examples, self.features = examples, features
        # The reference answers of these questions, read once for every epoch's scoring.
        self.reference = scored_subset(FLAGS.predict_file, [e.qas_id for e in examples])
        self.predictions = self.nbest = self.scores = None

    def evaluate(self):
        """Predict and score now; returns `{"exact_match", "f1"}`."""
        start_logits, end_logits = predict_logits(self.model, self.features)
        self.predictions, self.nbest = squad_postprocessing.predict_answers(
            self.examples, self.features, start_logits, end_logits,
            n_best_size=FLAGS.n_best_size, max_answer_length=FLAGS.max_answer_length)
        self.scores = squad_postprocessing.score_predictions(self.reference, self.predictions)
        return self.scores

    def on_epoch_end(self, epoch, logs=None):
        scores = self.evaluate()
        logging.info("epoch %d dev: %s", epoch + 1, scores)
        if logs is not None:
            logs.update({f"dev_{name}": value for name, value in scores.items()})


def train(model, backbone, tokenizer, strategy, evaluation, best):
    """Freeze (adapters), compile and fit on `--train_file`; returns the
    seconds it took and `StepTimes.summary()`.

    `evaluation` scores the dev set after every epoch, and `best` (a
    `KeepBest` on dev F1) keeps the best epoch.
    """
    static_shapes = distribute.needs_static_shapes(FLAGS.strategy)
    _, features = read_features(FLAGS.train_file, True, FLAGS.max_train_examples, tokenizer)
    with strategy.scope():
        optimizer, steps_per_epoch = cli.prepare_for_training(model, len(features), static_shapes)
        model.compile(optimizer=optimizer, loss=span_loss(), loss_weights=SPAN_LOSS_WEIGHTS,
                      jit_compile=FLAGS.jit_compile,
                      steps_per_execution=FLAGS.steps_per_execution)
    step_times = StepTimes()
    start = time.time()
    cli.fit(model, lambda epoch: training_dataset(features, static_shapes, epoch),
            steps_per_epoch, backbone,
            callbacks=[step_times, evaluation], chief_callbacks=[best],
            run_config={"train_file": FLAGS.train_file, "doc_stride": FLAGS.doc_stride,
                        "max_query_length": FLAGS.max_query_length,
                        "max_train_examples": FLAGS.max_train_examples})
    return time.time() - start, step_times.summary()


def load_latest_checkpoint(model):
    """Load the newest per-epoch weights of `--model_dir` (for `--mode=predict`).

    Raises:
        FileNotFoundError: if `--model_dir` has no checkpoint.
    """
    pattern = cli.CHECKPOINT_PATTERN.replace("{epoch:02d}", "*")
    checkpoints = sorted(glob.glob(cli.output_path("checkpoints", pattern)))
    if not checkpoints:
        raise FileNotFoundError(
            f"--mode=predict found no checkpoints/epoch_*.weights.h5 in {FLAGS.model_dir}.")
    logging.info("Loading %s", checkpoints[-1])
    model.load_weights(checkpoints[-1])


def main(argv):
    del argv
    cli.validate_flags()
    if FLAGS.mode == "train_and_predict" and not FLAGS.train_file:
        raise flags.ValidationError("--mode=train_and_predict needs --train_file.")
    if not FLAGS.predict_file:
        raise flags.ValidationError("--predict_file is required.")
    strategy = cli.start_run()
    with strategy.scope():
        backbone, tokenizer = cli.build_backbone("squad")
        model = build_span_model(backbone)
    examples, features = read_features(FLAGS.predict_file, False, FLAGS.max_predict_examples,
                                       tokenizer)
    evaluation = SquadEvaluation(examples, features)
    evaluation.set_model(model)
    best = KeepBest(cli.output_path("best"), monitor="dev_f1")
    results = {"tuning": FLAGS.tuning, "init_from": FLAGS.init_from,
               "questions": len(examples), "windows": len(features)}
    if FLAGS.mode == "train_and_predict":
        seconds, results["train_step_seconds"] = train(
            model, backbone, tokenizer, strategy, evaluation, best)
        results["train_seconds"] = round(seconds, 1)
        results["parameters"] = cli.parameter_counts(model)
    else:
        load_latest_checkpoint(model)
    if evaluation.scores is None:  # Predict mode, or resumed after the last epoch's backup.
        evaluation.evaluate()
    if not distribute.is_chief(strategy):
        return
    squad_postprocessing.write_predictions(evaluation.predictions, evaluation.nbest,
                                           FLAGS.model_dir)
    results.update(evaluation.scores)
    if FLAGS.mode == "train_and_predict":
        results["best"] = best.best()
        results["exported"] = cli.load_weights_to_export(model, best)
        cli.save_tuned_weights(model, backbone)
    write_json(cli.output_path("eval_results.json"), results)
    squad_serving.export_question_answerer(
        model, tokenizer, FLAGS.export_dir or cli.output_path("saved_model"),
        max_seq_length=FLAGS.max_seq_length, doc_stride=FLAGS.doc_stride,
        max_query_length=FLAGS.max_query_length, n_best_size=FLAGS.n_best_size,
        max_answer_length=FLAGS.max_answer_length)
    logging.info("Results: %s", results)
    print({k: v for k, v in results.items() if k in ("exact_match", "f1", "questions")})


if __name__ == "__main__":
    app.run(main)
