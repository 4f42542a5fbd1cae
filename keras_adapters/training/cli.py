"""Flags and model building shared by `run_classifier.py` and `run_squad.py`."""

import math
import os

import keras
import tensorflow as tf
from absl import flags, logging

from keras_adapters.configuration.adapter_config import PLACEMENT_ALIASES, PLACEMENTS, AdapterConfig
from keras_adapters.models.adapter_backbone import add_adapters
from keras_adapters.models.freezing import freeze_for_adapter_tuning, weight_count
from keras_adapters.saving.adapter_files import (
    backbone_identity,
    load_adapter,
    save_adapter_weights,
)
from keras_adapters.saving.checkpoints import DEFAULT_CHECKPOINT, from_pretrained
from keras_adapters.training import distribute
from keras_adapters.training.callbacks import EpochWeights, StopOnNaN
from keras_adapters.training.optimization import create_optimizer
from keras_adapters.training.resume import Backup, TrainingState, fit_resumable
from keras_adapters.utils.atomic import atomic_path

FLAGS = flags.FLAGS
# AdapterFusion: Pfeiffer et al. (2021, §4.2) train the fusion at 5e-5. LoRA: Hu et al.
# (2022, Table 9) train RoBERTa-base's at 4e-4 to 5e-4.
DEFAULT_LEARNING_RATES = {"adapters": 1e-3, "full": 5e-5, "fusion": 5e-5, "lora": 5e-4}
# Robust AdapterDrop trains layer k's adapters only in the steps that keep them, (k + 1) of
# every `layers` steps on average, and learns more slowly than the adapters: it trains twice
# the epochs, at half the adapters' rate. Measured on MiniLM, the robust model at n = 3 as a
# share of the standard adapters' n = 0 score (README, "The papers' claims on real GLUE"):
# 3 epochs at 1e-3 kept 74% on STS-B and 34% on CoLA. At 8 epochs, 1e-3 kept 92% on STS-B
# and 5e-4 88%. On some seeds a run never leaves the majority class, at either rate: CoLA
# at 1e-3 on seed 42 (MCC 0) but not on seed 43, MRPC at 5e-4 on seed 42 but not on 43.
# Neither rate is ahead on that evidence; the GLUE suite runs 3 seeds per task at this one.
ROBUST_EPOCHS_FACTOR = 2
ROBUST_LEARNING_RATE = 5e-4
LORA_WEIGHTS = "lora_weights.lora.h5"  # keras-hub's save_lora_weights wants this suffix.
CHECKPOINT_PATTERN = "epoch_{epoch:02d}.weights.h5"  # under <model_dir>/checkpoints
# Flags a resumed run must share with the run that wrote the backup.
RESUME_FLAGS = ("init_from", "dtype_policy", "tuning", "adapter_size", "reduction_factor",
                "adapter_placement", "train_layer_norms", "fusion_adapters", "fusion_config",
                "lora_rank", "drop_first_n", "robust_adapter_drop", "learning_rate", "num_epochs",
                "batch_size", "max_seq_length", "warmup_proportion", "weight_decay", "seed")


