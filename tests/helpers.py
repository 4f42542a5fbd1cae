"""What many test modules share: tiny models of every architecture, their
tokenizers and inputs, defined once (the spirit of keras-hub's `TestCase`).

Not a test module: test modules import this one, never each other.
"""

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver
from safetensors.numpy import save_file

from keras_adapters import AdapterConfig, add_adapters, make_preprocessor

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Real GLUE and SQuAD data in their original layout (see ../shared/data/README.md).
GLUE_DIR = REPO_ROOT.parent / "shared" / "data" / "glue"
SQUAD_DIR = REPO_ROOT.parent / "shared" / "data" / "squad"
SQUAD_DEV = SQUAD_DIR / "dev-v1.1.json"
SQUAD_TRAIN = SQUAD_DIR / "train-v1.1-first44articles.json"


def require_squad():
    """Skip the calling test when the real SQuAD files are absent."""
    if not SQUAD_DIR.is_dir():
        pytest.skip(f"real SQuAD data not found at {SQUAD_DIR}: expected the shared data "
                    "folder next to the repository (../shared/data/squad)")


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


def run_layer_test(layer_cls, init_kwargs, input_data, expected_output_shape, tmp_path):
    """keras-hub's `run_layer_test`, in short, for a layer taking one tensor.

    The layer builds and runs; `from_config(get_config())` with the same
    weights gives the same outputs; a functional model holding it round-trips
    through a `.keras` file; under `mixed_bfloat16` it computes in bfloat16.

    Returns:
        The layer's outputs (float32 policy).
    """
    layer = layer_cls(**init_kwargs)
    outputs = np.asarray(layer(input_data))
    assert outputs.shape == expected_output_shape
    twin = layer_cls.from_config(layer.get_config())
    twin(input_data)
    twin.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(twin(input_data)), outputs)
    inputs = keras.Input(shape=input_data.shape[1:])
    run_serialization_test(keras.Model(inputs, layer_cls(**init_kwargs)(inputs)), input_data,
                           tmp_path / f"{layer_cls.__name__}.keras")
    mixed = layer_cls(**init_kwargs, dtype="mixed_bfloat16")
    assert keras.backend.standardize_dtype(mixed(input_data).dtype) == "bfloat16"
    assert all(w.dtype == "float32" for w in mixed.weights if "float" in w.dtype)
    return outputs


def run_serialization_test(model, inputs, path):
    """Save `model` to a `.keras` file and load it; the outputs must not change.

    Returns:
        The restored model.
    """
    model.save(str(path))
    restored = keras.saving.load_model(str(path))
    assert_outputs_equal(outputs_of(restored, inputs), outputs_of(model, inputs))
    return restored


# Tiny random Hugging Face models of every architecture, built by `transformers` in a
# subprocess (importing it pulls in torch._dynamo, whose LLVM clashes with TensorFlow's in
# one process). Scripts start with this and read their arguments as JSON from stdin.
HF_MODELS_SCRIPT = """
import json, sys
import torch, transformers
SIZES = dict(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16,
             hidden_act="gelu")
CONFIGS = {
    "bert": (transformers.BertConfig, transformers.BertTokenizer,
             dict(SIZES, max_position_embeddings=32, type_vocab_size=2)),
    "roberta": (transformers.RobertaConfig, transformers.RobertaTokenizer,
                dict(SIZES, max_position_embeddings=34, type_vocab_size=1, pad_token_id=1,
                     layer_norm_eps=1e-5)),
    "xlm_roberta": (transformers.XLMRobertaConfig, transformers.XLMRobertaTokenizer,
                    dict(SIZES, max_position_embeddings=34, type_vocab_size=1, pad_token_id=1,
                         layer_norm_eps=1e-5)),
    "distil_bert": (transformers.DistilBertConfig, transformers.DistilBertTokenizer,
                    dict(dim=8, n_layers=2, n_heads=2, hidden_dim=16, activation="gelu",
                         max_position_embeddings=32)),
    "electra": (transformers.ElectraConfig, transformers.ElectraTokenizer,
                dict(SIZES, embedding_size=4, max_position_embeddings=32, type_vocab_size=2)),
}


def random_hf_model(name, folder):
    # A random model of architecture `name`, saved in `folder` (which holds the tokenizer
    # files), and its tokenizer, both from `transformers`.
    config_cls, tokenizer_cls, sizes = CONFIGS[name]
    tokenizer = tokenizer_cls.from_pretrained(folder)
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(config_cls(vocab_size=len(tokenizer), **sizes))
    model.eval().save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return tokenizer, model
"""


