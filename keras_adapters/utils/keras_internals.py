"""Every use of a private Keras or keras-hub API, in one place.

Each function here leans on something Keras or keras-hub does not promise
to keep: an attribute with a leading underscore, a module-level name, the
node structure of a functional graph. `tests/test_keras_internals.py`
checks each against the installed versions, so an upgrade that breaks one
fails there, by name, rather than deep inside a model.
"""

import contextlib
import sys
import threading

import tensorflow as tf
from keras.src import tree
from keras.src.backend.tensorflow import trainer as tf_trainer
from keras_hub.layers import TransformerEncoder
from keras_hub.src.tokenizers import word_piece_tokenizer

# The sub-layers of keras-hub's `TransformerEncoder` that adapters extend or
# replace, by the slot names `keras_adapters.models.adapter_encoder` uses.
TRANSFORMER_ENCODER_SUBLAYERS = {
    "attention_dropout": "_self_attention_dropout",
    "attention_layer_norm": "_self_attention_layer_norm",
    "feedforward_dropout": "_feedforward_dropout",
    "feedforward_layer_norm": "_feedforward_layer_norm",
}


def word_piece_split_patterns(split_on_cjk):
    """keras-hub WordPiece's pre-tokenization regexes: `(split pattern, keep pattern)`.

    SQuAD's offset tokenizer splits words exactly as `WordPieceTokenizer` does.
    """
    if split_on_cjk:
        return (word_piece_tokenizer.WHITESPACE_PUNCTUATION_AND_CJK_REGEX,
                word_piece_tokenizer.PUNCTUATION_AND_CJK_REGEX)
    return (word_piece_tokenizer.WHITESPACE_AND_PUNCTUATION_REGEX,
            word_piece_tokenizer.PUNCTUATION_REGEX)


def encoder_sublayer(encoder, slot):
    """The sub-layer of a keras-hub `TransformerEncoder` in `slot` (a key of
    `TRANSFORMER_ENCODER_SUBLAYERS`)."""
    return getattr(encoder, TRANSFORMER_ENCODER_SUBLAYERS[slot])


def replace_encoder_sublayer(encoder, slot, layer):
    """Make `encoder` call `layer` where it called its sub-layer in `slot` (in `build`)."""
    setattr(encoder, TRANSFORMER_ENCODER_SUBLAYERS[slot], layer)


@contextlib.contextmanager
def tracking_unlocked(layer):
    """Let a built Keras layer take new sub-layers (or drop them) inside the context.

    Keras locks a layer's state after `build`; adapters and heads are added
    and removed later.
    """
    layer._tracker.unlock()
    try:
        yield
    finally:
        layer._tracker.lock()


def child_layers(layer, recursive=False):
    """The layers `layer` holds (not itself): direct children, or all below it."""
    return layer._flatten_layers(include_self=False, recursive=recursive)


def first_call_input(layer):
    """The first positional input of `layer`'s first call in a functional graph.

    For a transformer layer of a keras-hub backbone this is the KerasTensor
    of the embeddings it reads, from which the embedding part of the
    backbone's graph can be cut out as a model of its own.
    """
    return layer._inbound_nodes[0].arguments.args[0]


_PATCH_LOCK = threading.Lock()


def _init_module(backbone_cls):
    """The module of the class whose `__init__` a `backbone_cls()` call runs."""
    for cls in backbone_cls.__mro__:
        if "__init__" in vars(cls):
            return sys.modules[cls.__module__]
    raise TypeError(f"{backbone_cls} has no __init__.")


@contextlib.contextmanager
def transformer_encoders_from(backbone_cls, factory):
    """Inside, `backbone_cls(...)` builds its transformer layers with `factory`.

    keras-hub backbones build each layer as `TransformerEncoder(**kwargs)`,
    a name looked up in the module that defines their `__init__`. Inside
    this context that name is `factory`, which receives the same keyword
    arguments. A lock keeps two threads from building at once.

    Raises:
        RuntimeError: if the backbone's module has no `TransformerEncoder`
            of keras-hub's: keras-hub then builds its layers another way.
    """
    module = _init_module(backbone_cls)
    if getattr(module, "TransformerEncoder", None) is not TransformerEncoder:
        raise RuntimeError(
            f"{module.__name__} does not build keras_hub's TransformerEncoder by name; "
            "this keras-hub version is not supported by keras_adapters.")
    with _PATCH_LOCK:
        module.TransformerEncoder = factory
        try:
            yield
        finally:
            module.TransformerEncoder = TransformerEncoder


class SumBeforeClipping:
    """Optimizer mixin: clip the gradient summed over replicas, not each replica's share.

    Keras 3's TensorFlow optimizers clip (`global_clipnorm`, `clipnorm`,
    `clipvalue`) in `_clip_gradients`, before `_backend_update_step` sums the
    replicas' gradients (`_all_reduce_sum_gradients`). Under
    `MirroredStrategy`, `TPUStrategy` or `MultiWorkerMirroredStrategy`, each
    replica's share of the gradient is clipped by its own norm, and training
    differs from one device's whenever clipping engages. With this mixin the
    sum is taken first (the same single all-reduce, moved), then clipped:
    N replicas train as one device does on the global batch.

    Put it first among the bases: `class AdamW(SumBeforeClipping, keras.optimizers.AdamW)`.
    """

    def _clip_gradients(self, grads):
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            present = [g for g in grads if g is not None]
            summed = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present))
            grads = [None if g is None else next(summed) for g in grads]
        return super()._clip_gradients(grads)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return grads_and_vars  # Summed in `_clip_gradients`.


def _multi_worker(strategy):
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` over more than one worker."""
    return tf_trainer._collective_all_reduce_multi_worker(strategy)


def _local_batch(strategy, batch):
    """This worker's first replica's part of a distributed batch."""
    return tree.map_structure(
        lambda v: strategy.experimental_local_results(v)[0]
        if isinstance(v, tf.distribute.DistributedValues) else v, batch)


_ORIGINAL_SYMBOLIC_BUILD = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
_ORIGINAL_REDUCE_PER_REPLICA = tf_trainer.reduce_per_replica


def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    if iterator is None or not _multi_worker(self._distribute_strategy):
        return _ORIGINAL_SYMBOLIC_BUILD(self, iterator=iterator, data_batch=data_batch)
    for _, _, batches in iterator:
        return _ORIGINAL_SYMBOLIC_BUILD(
            self, data_batch=_local_batch(self._distribute_strategy, next(batches)))


def _reduce_per_replica(values, strategy, reduction):
    if reduction in ("auto", "mean") and _multi_worker(strategy):
        return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
    return _ORIGINAL_REDUCE_PER_REPLICA(values, strategy, reduction)


def enable_multi_worker_fit():
    """Make Keras 3's `fit`, `evaluate` and `predict` run under `MultiWorkerMirroredStrategy`.

    Keras 3.15 fails there in two places (keras-team/keras#20585, #20329);
    both are replaced for a multi-worker strategy only, every other strategy
    runs Keras' own code:

    - `TensorFlowTrainer._maybe_symbolic_build` learns a batch's shapes by
      averaging the first batch over all workers, a collective op that
      fails on a dict of features. This worker's own replica batch has the
      same shapes and needs no communication.
    - `reduce_per_replica` averages each scalar loss and metric over
      `axis=0`, which a scalar lacks. The mean over replicas is what
      `MirroredStrategy` reports.

    Idempotent.
    """
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer.reduce_per_replica = _reduce_per_replica
