"""AdapterFusion here equals AdapterHub's `Fuse` (`adapters` 1.3.0), both ways.

One subprocess (`helpers.run_torch_script`) runs AdapterHub on a tiny random
BERT: for each case it builds N random adapters, a random AdapterFusion over
them and a head on the fusion, saves them in its format and records its
logits and last hidden states; and it loads the fusions this library built
and wrote in AdapterHub's format, and records its outputs for them. Every
weight is drawn far from its initial value (normal, std 0.5), so a wrong
term shows. Inference mode throughout.
"""

import importlib.util

import numpy as np
import pytest

from keras_adapters import AdapterConfig, AdapterModel, add_adapters, from_pretrained
from tests.helpers import run_torch_script, tiny_hf_tensors, write_hf_folder
from tests.test_adapterhub_models import PADDING_MASK, SEGMENT_IDS, TOKEN_IDS, _tiny_inputs

_SCRIPT = """
import json, os, sys
import torch, adapters
from adapters import DoubleSeqBnConfig, SeqBnConfig
from adapters.composition import Fuse

args = json.load(sys.stdin)
model = adapters.BertAdapterModel.from_pretrained(args["folder"]).eval()
inputs = {key: torch.tensor(value) for key, value in args["inputs"].items()}
ADAPTERS = {"seq_bn": SeqBnConfig(reduction_factor=2), "double_seq_bn": DoubleSeqBnConfig(reduction_factor=2)}


def run(name):
    model.active_head = name
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    return {"logits": out.logits.tolist(), "hidden": out.hidden_states[-1].tolist()}


outputs = {}
for case in args["cases"]:
    root = case["root"]
    os.makedirs(root, exist_ok=True)
    if case["direction"] == "from_adapterhub":
        for index, adapter in enumerate(case["adapters"]):
            model.add_adapter(adapter, config=ADAPTERS[case["placement"]])
            torch.manual_seed(index)
            with torch.no_grad():
                for key, value in model.named_parameters():
                    if f".adapters.{adapter}." in key:
                        value.normal_(0.0, 0.5)
            model.save_adapter(f"{root}/{adapter}", adapter, use_safetensors=True)
        fusion = Fuse(*case["adapters"])
        model.add_adapter_fusion(fusion, config=case["config"], set_active=True)
        model.add_classification_head(fusion.name, num_labels=2)
        torch.manual_seed(100)
        with torch.no_grad():
            for key, value in model.named_parameters():
                if f".adapter_fusion_layer.{fusion.name}." in key or key.startswith(f"heads.{fusion.name}."):
                    value.normal_(0.0, 0.5)
        model.save_adapter_fusion(f"{root}/fusion", fusion.name, with_head=True, use_safetensors=True)
        outputs[case["id"]] = run(fusion.name)
    else:
        for adapter in case["adapters"]:
            model.load_adapter(f"{root}/{adapter}", use_safetensors=True)
        # AdapterHub 1.3.0's load_adapter_fusion returns None when it loads a head too.
        model.load_adapter_fusion(f"{root}/fusion", use_safetensors=True, set_active=True)
        outputs[case["id"]] = run(case["name"])
json.dump(outputs, sys.stdout)
"""

DYNAMIC = "dynamic"
STATIC = "static"
# Off the presets: the query before the layer norm, W_v after the weighted sum, the
# residual added to the adapters' outputs.
VARIANT = {"key": True, "query": True, "value": True, "query_before_ln": True,
           "regularization": True, "residual_before": True, "temperature": False,
           "value_before_softmax": False, "value_initialized": True, "dropout_prob": None}
CASES = {  # id: (placement, number of adapters, fusion config)
    "seq_bn-1-dynamic": ("seq_bn", 1, DYNAMIC),
    "seq_bn-2-dynamic": ("seq_bn", 2, DYNAMIC),
    "seq_bn-3-dynamic": ("seq_bn", 3, DYNAMIC),
    "seq_bn-1-static": ("seq_bn", 1, STATIC),
    "seq_bn-2-static": ("seq_bn", 2, STATIC),
    "seq_bn-3-static": ("seq_bn", 3, STATIC),
    "double_seq_bn-2-dynamic": ("double_seq_bn", 2, DYNAMIC),
    "seq_bn-2-variant": ("seq_bn", 2, VARIANT),
}
DIRECTIONS = ("from_adapterhub", "to_adapterhub")


