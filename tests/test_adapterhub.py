"""AdapterHub adapter folders: written by `adapters` 1.3.0, loaded here, the same outputs.

A subprocess (`helpers.run_torch_script`: PyTorch, transformers and adapters
clash with TensorFlow in one process) puts random adapters on a tiny random BERT,
saves them in AdapterHub's format and records the model's outputs.
"""

import importlib.util
import json

import numpy as np
import pytest

from keras_adapters import (
    AdapterConfig,
    AdapterModel,
    ClassificationHead,
    from_pretrained,
    load_adapter,
    save_adapter,
)
from keras_adapters.saving.adapterhub import adapterhub_head
from tests.helpers import (
    ARCHITECTURES,
    HF_MODELS_SCRIPT,
    TEXTS_A,
    run_serialization_test,
    run_torch_script,
    tiny_hf_tensors,
    tokenizer_folders,
    write_hf_folder,
)

_ADAPTERHUB_SCRIPT = """
import json, sys
import torch, adapters
from adapters import BnConfig, DoubleSeqBnConfig, ParBnConfig, SeqBnConfig

args = json.load(sys.stdin)
CONFIGS = {
    "houlsby": DoubleSeqBnConfig(reduction_factor=2, non_linearity="gelu"),
    "houlsby_swish": DoubleSeqBnConfig(reduction_factor={"1": 2, "default": 4}),
    "feedforward_gelu_new": BnConfig(mh_adapter=False, output_adapter=True, reduction_factor=2,
                                     non_linearity="gelu_new", original_ln_before=False,
                                     leave_out=[0]),
    "bin_relu": DoubleSeqBnConfig(reduction_factor=2, non_linearity="relu"),
    "seq_bn": SeqBnConfig(reduction_factor=2),
    "double_ln_before": DoubleSeqBnConfig(reduction_factor=2, original_ln_before=True),
    "par_bn": ParBnConfig(reduction_factor=2),
    "par_bn_learned": ParBnConfig(reduction_factor=2, scaling="learned", ln_after=True,
                                  use_gating=True),
    # ln_before holds one layer norm under two names: AdapterHub saves it as .bin only.
    "bin_seq_bn_residual_after_ln": SeqBnConfig(reduction_factor=2, residual_before_ln=False,
                                                ln_before=True, scaling=0.5),
    "seq_bn_post_add": SeqBnConfig(reduction_factor=2, residual_before_ln="post_add",
                                   scaling="channel", use_gating=True),
    "seq_bn_no_ln_after": SeqBnConfig(reduction_factor=2, original_ln_after=False,
                                      dropout=0.3),  # Training only: no change here.
    "bin_houlsby_ln_after": DoubleSeqBnConfig(reduction_factor=2, ln_after=True,
                                              ln_before=True, adapter_residual_before_ln=True),
    "double_no_ln_after": DoubleSeqBnConfig(reduction_factor=2, original_ln_after=False,
                                            ln_after=True),
}
# AdapterHub's default head (2 layers, tanh, first token); a one-label regression
# head on BERT's pooler; a 3-layer ReLU head.
HEADS = {"houlsby": dict(num_labels=3),
         "houlsby_swish": dict(num_labels=1, layers=1, use_pooler=True),
         "bin_relu": dict(num_labels=2, layers=3, activation_function="relu"),
         "seq_bn": dict(num_labels=2)}
model = adapters.BertAdapterModel.from_pretrained(args["folder"]).eval()
ids = torch.tensor(args["token_ids"])
mask = torch.tensor(args["padding_mask"])
outputs = {}
for name, config in CONFIGS.items():
    model.add_adapter(name, config=config)
    if name in HEADS:
        model.add_classification_head(name, **HEADS[name])
    torch.manual_seed(len(outputs))
    with torch.no_grad():
        for key, value in model.named_parameters():
            if f".adapters.{name}." in key or key.startswith(f"heads.{name}."):
                value.normal_(0.0, 0.5)  # Far from the identity, so a mistake shows.
    model.save_adapter(f"{args['root']}/{name}", name, use_safetensors=not name.startswith("bin"))
    model.set_active_adapters(name)
    with torch.no_grad():
        result = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    outputs[name] = {"hidden": result.hidden_states[-1].tolist(),
                     "logits": result.logits.tolist() if name in HEADS else None}
    model.set_active_adapters(name, skip_layers=[0])  # AdapterDrop of the lowest layer.
    with torch.no_grad():
        result = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    outputs[name]["hidden_skip_0"] = result.hidden_states[-1].tolist()
json.dump(outputs, sys.stdout)
"""

