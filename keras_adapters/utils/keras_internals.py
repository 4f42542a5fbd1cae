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