def define_flags():
    """Define the flags every training script shares."""
    flags.DEFINE_string(
        "init_from", DEFAULT_CHECKPOINT,
        "Pretrained encoder (BERT, RoBERTa, XLM-RoBERTa, DistilBERT or ELECTRA): a "
        "Hugging Face folder, a keras-hub preset folder, a keras-hub preset name such as "
        "roberta_base_en (downloads), or the bundled default.",
    )
    flags.DEFINE_enum("tuning", "adapters", ["adapters", "full", "fusion", "lora"],
                      "Train adapters (Houlsby et al.), fine-tune everything, train an "
                      "AdapterFusion over --fusion_adapters (Pfeiffer et al., 2021), or "
                      "keras-hub's own LoRA (backbone.enable_lora(--lora_rank): the query and "
                      "value projections; Hu et al., 2022).")
    flags.DEFINE_integer("lora_rank", 8, "--tuning=lora: the rank r of LoRA's update.")
    flags.DEFINE_integer("adapter_size", 64, "Adapter bottleneck size m.")
    flags.DEFINE_integer("reduction_factor", None,
                         "Hidden size / adapter size; replaces --adapter_size.")
    flags.DEFINE_enum("adapter_placement", "houlsby", [*PLACEMENTS, *PLACEMENT_ALIASES],
                      "houlsby: after attention and FFN; pfeiffer: after FFN; AdapterHub's "
                      "double_seq_bn (= houlsby), seq_bn (pfeiffer, reading LN(h + x)) and "
                      "par_bn (pfeiffer, in parallel with the FFN, scaled by 4).")
    flags.DEFINE_bool("train_layer_norms", True,
                      "Adapters train their own copies of the layer norms (Houlsby et al.); "
                      "--notrain_layer_norms keeps the pretrained ones, as AdapterHub does "
                      "(and as adapters to be fused, or shared with AdapterHub, should).")
    flags.DEFINE_list("fusion_adapters", None,
                      "--tuning=fusion: adapter folders to fuse (each written by a run's "
                      "<model_dir>/adapter, save_adapter, or AdapterHub's save_adapter).")
    flags.DEFINE_enum("fusion_config", "dynamic", ["dynamic", "static"],
                      "--tuning=fusion: AdapterHub's AdapterFusion configuration.")
    flags.DEFINE_integer("drop_first_n", 0,
                         "AdapterDrop: no adapters in the lowest n layers. With "
                         "--robust_adapter_drop, the n used at evaluation and export.")
    flags.DEFINE_bool("robust_adapter_drop", False,
                      "Robust AdapterDrop: each training step drops the adapters of the "
                      "lowest n layers, n drawn uniformly from 0..layers-1 (seeded by --seed).")
    flags.DEFINE_float("learning_rate", None,
                       "Peak learning rate. Default: 1e-3 (adapters; 5e-4 with "
                       "--robust_adapter_drop), 5e-5 (full, fusion), 5e-4 (lora).")
    flags.DEFINE_integer("num_epochs", 4,
                         "Training epochs. Unless given, --robust_adapter_drop trains "
                         f"{ROBUST_EPOCHS_FACTOR} times the default.")
    flags.DEFINE_integer("batch_size", 32, "Global batch size.")
    flags.DEFINE_integer("max_seq_length", 128, "Tokens per example, special ones included.")
    flags.DEFINE_float("warmup_proportion", 0.1, "Share of steps of linear warmup.")
    flags.DEFINE_float("weight_decay", 0.01, "AdamW decoupled weight decay.")
    flags.DEFINE_integer("seed", 42, "Seed for initialisation, dropout and shuffling.")
    flags.DEFINE_enum("strategy", "default", list(distribute.STRATEGIES),
                      "tf.distribute strategy.")
    flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu.")
    flags.DEFINE_list("devices", None,
                      "Devices for --strategy=mirrored/one_device, e.g. /gpu:0,/gpu:1.")
    flags.DEFINE_string("model_dir", None,
                        "Where checkpoints, logs and results go. Rerunning the same command "
                        "on it resumes training from its last backup.")
    flags.DEFINE_integer("save_every_steps", 100,
                         "Training steps between backups (also saved after every epoch).")
    flags.DEFINE_enum("dtype_policy", "float32", ["float32", "mixed_bfloat16"],
                      "Keras dtype policy: mixed_bfloat16 computes in bfloat16 with float32 "
                      "weights, as TPUs usually train (layer norms compute in float32).")
    flags.DEFINE_bool("jit_compile", False,
                      "Compile every training and prediction step with XLA, as a TPU always does "
                      "(tested on XLA:CPU: the same losses and weights as without, to 1e-4).")
    flags.DEFINE_integer("steps_per_execution", 1,
                         "Training steps per call into the compiled step: on a TPU, tens of "
                         "steps run without returning to the host in between.")
    flags.DEFINE_bool("deterministic_ops", False,
                      "tf.config.experimental.enable_op_determinism(): bit-reproducible "
                      "runs and resumes, at some speed cost.")
    flags.DEFINE_string("export_dir", None,
                        "SavedModel destination. Default: <model_dir>/saved_model.")
    flags.DEFINE_enum("export_from", "best", ["best", "last"],
                      "Weights the SavedModel and adapter_weights.safetensors hold: the epoch "
                      "with the best dev score (kept in <model_dir>/best), or the last epoch.")
    flags.mark_flag_as_required("model_dir")