TOKEN_IDS = [[2, 5, 6, 7, 8, 9, 3], [2, 10, 11, 3, 0, 0, 0]]
PADDING_MASK = [[1] * 7, [1, 1, 1, 1, 0, 0, 0]]


@pytest.fixture(scope="module")
def adapterhub(tmp_path_factory):
    """`(tiny BERT folder, adapters root, {adapter: AdapterHub's last hidden state})`."""
    if importlib.util.find_spec("adapters") is None:
        pytest.skip("adapters is not installed (the test extra installs it)")
    root = tmp_path_factory.mktemp("adapterhub")
    folder = write_hf_folder(root / "bert", tiny_hf_tensors())
    outputs = run_torch_script(_ADAPTERHUB_SCRIPT, folder=folder, root=str(root),
                               token_ids=TOKEN_IDS, padding_mask=PADDING_MASK)
    return folder, root, outputs


@pytest.mark.parametrize("name", ["houlsby", "houlsby_swish", "feedforward_gelu_new", "bin_relu",
                                  "seq_bn", "double_ln_before", "par_bn", "par_bn_learned",
                                  "bin_seq_bn_residual_after_ln", "seq_bn_post_add",
                                  "seq_bn_no_ln_after", "bin_houlsby_ln_after",
                                  "double_no_ln_after"])
def test_adapterhub_adapters_compute_here_what_they_compute_there(adapterhub, name):
    folder, root, expected = adapterhub
    backbone, _ = from_pretrained(folder)
    plain = np.asarray(backbone(_inputs())["sequence_output"])
    model = AdapterModel(backbone)
    assert model.load_adapter(str(root / name), set_active=True) == name
    actual = np.asarray(backbone(_inputs())["sequence_output"])
    mask = np.array(PADDING_MASK, bool)
    np.testing.assert_allclose(actual[mask], np.array(expected[name]["hidden"])[mask], rtol=0,
                               atol=1e-5)
    assert np.abs(actual - plain)[mask].max() > 0.1  # The adapter changes the outputs.
    if expected[name]["logits"] is not None:  # The head, too.
        np.testing.assert_allclose(np.asarray(model(_inputs())), expected[name]["logits"],
                                   rtol=0, atol=1e-5)
    else:
        assert name not in model.heads
    # AdapterHub's skip_layers=[0] is our drop_first_n=1.
    backbone.set_drop_first_n(1)
    dropped = np.asarray(backbone(_inputs())["sequence_output"])
    np.testing.assert_allclose(dropped[mask], np.array(expected[name]["hidden_skip_0"])[mask],
                               rtol=0, atol=1e-5)
    if 0 not in backbone.adapter_configs[name]["leave_out"]:  # Layer 0 has one to drop.
        assert np.abs(dropped - actual)[mask].max() > 1e-3


def test_a_model_with_an_adapterhub_head_round_trips_through_keras_files(adapterhub, tmp_path):
    backbone, _ = from_pretrained(adapterhub[0])
    model = AdapterModel(backbone)
    model.load_adapter(str(adapterhub[1] / "bin_relu"), set_active=True)  # A 3-layer ReLU head.
    head = model.heads["bin_relu"]
    assert (head.layers, head.activation, head.use_pooler) == (3, "relu", False)
    run_serialization_test(model, _inputs(), tmp_path / "model.keras")


def test_an_adapterhub_head_is_ignored_when_loading_into_a_backbone(adapterhub):
    folder, root, expected = adapterhub
    backbone, _ = from_pretrained(folder)
    assert load_adapter(backbone, str(root / "houlsby")) == "houlsby"
    backbone.set_active_adapters("houlsby")
    np.testing.assert_allclose(np.asarray(backbone(_inputs())["sequence_output"])[0],
                               np.array(expected["houlsby"]["hidden"])[0], rtol=0, atol=1e-5)


def _inputs():
    return {"token_ids": np.array(TOKEN_IDS, "int32"),
            "segment_ids": np.zeros((2, 7), "int32"),
            "padding_mask": np.array(PADDING_MASK, "int32")}