def _adapters(case_id, direction, count):
    prefix = f"{direction[:2]}{list(CASES).index(case_id)}"  # Unique in the one AdapterHub model.
    return [f"{prefix}_{i}" for i in range(count)]


def _one_adapter_name(adapters):
    # AdapterHub names a one-adapter fusion after its adapter; here that name is taken.
    return f"fuse_{adapters[0]}" if len(adapters) == 1 else None


def _build_and_save_ours(model, root, case_id):
    """Random adapters, fusion and head here, written in AdapterHub's format; our outputs."""
    placement, count, config = CASES[case_id]
    adapters = _adapters(case_id, "to_adapterhub", count)
    rng = np.random.default_rng(list(CASES).index(case_id))
    for adapter in adapters:
        model.add_adapter(adapter, AdapterConfig(placement=placement, reduction_factor=2,
                                                 train_layer_norms=False))
        for part in model.backbone.layer_adapters(adapter).values():
            for weight in part.weights:
                weight.assign(rng.normal(0.0, 0.5, weight.shape))
        model.save_adapter(str(root / adapter), adapter, format="adapterhub")
    name = model.add_adapter_fusion(adapters, config, name=_one_adapter_name(adapters))
    model.add_classification_head(name, 2)
    for weight in [w for part in model.backbone.layer_fusions(name).values() for w in part.weights]:
        weight.assign(rng.normal(0.0, 0.5, weight.shape))
    for weight in model.heads[name].weights:
        weight.assign(rng.normal(0.0, 0.5, weight.shape))
    model.save_adapter_fusion(str(root / "fusion"), name, format="adapterhub")
    return name


def _outputs(model, name):
    model.set_active_adapters(name)
    inputs = _tiny_inputs()
    hidden = model.backbone(inputs)["sequence_output"]
    return {"logits": np.asarray(model(inputs)), "hidden": np.asarray(hidden)}


@pytest.fixture(scope="module")
def fusion_runs(tmp_path_factory):
    """`{(case, direction): (our outputs, AdapterHub's outputs)}`."""
    if importlib.util.find_spec("adapters") is None:
        pytest.skip("adapters is not installed (the test extra installs it)")
    root = tmp_path_factory.mktemp("fusion")
    folder = write_hf_folder(root / "bert", tiny_hf_tensors())
    ours = AdapterModel(_bare(folder))
    names = {case: _build_and_save_ours(ours, root / case / "to_adapterhub", case)
             for case in CASES}
    cases = [{"id": f"{case}/{direction}", "root": str(root / case / direction),
              "direction": direction, "placement": CASES[case][0],
              "adapters": _adapters(case, direction, CASES[case][1]), "config": CASES[case][2],
              "name": names[case]} for case in CASES for direction in DIRECTIONS]
    expected = run_torch_script(
        _SCRIPT, folder=folder, cases=cases,
        inputs={"input_ids": TOKEN_IDS, "token_type_ids": SEGMENT_IDS,
                "attention_mask": PADDING_MASK})
    runs = {}
    for case in CASES:
        runs[case, "to_adapterhub"] = (_outputs(ours, names[case]),
                                       expected[f"{case}/to_adapterhub"])
    # What AdapterHub built, loaded here into a fresh model.
    theirs = AdapterModel(_bare(folder))
    for case in CASES:
        folder = root / case / "from_adapterhub"
        adapters = _adapters(case, "from_adapterhub", CASES[case][1])
        for adapter in adapters:
            theirs.load_adapter(str(folder / adapter))
        name = theirs.load_adapter_fusion(str(folder / "fusion"),
                                          load_as=_one_adapter_name(adapters))
        runs[case, "from_adapterhub"] = (_outputs(theirs, name),
                                         expected[f"{case}/from_adapterhub"])
    return runs


def _bare(folder):
    """The tiny BERT as an adapter backbone without adapters."""
    return add_adapters(from_pretrained(folder)[0], name=None)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("case", list(CASES))
def test_fusion_computes_what_adapterhub_computes(fusion_runs, case, direction):
    ours, theirs = fusion_runs[case, direction]
    np.testing.assert_allclose(ours["hidden"], np.array(theirs["hidden"]), rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours["logits"], np.array(theirs["logits"]), rtol=0, atol=1e-5)
