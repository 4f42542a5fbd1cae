"""Hugging Face checkpoints of every architecture, checked against `transformers` itself.

A subprocess builds a tiny randomly initialised Hugging Face model of each
architecture (no download), saves it with the tokenizer files written here,
and runs it. `from_pretrained` must then give the same hidden states (to
1e-5, float32) and the same token ids.
"""

import importlib.util

import numpy as np
import pytest

from keras_adapters import from_pretrained
from keras_adapters.models.adapter_backbone import AdapterBackbone
from tests.helpers import (
    ARCHITECTURES,
    HF_MODELS_SCRIPT,
    TEXTS_A,
    run_torch_script,
    tokenizer_folders,
)

_TRANSFORMERS_SCRIPT = HF_MODELS_SCRIPT + """
args = json.load(sys.stdin)
results = {}
for name, folder in args["folders"].items():
    tokenizer, model = random_hf_model(name, folder)
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


@pytest.fixture(scope="module")
def hugging_face(tmp_path_factory):
    """`{architecture: (folder, what transformers computed)}` for every architecture."""
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed (the test extra installs it)")
    folders = tokenizer_folders(tmp_path_factory.mktemp("hf"))
    outputs = run_torch_script(_TRANSFORMERS_SCRIPT, folders=folders, texts=TEXTS_A)
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