@pytest.mark.parametrize("field,value,message", [
    ("stochastic_depth", 0.1, r"'config\.stochastic_depth' is 0\.1: not supported yet"),
    ("phm_layer", True, r"'config\.phm_layer' is True: not supported yet"),
    ("residual_before_ln", "pre_add", r"adapter_config\.json: residual_before_ln must be one"),
    ("scaling", "vector", r"adapter_config\.json: scaling must be a number or one of"),
    ("non_linearity", "leakyrelu", r"'config\.non_linearity' is 'leakyrelu': expected one of"),
    ("reduction_factor", {"0": 2},
     r"'config\.reduction_factor' is .*: no entry for layer 1 and no 'default'"),
    ("reduction_factor", "16", r"'config\.reduction_factor' is '16': expected a positive"),
    ("mystery", 1, r"'config\.mystery' is 1: unknown field"),
])
def test_unsupported_adapterhub_configurations_name_the_field(adapterhub, tmp_path, field, value,
                                                               message):
    folder, root, _ = adapterhub
    saved = json.loads((root / "houlsby" / "adapter_config.json").read_text())
    saved["config"][field] = value
    (tmp_path / "adapter_config.json").write_text(json.dumps(saved))
    backbone, _ = from_pretrained(folder)
    with pytest.raises(ValueError, match=message):
        load_adapter(backbone, str(tmp_path))
    assert backbone.adapter_configs == {}


_LOAD_IN_ADAPTERHUB = """
import json, sys
import torch, adapters

args = json.load(sys.stdin)
model = adapters.BertAdapterModel.from_pretrained(args["folder"]).eval()
outputs = {}
for name, directory in args["adapters"].items():
    assert model.load_adapter(directory, use_safetensors=True) == name
    model.set_active_adapters(name)
    with torch.no_grad():
        result = model(input_ids=torch.tensor(args["token_ids"]),
                       attention_mask=torch.tensor(args["padding_mask"]),
                       output_hidden_states=True)
    outputs[name] = {"hidden": result.hidden_states[-1].tolist(),
                     "logits": result.logits.tolist()}
json.dump(outputs, sys.stdout)
"""

# Ours, saved for AdapterHub: a size that does not divide the hidden size (8 // (8 / 5)
# is 4), the tanh GELU; feed-forward only with SiLU ("swish") and a layer left out.
OURS = {
    "ours_houlsby": AdapterConfig(adapter_size=5, activation="gelu_approximate",
                                  train_layer_norms=False),
    "ours_feedforward": AdapterConfig(reduction_factor=2, placement="pfeiffer",
                                      activation="silu", train_layer_norms=False,
                                      leave_out=(1,)),
    "ours_seq_bn": AdapterConfig(reduction_factor=2, placement="seq_bn", activation="relu",
                                 train_layer_norms=False),
    # AdapterHub's other fields; sizes per layer (8 // (8 / 3.5) is 3).
    "ours_par_bn": AdapterConfig(reduction_factor=2, placement="par_bn", activation="relu",
                                 scaling="channel", use_gating=True, train_layer_norms=False),
    "ours_seq_bn_layer_norms": AdapterConfig(
        adapter_size={"0": 3, "default": 5}, placement="seq_bn", ln_before=True, ln_after=True,
        residual_before_ln="post_add", init_weights="bert", train_layer_norms=False),
    "ours_no_ln_after": AdapterConfig(reduction_factor={"1": 4, "default": 2},
                                      original_ln_after=False, scaling="learned",
                                      adapter_residual_before_ln=True, ln_after=True,
                                      train_layer_norms=False),
}


OUR_HEADS = {  # AdapterHub's default shape, and ours: one dense layer on the pooler.
    "ours_houlsby": dict(num_classes=3, layers=2, use_pooler=False),
    "ours_feedforward": dict(num_classes=1),
    "ours_seq_bn": dict(num_classes=2, layers=2, use_pooler=False),
    "ours_par_bn": dict(num_classes=2, layers=2, use_pooler=False),
    "ours_seq_bn_layer_norms": dict(num_classes=2, layers=2, use_pooler=False),
    "ours_no_ln_after": dict(num_classes=2, layers=2, use_pooler=False),
}