def tokenizer_folders(root):
    """`{architecture: folder}` under `root`, each holding its tokenizer's files."""
    folders = {}
    for arch in ARCHITECTURES:
        folder = folders[arch.name] = os.path.join(root, arch.name)
        os.makedirs(folder)
        if arch.name in ("bert", "distil_bert", "electra"):
            with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
                f.write("\n".join(WORD_PIECE_VOCAB) + "\n")
        elif arch.name == "roberta":
            with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
                json.dump(BPE_VOCAB, f)
            with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
                f.write("#version: 0.2\n" + "\n".join(BPE_MERGES) + "\n")
        else:
            with open(os.path.join(folder, "sentencepiece.bpe.model"), "wb") as f:
                f.write(sentence_piece_proto())
    return folders


def run_torch_script(script, **args):
    """Run `script` (PyTorch, transformers, adapters) offline in a subprocess, `args` as
    JSON on stdin; returns what it prints as JSON."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "USE_TF": "0"}  # transformers would import TensorFlow too, for nothing.
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300, input=json.dumps(args))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


# Hugging Face BERT folders with random tensors (no transformers needed).

HF_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "dog", "##s"]
TINY_HF_CONFIG = dict(model_type="bert", vocab_size=len(HF_VOCAB), hidden_size=8, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=16, max_position_embeddings=16,
            type_vocab_size=2, hidden_act="gelu", hidden_dropout_prob=0.1, layer_norm_eps=1e-12)


def tiny_hf_tensors(config=TINY_HF_CONFIG, prefix="bert.", seed=0):
    """Random `BertForPreTraining`-style tensors, `cls.*` heads included."""
    rng = np.random.default_rng(seed)
    V, P, T = config["vocab_size"], config["max_position_embeddings"], config["type_vocab_size"]
    H, I = config["hidden_size"], config["intermediate_size"]
    shapes = {
        "embeddings.word_embeddings.weight": (V, H),
        "embeddings.position_embeddings.weight": (P, H),
        "embeddings.token_type_embeddings.weight": (T, H),
        "embeddings.LayerNorm.weight": (H,),
        "embeddings.LayerNorm.bias": (H,),
        "pooler.dense.weight": (H, H),
        "pooler.dense.bias": (H,),
    }
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for n in ("self.query", "self.key", "self.value", "output.dense"):
            n = "attention." + n
            shapes.update({p + n + ".weight": (H, H), p + n + ".bias": (H,)})
        shapes.update({p + "intermediate.dense.weight": (I, H), p + "intermediate.dense.bias": (I,),
                       p + "output.dense.weight": (H, I), p + "output.dense.bias": (H,)})
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes.update({p + n + ".weight": (H,), p + n + ".bias": (H,)})
    tensors = {prefix + k: rng.normal(0.0, 0.5, s).astype(np.float32) for k, s in shapes.items()}
    tensors[prefix + "embeddings.position_ids"] = np.arange(P, dtype=np.int64)[None]
    tensors.update({"cls.predictions.bias": np.zeros(V, np.float32),
                    "cls.predictions.transform.dense.weight": np.zeros((H, H), np.float32),
                    "cls.seq_relationship.weight": np.zeros((2, H), np.float32)})
    return tensors


def write_hf_folder(folder, tensors, config=TINY_HF_CONFIG, lowercase=True, torch_bin=False):
    """A Hugging Face BERT folder of `tensors` (safetensors, or a PyTorch .bin)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": lowercase}, f)
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(HF_VOCAB) + "\n")
    if torch_bin:
        import torch

        state = {k: torch.from_numpy(v) for k, v in tensors.items()}
        torch.save(state, os.path.join(folder, "pytorch_model.bin"))
    else:
        save_file(tensors, os.path.join(folder, "model.safetensors"))
    return str(folder)


def write_mrpc_folder(root, rows=200):
    """A GLUE folder under `root` whose MRPC train and dev sets are `rows` random pairs."""
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "mat", "dog", "dogs"]
    lines = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
    for i in range(rows):
        a = " ".join(rng.choice(words, 5))
        b = " ".join(rng.choice(words, 5))
        lines.append(f"{i % 2}\t{i}\t{i + 1000}\t{a}\t{b}")
    folder = root / "glue" / "MRPC"
    folder.mkdir(parents=True)
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "glue"