def validate_flags():
    """Raise `flags.ValidationError` on flag values that cannot work together."""
    if (FLAGS.tuning == "fusion") != bool(FLAGS.fusion_adapters):
        raise flags.ValidationError("--tuning=fusion needs --fusion_adapters, and "
                                    "--fusion_adapters needs --tuning=fusion.")
    if FLAGS.tuning == "adapters":
        if FLAGS.reduction_factor is None and FLAGS.adapter_size <= 0:
            raise flags.ValidationError(f"--adapter_size must be > 0; got {FLAGS.adapter_size}.")
        if FLAGS.reduction_factor is not None and FLAGS.reduction_factor <= 0:
            raise flags.ValidationError(
                f"--reduction_factor must be > 0; got {FLAGS.reduction_factor}.")
    elif FLAGS.tuning in ("full", "lora") and (FLAGS.drop_first_n or FLAGS.robust_adapter_drop):
        raise flags.ValidationError(
            "--drop_first_n and --robust_adapter_drop need --tuning=adapters or fusion.")
    if FLAGS.tuning == "lora" and FLAGS.lora_rank <= 0:
        raise flags.ValidationError(f"--lora_rank must be > 0; got {FLAGS.lora_rank}.")
    for name in ("num_epochs", "batch_size", "max_seq_length", "save_every_steps",
                 "steps_per_execution"):
        if FLAGS[name].value <= 0:
            raise flags.ValidationError(f"--{name} must be > 0; got {FLAGS[name].value}.")
    if FLAGS.strategy == "tpu" and not FLAGS.tpu:
        raise flags.ValidationError("--strategy=tpu needs --tpu.")


def adapter_config_from_flags():
    """The `AdapterConfig` the flags describe."""
    return AdapterConfig(
        adapter_size=None if FLAGS.reduction_factor else FLAGS.adapter_size,
        reduction_factor=FLAGS.reduction_factor,
        placement=FLAGS.adapter_placement,
        train_layer_norms=FLAGS.train_layer_norms,
    )


def strategy_from_flags():
    """The `tf.distribute.Strategy` named by `--strategy`."""
    return distribute.get_strategy(FLAGS.strategy, FLAGS.tpu, FLAGS.devices)