def test_adapters_saved_for_adapterhub_compute_there_what_they_compute_here(adapterhub,
                                                                            tmp_path):
    folder, _, _ = adapterhub
    backbone, _ = from_pretrained(folder)
    model = AdapterModel(backbone)
    rng = np.random.default_rng(0)
    expected, directories = {}, {}
    for name, config in OURS.items():
        model.add_adapter(name, config)
        model.add_head(name, ClassificationHead(**OUR_HEADS[name], name=f"head_{name}"))
        model.set_active_adapters(name)
        weights = [w for part in backbone.layer_adapters(name).values() for w in part.weights]
        for weight in weights + model.heads[name].weights:
            weight.assign(rng.normal(0.0, 0.5, weight.shape).astype("float32"))
        expected[name] = (np.asarray(backbone(_inputs())["sequence_output"]),
                          np.asarray(model(_inputs())))
        directories[name] = str(tmp_path / name)
        save_adapter(model, directories[name], name, format="adapterhub")
    actual = run_torch_script(_LOAD_IN_ADAPTERHUB, folder=folder, adapters=directories,
                              token_ids=TOKEN_IDS, padding_mask=PADDING_MASK)
    mask = np.array(PADDING_MASK, bool)
    for name, (hidden, logits) in expected.items():
        np.testing.assert_allclose(np.array(actual[name]["hidden"])[mask], hidden[mask], rtol=0,
                                   atol=1e-5, err_msg=name)
        np.testing.assert_allclose(actual[name]["logits"], logits, rtol=0, atol=1e-5,
                                   err_msg=name)


def test_adapters_adapterhub_cannot_hold_are_refused_by_name(adapterhub, tmp_path):
    backbone, _ = from_pretrained(adapterhub[0])
    backbone.add_adapter("own_layer_norms", AdapterConfig(adapter_size=2))
    with pytest.raises(ValueError, match="'own_layer_norms' has train_layer_norms=True"):
        save_adapter(backbone, str(tmp_path / "a"), "own_layer_norms", format="adapterhub")
    backbone.add_adapter("elu", AdapterConfig(adapter_size=2, activation="elu",
                                              train_layer_norms=False))
    with pytest.raises(ValueError, match="activation 'elu', which AdapterHub lacks"):
        save_adapter(backbone, str(tmp_path / "b"), "elu", format="adapterhub")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_pooler_heads_are_written_as_adapterhub_computes_them():
    head = ClassificationHead(num_classes=2, use_pooler=True)
    head.build({"sequence_output": (None, None, 8), "pooled_output": (None, 8)})
    tensors = {f"head/{w.path.split('/', 1)[1]}": w.numpy() for w in head.weights}
    # Without a pooler here, pooled_output is the first token's state: AdapterHub's
    # use_pooler=False.
    config, _ = adapterhub_head(head, tensors, "t", 8, "roberta", has_pooler=False)
    assert config["config"]["use_pooler"] is False
    config, _ = adapterhub_head(head, tensors, "t", 8, "bert")
    assert config["config"]["use_pooler"] is True
    with pytest.raises(ValueError, match="reads keras-hub's pooler, which AdapterHub's "
                                         "ElectraAdapterModel lacks"):
        adapterhub_head(head, tensors, "t", 8, "electra")


def test_a_hub_id_is_fetched_with_huggingface_hub(adapterhub, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    folder, root, expected = adapterhub
    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id: asked.append(repo_id) or str(root / "houlsby"))
    backbone, _ = from_pretrained(folder)
    assert load_adapter(backbone, "AdapterHub/tiny-bert-houlsby") == "houlsby"
    assert asked == ["AdapterHub/tiny-bert-houlsby"]
    backbone.set_active_adapters("houlsby")
    np.testing.assert_allclose(np.asarray(backbone(_inputs())["sequence_output"])[0],
                               np.array(expected["houlsby"]["hidden"])[0], rtol=0, atol=1e-5)

    def offline(repo_id):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match="'AdapterHub/other' is not a folder, and fetching "
                                                "it from the Hugging Face Hub failed: no network"):
        load_adapter(backbone, "AdapterHub/other")