def tiny_classifier(num_classes=3):
    """A 2-layer BERT classifier with adapters over `WORD_PIECE_VOCAB`, and its preprocessor
    (length 32)."""
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(WORD_PIECE_VOCAB), num_layers=2, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=32)
    model = keras_hub.models.BertTextClassifier(
        add_adapters(backbone, AdapterConfig(adapter_size=2, initializer_std=0.3)),
        num_classes=num_classes, preprocessor=None)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=WORD_PIECE_VOCAB)
    return model, make_preprocessor(tokenizer, 32)


# Texts that normalization changes (accents, CJK, emoji, invisible characters).
UNICODE_CASES = [
    "Café déjà vu, Frédéric!",
    "naïve ＡＢＣ ﬁne",
    "北京大学 in 東京",
    "I ❤️ 🎉 emoji 👍🏽!",
    "zero\u200bwidth\u200djoin\u00adsoft",
    "non\u00a0breaking space",
    "a≠b … ″ ß İstanbul",
    "tab\tnew\nline\r\n",
    "",
]


# SavedModels served the way a serving team would: a fresh process that
# imports only TensorFlow and tensorflow-text, loads them and calls signatures.
_SERVE_IN_FRESH_PROCESS = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)
results = []
for export_dir, signature, inputs in json.loads(sys.argv[1]):
    signatures = tf.saved_model.load(export_dir).signatures
    outputs = signatures[signature](**{name: tf.constant(value) for name, value in inputs.items()})
    results.append({name: [v.decode() for v in value.numpy().ravel()]
                    if value.dtype == tf.string else value.numpy().tolist()
                    for name, value in outputs.items()})
    results[-1]["__signatures__"] = sorted(signatures)
print(json.dumps(results))
"""


def serve_in_fresh_process(*calls):
    """Call SavedModel signatures in one new Python process.

    Args:
        *calls: `(export_dir, signature, inputs)` triples, `inputs` a dict of
            input name to a JSON-serialisable list (or scalar).

    Returns:
        A list with each call's dict of output name to a NumPy array (strings
        as a list of str), plus `"__signatures__"`: the names of the
        SavedModel's signatures.
    """
    import json

    import numpy as np

    payload = json.dumps([(str(d), signature, inputs) for d, signature, inputs in calls])
    result = subprocess.run([sys.executable, "-c", _SERVE_IN_FRESH_PROCESS, payload],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [{name: value if value and isinstance(value[0], str) else np.array(value)
             for name, value in outputs.items()}
            for outputs in json.loads(result.stdout.strip().splitlines()[-1])]


def saved_model_cli_show(export_dir):
    """The output of `saved_model_cli show --all --dir export_dir`."""

    cli = pathlib.Path(sys.executable).parent / "saved_model_cli"
    result = subprocess.run([str(cli), "show", "--all", "--dir", str(export_dir)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


# The TPU branch of --strategy=tpu, all but what needs a TPU: the network
# calls (connect_to_cluster) and TPUStrategy itself (tpu_strategy), replaced
# by a recorder and a MirroredStrategy over two logical CPUs. One process per
# MirroredStrategy: a second one in a process clashes on collective keys.
_TPU_STAND_IN = """
import importlib, socket, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from absl import app
script = importlib.import_module(sys.argv.pop(1))  # run_classifier or run_squad
from keras_adapters.training import distribute
connected = []
distribute.connect_to_cluster = connected.append
distribute.tpu_strategy = lambda resolver: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
listener = socket.create_server(("127.0.0.1", 0))  # check_tpu_reachable connects here.
sys.argv.append(f"--tpu=grpc://127.0.0.1:{listener.getsockname()[1]}")
try:
    app.run(script.main, argv=sys.argv)
finally:
    print("connected:", [resolver.master() for resolver in connected], flush=True)
"""


def run_tpu_stand_in(script, *flags):
    """Run `script` (`run_classifier` or `run_squad`) with `--strategy=tpu` on the stand-in."""
    command = [sys.executable, "-c", _TPU_STAND_IN, script, "--strategy=tpu", *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)


def backup_step(model_dir):
    """The optimizer step of `model_dir`'s training backup (-1: none yet)."""
    from safetensors import safe_open

    from keras_adapters.training.resume import STATE_FILE

    path = pathlib.Path(model_dir) / "backup" / STATE_FILE
    if not path.exists():
        return -1
    with safe_open(str(path), framework="numpy") as f:
        return int(f.metadata()["global_step"])


@contextlib.contextmanager
def script_flags(model_dir, *argv):
    """Within: the scripts' flags parsed from `argv` alone (and `--model_dir`),
    as a fresh process would see them; restored on exit. The flags must be
    defined, for example by importing `run_classifier`."""
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS([sys.argv[0], f"--model_dir={model_dir}", *argv])
        yield