def start_run():
    """Seed everything, set `--dtype_policy`, create `--model_dir` (the chief); returns the strategy."""
    keras.utils.set_random_seed(FLAGS.seed)
    keras.config.set_dtype_policy(FLAGS.dtype_policy)
    if FLAGS.deterministic_ops:
        tf.config.experimental.enable_op_determinism()
    strategy = strategy_from_flags()
    replicas = strategy.num_replicas_in_sync
    if FLAGS.batch_size % replicas:
        raise flags.ValidationError(
            f"--batch_size={FLAGS.batch_size} must be a multiple of the {replicas} replicas: "
            "each takes an equal share of every batch.")
    logging.info("%s with %d replica(s), %d examples per replica and step",
                 type(strategy).__name__, replicas, FLAGS.batch_size // replicas)
    if distribute.is_chief(strategy):
        os.makedirs(FLAGS.model_dir, exist_ok=True)
    else:
        logging.info("Not the chief: training and evaluating, writing nothing; the chief "
                     "writes --model_dir=%s.", FLAGS.model_dir)
    return strategy


def learning_rate():
    """The peak learning rate: `--learning_rate`, or the default for the tuning
    (`ROBUST_LEARNING_RATE` for adapters under `--robust_adapter_drop`)."""
    if FLAGS.learning_rate:
        return FLAGS.learning_rate
    if FLAGS.robust_adapter_drop and FLAGS.tuning == "adapters":
        return ROBUST_LEARNING_RATE
    return DEFAULT_LEARNING_RATES[FLAGS.tuning]


def num_epochs():
    """The epochs to train: `--num_epochs`, or `ROBUST_EPOCHS_FACTOR` times
    its default under `--robust_adapter_drop` when the flag is not given."""
    if FLAGS.robust_adapter_drop and not FLAGS["num_epochs"].present:
        return ROBUST_EPOCHS_FACTOR * FLAGS.num_epochs
    return FLAGS.num_epochs


def resume_config(run_config, backbone, steps_per_epoch):
    """What a resumed run must share with the run that wrote the backup.

    `RESUME_FLAGS` as given, the script's `run_config`, the backbone's
    identity and the steps per epoch. Under `--robust_adapter_drop` also the
    learning rate and epochs its defaults resolve to: they changed in
    50653cf, and a run begun under the old ones must not resume under the
    new. Other runs record the flags as given, so their older backups resume.
    """
    config = {**{name: FLAGS[name].value for name in RESUME_FLAGS}, **run_config,
              "backbone": backbone_identity(backbone), "steps_per_epoch": steps_per_epoch}
    if FLAGS.robust_adapter_drop:
        config.update(learning_rate=learning_rate(), num_epochs=num_epochs())
    return config


def fit(model, epoch_dataset, steps_per_epoch, backbone, *, run_config, callbacks=(),
        chief_callbacks=()):
    """Train `model` for `num_epochs()`, resuming from `<model_dir>/backup` if a run left one.

    Callbacks, in order: stop on a NaN loss, `callbacks` (evaluation), then
    on the chief only (`distribute.is_chief`) `chief_callbacks` (best
    model), per-epoch weights (`checkpoints/`), TensorBoard (`logs/`), and
    the backup every `--save_every_steps` steps and epoch. Every worker
    resumes from the chief's backup.

    Args:
        model: the compiled model.
        epoch_dataset: function from an epoch index to its batches, in that
            epoch's fixed order.
        steps_per_epoch: int.
        backbone: the model's backbone, whose identity the backup records.
        run_config: dict of the script's own settings a resumed run must
            share (the task, data files...), besides `RESUME_FLAGS`.
        callbacks: extra Keras callbacks, run by every worker.
        chief_callbacks: extra Keras callbacks that write files.

    Raises:
        ValueError: if the backup in `--model_dir` is from a run with other
            settings or another backbone.
        FloatingPointError: if the loss becomes NaN or infinite.
    """
    state = TrainingState(model, output_path("backup"),
                          resume_config(run_config, backbone, steps_per_epoch))
    writers = []
    if distribute.is_chief(model.distribute_strategy):
        writers = [
            *chief_callbacks,
            EpochWeights(output_path("checkpoints", CHECKPOINT_PATTERN)),
            keras.callbacks.TensorBoard(output_path("logs")),
            Backup(state, steps_per_epoch, FLAGS.save_every_steps),
        ]
    fit_resumable(model, epoch_dataset, epochs=num_epochs(),
                  steps_per_epoch=steps_per_epoch, state=state,
                  callbacks=[StopOnNaN(), *callbacks, *writers])


def build_backbone(adapter_name):
    """Load `--init_from`; under `--tuning=adapters` add adapter `adapter_name`;
    under `--tuning=fusion` load `--fusion_adapters` and fuse them (active);
    under `--tuning=lora` enable keras-hub's LoRA of rank `--lora_rank`.

    Call inside the strategy's scope. Returns `(backbone, tokenizer)`.

    Raises:
        flags.ValidationError: if `--drop_first_n` is not below the number of
            layers (nothing would be left to train).
        ValueError: naming the file, for an adapter folder that does not fit.
    """
    backbone, tokenizer = from_pretrained(FLAGS.init_from)
    if FLAGS.max_seq_length > backbone.max_sequence_length:
        raise flags.ValidationError(
            f"--max_seq_length={FLAGS.max_seq_length} exceeds the backbone's "
            f"{backbone.max_sequence_length} position embeddings.")
    if FLAGS.tuning == "lora":
        backbone.enable_lora(FLAGS.lora_rank)  # Freezes all else in the backbone.
    if FLAGS.tuning in ("full", "lora"):
        return backbone, tokenizer
    if not 0 <= FLAGS.drop_first_n < backbone.num_layers:
        raise flags.ValidationError(
            f"--drop_first_n must be in [0, {backbone.num_layers - 1}] for this "
            f"{backbone.num_layers}-layer backbone; got {FLAGS.drop_first_n}.")
    fusion = FLAGS.tuning == "fusion"
    backbone = add_adapters(backbone, adapter_config_from_flags(),
                            name=None if fusion else adapter_name,
                            drop_first_n=FLAGS.drop_first_n,
                            robust_adapter_drop=FLAGS.robust_adapter_drop, seed=FLAGS.seed)
    if fusion:
        names = [load_adapter(backbone, folder) for folder in FLAGS.fusion_adapters]
        backbone.add_adapter_fusion(  # One adapter's fusion cannot take the adapter's name.
            names, FLAGS.fusion_config, name=f"{names[0]}_fusion" if len(names) == 1 else None,
            set_active=True)
    return backbone, tokenizer


def prepare_for_training(model, num_examples, static_shapes):
    """Freeze (for adapters) and build the optimizer; returns it and steps/epoch."""
    if FLAGS.tuning in ("adapters", "fusion"):
        logging.info("%s tuning: %s", FLAGS.tuning.capitalize(), freeze_for_adapter_tuning(model))
    logging.info("Training %s of %s parameters.", *parameter_counts(model).values())
    rounding = math.floor if static_shapes else math.ceil
    steps_per_epoch = max(1, rounding(num_examples / FLAGS.batch_size))
    optimizer = create_optimizer(
        learning_rate(),
        total_steps=steps_per_epoch * num_epochs(),
        warmup_proportion=FLAGS.warmup_proportion,
        weight_decay=FLAGS.weight_decay,
    )
    return optimizer, steps_per_epoch


def parameter_counts(model):
    """`{"trained": ..., "total": ...}`: the parameters in `model`'s trainable
    weights, and in all its floating-point weights (not AdapterDrop's state)."""
    return {"trained": weight_count(model.trainable_weights),
            "total": weight_count([w for w in model.weights if "float" in w.dtype])}


def save_tuned_weights(model, backbone):
    """Write what `--tuning` trained besides the head, atomically: adapters'
    and fusions' weights (`adapter_weights.safetensors`), or the LoRA factors
    (keras-hub's `save_lora_weights`, `lora_weights.lora.h5`). Nothing for
    full fine-tuning (the SavedModel and checkpoints hold it all)."""
    if FLAGS.tuning in ("adapters", "fusion"):
        save_adapter_weights(model, output_path("adapter_weights.safetensors"))
    elif FLAGS.tuning == "lora":
        with atomic_path(output_path(LORA_WEIGHTS)) as temporary:
            backbone.save_lora_weights(temporary + ".lora.h5")
            os.rename(temporary + ".lora.h5", temporary)


def output_path(*parts):
    """A path under `--model_dir`."""
    return os.path.join(FLAGS.model_dir, *parts)


def load_weights_to_export(model, best):
    """Give `model` the weights `--export_from` names; returns what it holds.

    With `best`, the epoch `best` (the run's `KeepBest`) kept is loaded, so
    the SavedModel serves the epoch whose dev score is reported.

    Returns:
        dict: `{"from": "best" or "last", "epoch": int or None}`.
    """
    if FLAGS.export_from == "best":
        kept = best.restore(model)
        if kept is not None:
            return {"from": "best", "epoch": kept["epoch"]}
        logging.warning("--export_from=best: %s keeps no epoch; exporting the last one.",
                        best.directory)
    return {"from": "last", "epoch": None}
