"""Hugging Face checkpoints of every architecture, checked against `transformers` itself.

A subprocess builds a tiny randomly initialised Hugging Face model of each
architecture (no download), saves it with the tokenizer files written here,
and runs it. `from_pretrained` must then give the same hidden states (to
1e-5, float32) and the same token ids.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_adapters import from_pretrained
from keras_adapters.models.adapter_backbone import AdapterBackbone
from tests.helpers import (
    ARCHITECTURES,
    BPE_MERGES,
    BPE_VOCAB,
    TEXTS_A,
    WORD_PIECE_VOCAB,
    sentence_piece_proto,
)

# Run in a subprocess: importing transformers pulls in torch._dynamo, whose
# LLVM clashes with TensorFlow's in one process.
_TRANSFORMERS_SCRIPT = """
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
args = json.load(sys.stdin)
results = {}
for name, folder in args["folders"].items():
    config_cls, tokenizer_cls, sizes = CONFIGS[name]
    tokenizer = tokenizer_cls.from_pretrained(folder)
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(config_cls(vocab_size=len(tokenizer), **sizes))
    model.eval().save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    batch = tokenizer(args["texts"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).last_hidden_state
    results[name] = {
        "token_ids": batch["input_ids"].tolist(),
        "padding_mask": batch["attention_mask"].tolist(),
        "hidden": hidden.tolist(),
        "pieces": [tokenizer(text, add_special_tokens=False)["input_ids"]
                   for text in args["texts"]],
    }
json.dump(results, sys.stdout)
"""


def _write_tokenizer_files(arch, folder):
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


@pytest.fixture(scope="module")
def hugging_face(tmp_path_factory):
    """`{architecture: (folder, what transformers computed)}` for every architecture."""
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed (the test extra installs it)")
    root = tmp_path_factory.mktemp("hf")
    folders = {}
    for arch in ARCHITECTURES:
        folders[arch.name] = str(root / arch.name)
        _write_tokenizer_files(arch, folders[arch.name])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", _TRANSFORMERS_SCRIPT], env=env,
                            input=json.dumps({"folders": folders, "texts": TEXTS_A}),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = json.loads(result.stdout)
    return {name: (folders[name], outputs[name]) for name in folders}


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=[a.name for a in ARCHITECTURES])
def test_hugging_face_folder_matches_transformers(arch, hugging_face):
    folder, expected = hugging_face[arch.name]
    backbone, tokenizer = from_pretrained(folder)
    assert isinstance(backbone, arch.backbone_cls) and isinstance(backbone, AdapterBackbone)
    assert backbone.hidden_activation == "gelu"  # The checkpoint's exact GELU, kept.
    assert not backbone.adapter_names
    assert isinstance(tokenizer, type(arch.make_tokenizer()))
    pieces = [list(np.asarray(tokenizer(text)).tolist()) for text in TEXTS_A]
    assert pieces == expected["pieces"]

    token_ids = np.array(expected["token_ids"], "int32")
    mask = np.array(expected["padding_mask"], "int32")
    inputs = {"token_ids": token_ids, "padding_mask": mask}
    if "segment_ids" in backbone.input:
        inputs["segment_ids"] = np.zeros_like(token_ids)
    hidden = backbone.features(backbone(inputs))["sequence_output"].numpy()
    reference = np.array(expected["hidden"], "float32")
    kept = mask == 1  # Padded positions are numbered differently, and unused.
    diff = np.abs(hidden[kept] - reference[kept]).max()
    print(f"{arch.name}: max abs diff vs transformers = {diff:.3g}")
    assert diff <= 1e-5
