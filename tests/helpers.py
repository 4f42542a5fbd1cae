"""What many test modules share: tiny models of every architecture, their
tokenizers and inputs, defined once (the spirit of keras-hub's `TestCase`).

Not a test module: test modules import this one, never each other.
"""

import dataclasses
import io

import keras
import keras_hub
import numpy as np

WORDS = "the a cat dog sat on mat big".split()
WORD_PIECE_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]


def _byte_pair_vocabulary():
    """Byte-level BPE over `WORDS` ("Ġ" marks a preceding space): vocabulary and merges."""
    vocabulary = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    merges = []
    for word in [*WORDS, *(f"Ġ{w}" for w in WORDS)]:
        piece = word[0]
        for char in (piece, *word[1:]):
            vocabulary.setdefault(char, len(vocabulary))
        for char in word[1:]:
            merges.append(f"{piece} {char}")
            piece += char
            vocabulary.setdefault(piece, len(vocabulary))
    return vocabulary, list(dict.fromkeys(merges))


BPE_VOCAB, BPE_MERGES = _byte_pair_vocabulary()
TEXTS_A = ["the cat sat on the mat", "a big dog", ""]
TEXTS_B = ["the dog", "a cat sat", "big"]


def sentence_piece_proto():
    """A tiny SentencePiece model over `WORDS`, as XLM-RoBERTa's tokenizer needs."""
    import sentencepiece

    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([" ".join(WORDS), "the cat sat on the mat", "a big dog"]),
        model_writer=proto, vocab_size=14, model_type="WORD", pad_id=0, bos_id=1, eos_id=2,
        unk_id=3, pad_piece="<pad>", bos_piece="<s>", eos_piece="</s>", unk_piece="<unk>",
        user_defined_symbols="[MASK]")
    return proto.getvalue()


@dataclasses.dataclass(frozen=True)
class Arch:
    """One keras-hub encoder architecture, as tiny as it gets.

    Attributes:
        name: the `Architecture.name` in keras_adapters.
        backbone_cls: the keras-hub backbone class.
        size: its constructor's size arguments (2 layers, hidden size 8).
        make_tokenizer: builds a tokenizer whose vocabulary fits `size`.
        preprocessor_cls: keras-hub's text classifier preprocessor.
        classifier_cls: keras-hub's text classifier, or None.
    """

    name: str
    backbone_cls: type
    size: dict
    make_tokenizer: callable
    preprocessor_cls: type
    classifier_cls: type | None

    def backbone(self, seed=0, **overrides):
        """A randomly initialised backbone, seeded."""
        keras.utils.set_random_seed(seed)
        return self.backbone_cls(**{**self.size, **overrides})

    @property
    def has_segments(self):
        return self.name in ("bert", "electra")

    def inputs(self, batch=3, seq=10, seed=0):
        """Random token features of this architecture, one row padded."""
        rng = np.random.default_rng(seed)
        mask = np.ones((batch, seq), "int32")
        mask[1, seq // 2 + 1:] = 0
        vocabulary = self.size.get("vocabulary_size", self.size.get("vocab_size"))
        features = {"token_ids": rng.integers(0, vocabulary, (batch, seq)).astype("int32") * mask,
                    "padding_mask": mask}
        if self.has_segments:
            features["segment_ids"] = (np.arange(seq)[None] >= seq // 2).astype("int32") * mask
        return features


def _size(vocabulary, **extra):
    return dict(vocabulary_size=vocabulary, num_layers=2, num_heads=2, hidden_dim=8,
                intermediate_dim=16, max_sequence_length=32, dropout=0.0, **extra)


M = keras_hub.models
ARCHITECTURES = [
    Arch("bert", M.BertBackbone, _size(len(WORD_PIECE_VOCAB)),
         lambda: M.BertTokenizer(vocabulary=WORD_PIECE_VOCAB),
         M.BertTextClassifierPreprocessor, M.BertTextClassifier),
    Arch("roberta", M.RobertaBackbone, _size(len(BPE_VOCAB)),
         lambda: M.RobertaTokenizer(vocabulary=BPE_VOCAB, merges=BPE_MERGES),
         M.RobertaTextClassifierPreprocessor, M.RobertaTextClassifier),
    Arch("xlm_roberta", M.XLMRobertaBackbone, _size(16),
         lambda: M.XLMRobertaTokenizer(proto=sentence_piece_proto()),
         M.XLMRobertaTextClassifierPreprocessor, M.XLMRobertaTextClassifier),
    Arch("distil_bert", M.DistilBertBackbone, _size(len(WORD_PIECE_VOCAB)),
         lambda: M.DistilBertTokenizer(vocabulary=WORD_PIECE_VOCAB),
         M.DistilBertTextClassifierPreprocessor, M.DistilBertTextClassifier),
    Arch("electra", M.ElectraBackbone,
         {**{k: v for k, v in _size(len(WORD_PIECE_VOCAB)).items() if k != "vocabulary_size"},
          "vocab_size": len(WORD_PIECE_VOCAB), "embedding_dim": 4},
         lambda: M.ElectraTokenizer(vocabulary=WORD_PIECE_VOCAB),
         M.BertTextClassifierPreprocessor, None),
]
ARCHITECTURE_IDS = [arch.name for arch in ARCHITECTURES]


def outputs_of(model, inputs, training=False):
    """A model's outputs as `{name: np.ndarray}` (one array: key `"output"`)."""
    outputs = model(inputs, training=training)
    if not isinstance(outputs, dict):
        outputs = {"output": outputs}
    return {name: np.asarray(value) for name, value in outputs.items()}


def assert_outputs_equal(actual, expected, atol=0.0):
    """Each named output equal (bit for bit when `atol` is 0)."""
    assert actual.keys() == expected.keys()
    for name in expected:
        if atol:
            np.testing.assert_allclose(actual[name], expected[name], atol=atol, err_msg=name)
        else:
            np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


def run_serialization_test(model, inputs, path):
    """Save `model` to a `.keras` file and load it; the outputs must not change.

    Returns:
        The restored model.
    """
    model.save(str(path))
    restored = keras.saving.load_model(str(path))
    assert_outputs_equal(outputs_of(restored, inputs), outputs_of(model, inputs))
    return restored