def test_adapter_transformers_weight_names_and_other_methods(adapterhub, tmp_path):
    import safetensors.numpy

    folder, root, expected = adapterhub
    saved = json.loads((root / "houlsby" / "adapter_config.json").read_text())
    tensors = safetensors.numpy.load_file(str(root / "houlsby" / "adapter.safetensors"))
    legacy = {key.replace("attention.output.adapters.", "attention.output.attention_text_task_"
                          "adapters.").replace(".output.adapters.", ".output.layer_text_task_"
                                               "adapters."): value
              for key, value in tensors.items()}
    assert legacy.keys() != tensors.keys()
    (tmp_path / "legacy").mkdir()
    (tmp_path / "legacy" / "adapter_config.json").write_text(json.dumps(saved))
    safetensors.numpy.save_file(legacy, str(tmp_path / "legacy" / "adapter.safetensors"))
    backbone, _ = from_pretrained(folder)
    backbone.set_active_adapters(load_adapter(backbone, str(tmp_path / "legacy")))
    np.testing.assert_allclose(np.asarray(backbone(_inputs())["sequence_output"])[0],
                               np.array(expected["houlsby"]["hidden"])[0], rtol=0, atol=1e-5)
    saved["config"]["architecture"] = "lora"
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"'config\.architecture' is 'lora': only bottleneck"):
        load_adapter(backbone, str(tmp_path / "lora"))


_ARCHITECTURES_SCRIPT = HF_MODELS_SCRIPT + """
import adapters
from adapters.composition import Fuse

args = json.load(sys.stdin)


def run(model, name, tokenizer, head=None):
    model.set_active_adapters(name)
    model.active_head = head or name
    batch = tokenizer(args["texts"], padding=True, return_tensors="pt")
    with torch.no_grad():
        result = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       output_hidden_states=True)
    return {"token_ids": batch["input_ids"].tolist(),
            "padding_mask": batch["attention_mask"].tolist(),
            "hidden": result.hidden_states[-1].tolist(), "logits": result.logits.tolist()}


outputs = {}
for arch, folder in args["folders"].items():
    if args["ours"]:  # Load ours, written for AdapterHub.
        tokenizer = CONFIGS[arch][1].from_pretrained(folder)
        model = adapters.AutoAdapterModel.from_pretrained(folder).eval()
        assert model.load_adapter(args["ours"][arch], use_safetensors=True) == "ours"
        outputs[arch] = run(model, "ours", tokenizer)
        for fused in ("o1", "o2"):
            model.load_adapter(f"{args['ours'][arch]}_{fused}", use_safetensors=True)
        model.load_adapter_fusion(f"{args['ours'][arch]}_fusion", use_safetensors=True)
        outputs[arch + "/fusion"] = run(model, Fuse("o1", "o2"), tokenizer, head="o1,o2")
        continue
    tokenizer, _ = random_hf_model(arch, folder)
    model = adapters.AutoAdapterModel.from_pretrained(folder).eval()
    model.add_adapter("theirs", config=adapters.DoubleSeqBnConfig(
        reduction_factor=2, original_ln_before=True, residual_before_ln=False))
    model.add_classification_head("theirs", num_labels=3)
    torch.manual_seed(0)
    with torch.no_grad():
        for key, value in model.named_parameters():
            if ".adapters.theirs." in key or key.startswith("heads.theirs."):
                value.normal_(0.0, 0.5)
    model.save_adapter(folder + "_theirs", "theirs", use_safetensors=True)
    outputs[arch] = run(model, "theirs", tokenizer)
    # A fusion over it and a second adapter, with a head.
    model.add_adapter("theirs2", config=adapters.DoubleSeqBnConfig(
        reduction_factor=2, original_ln_before=True, residual_before_ln=False))
    model.add_adapter_fusion(Fuse("theirs", "theirs2"))
    model.add_classification_head("theirs,theirs2", num_labels=2)
    with torch.no_grad():
        for key, value in model.named_parameters():
            if any(part in key for part in (".adapters.theirs2.", "adapter_fusion_layer.theirs,",
                                            "heads.theirs,")):
                value.normal_(0.0, 0.5)
    model.save_adapter(folder + "_theirs2", "theirs2", use_safetensors=True)
    model.save_adapter_fusion(folder + "_fusion", "theirs,theirs2", with_head=True,
                              use_safetensors=True)
    outputs[arch + "/fusion"] = run(model, Fuse("theirs", "theirs2"), tokenizer,
                                    head="theirs,theirs2")
json.dump(outputs, sys.stdout)
"""


def test_every_architecture_reads_and_writes_adapterhub_adapters(tmp_path):
    if importlib.util.find_spec("adapters") is None:
        pytest.skip("adapters is not installed (the test extra installs it)")
    folders = tokenizer_folders(tmp_path)
    theirs = run_torch_script(_ARCHITECTURES_SCRIPT, folders=folders, texts=TEXTS_A, ours={})
    rng = np.random.default_rng(0)
    ours, expected = {}, {}
    for arch in ARCHITECTURES:
        backbone, _ = from_pretrained(folders[arch.name])
        model = AdapterModel(backbone)
        run = theirs[arch.name]
        inputs = {"token_ids": np.array(run["token_ids"], "int32"),
                  "padding_mask": np.array(run["padding_mask"], "int32")}
        if "segment_ids" in backbone.input:
            inputs["segment_ids"] = np.zeros_like(inputs["token_ids"])
        kept = inputs["padding_mask"] == 1  # RoBERTa numbers padded positions otherwise.
        model.load_adapter(folders[arch.name] + "_theirs", set_active=True)
        hidden = backbone.features(backbone(inputs))["sequence_output"]
        np.testing.assert_allclose(np.asarray(hidden)[kept], np.array(run["hidden"])[kept],
                                   rtol=0, atol=1e-5, err_msg=arch.name)
        np.testing.assert_allclose(np.asarray(model(inputs)), run["logits"], rtol=0, atol=1e-5,
                                   err_msg=arch.name)
        model.load_adapter(folders[arch.name] + "_theirs2")
        fusion = model.load_adapter_fusion(folders[arch.name] + "_fusion", set_active=True)
        np.testing.assert_allclose(np.asarray(model(inputs)), theirs[f"{arch.name}/fusion"]["logits"],
                                   rtol=0, atol=1e-5, err_msg=f"{arch.name} fusion")
        ours[arch.name] = str(tmp_path / f"{arch.name}_ours")
        _add_our_fusion(model, rng, ours[arch.name])
        expected[f"{arch.name}/fusion"] = (None, np.asarray(model(inputs)), kept)
        assert fusion == "theirs,theirs2"
        # No gating: it averages over padding too, and RoBERTa's padded positions are
        # numbered otherwise in Hugging Face (the BERT tests above check gating).
        model.add_adapter("ours", AdapterConfig(
            reduction_factor=2, placement="par_bn", activation="relu", scaling="learned",
            train_layer_norms=False))
        model.add_head("ours", ClassificationHead(num_classes=2, layers=2, use_pooler=False,
                                                  name="head_ours"))
        model.set_active_adapters("ours")
        for weight in [w for part in backbone.layer_adapters("ours").values()
                       for w in part.weights] + model.heads["ours"].weights:
            weight.assign(rng.normal(0.0, 0.5, weight.shape).astype("float32"))
        hidden = backbone.features(backbone(inputs))["sequence_output"]
        expected[arch.name] = (np.asarray(hidden)[kept], np.asarray(model(inputs)), kept)
        save_adapter(model, ours[arch.name], "ours", format="adapterhub")
    actual = run_torch_script(_ARCHITECTURES_SCRIPT, folders=folders, texts=TEXTS_A, ours=ours)
    for name, (hidden, logits, kept) in expected.items():
        if hidden is not None:
            np.testing.assert_allclose(np.array(actual[name]["hidden"])[kept], hidden, rtol=0,
                                       atol=1e-5, err_msg=name)
        np.testing.assert_allclose(actual[name]["logits"], logits, rtol=0, atol=1e-5,
                                   err_msg=name)


def _add_our_fusion(model, rng, folder):
    """Random seq_bn adapters "o1", "o2", a random fusion over them with a head, active, and
    all three written for AdapterHub under `folder` + `_o1`, `_o2`, `_fusion`."""
    for adapter in ("o1", "o2"):
        model.add_adapter(adapter, AdapterConfig(reduction_factor=2, placement="seq_bn",
                                                 train_layer_norms=False))
    fusion = model.add_adapter_fusion(["o1", "o2"], set_active=True)
    model.add_head(fusion, ClassificationHead(num_classes=2, layers=2, use_pooler=False,
                                              name="head_o1.o2"))
    backbone = model.backbone
    parts = [*backbone.layer_adapters("o1").values(), *backbone.layer_adapters("o2").values(),
             *backbone.layer_fusions(fusion).values(), model.heads[fusion]]
    for weight in [w for part in parts for w in part.weights]:
        weight.assign(rng.normal(0.0, 0.5, weight.shape).astype("float32"))
    for adapter in ("o1", "o2"):
        save_adapter(model, f"{folder}_{adapter}", adapter, format="adapterhub")
    model.save_adapter_fusion(f"{folder}_fusion", fusion, format="adapterhub")
