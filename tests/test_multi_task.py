"""Many tasks on one backbone: named adapters, heads, adapter files, parallel inference."""

import json
import os

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

from keras_adapters.configuration.adapter_config import AdapterConfig
from keras_adapters.data.pipeline import make_preprocessor, tokenize
from keras_adapters.models.adapter_backbone import add_adapters
from keras_adapters.models.adapter_model import AdapterModel
from keras_adapters.saving.adapter_files import CONFIG_FILE, WEIGHTS_FILE
from keras_adapters.serving.export import export_multi_task
from tests.helpers import serve_in_fresh_process

LAYERS, HIDDEN = 3, 16
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the a cat dog sat on mat big".split()


def _bert(seed=0, **overrides):
    keras.utils.set_random_seed(seed)
    config = dict(vocabulary_size=len(VOCAB), num_layers=LAYERS, num_heads=2,
                  hidden_dim=HIDDEN, intermediate_dim=32, max_sequence_length=24, dropout=0.0)
    config.update(overrides)
    return keras_hub.models.BertBackbone(**config)


@pytest.fixture(scope="module")
def backbone():
    return _bert()


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    mask = np.ones((4, 10), "int32")
    mask[1, 6:] = 0
    return {
        "token_ids": rng.integers(0, len(VOCAB), (4, 10)).astype("int32") * mask,
        "segment_ids": np.concatenate([np.zeros((4, 5)), np.ones((4, 5))], 1).astype("int32"),
        "padding_mask": mask,
    }


def _three_tasks(backbone):
    """Tasks a (houlsby, 2 classes), b (size 8, 3 classes), c (pfeiffer, no LN training, 1)."""
    model = AdapterModel(add_adapters(
        backbone, AdapterConfig(adapter_size=4, initializer_std=0.3), name="a"))
    model.add_classification_head("a", 2)
    model.add_adapter("b", AdapterConfig(adapter_size=8, initializer_std=0.3))
    model.add_classification_head("b", 3)
    model.add_adapter("c", AdapterConfig(adapter_size=4, initializer_std=0.3,
                                         placement="pfeiffer", train_layer_norms=False))
    model.add_classification_head("c", 1)
    for task in "abc":  # Layer-norm copies away from the pretrained values.
        for layer in model.backbone.layer_adapters(task).values():
            for weight in layer.weights:
                if "layer_norm" in weight.path:
                    weight.assign(weight + np.random.default_rng(1).normal(0, 0.1, weight.shape))
    return model


def _sequence(model, inputs):
    return np.asarray(model(inputs, training=False)["sequence_output"])


def test_adapters_are_independent_and_none_is_the_backbone(backbone, inputs):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4, initializer_std=0.3), name="a")
    before = _sequence(adapted, inputs)
    adapted.add_adapter("b", AdapterConfig(adapter_size=8, initializer_std=0.3))
    np.testing.assert_array_equal(_sequence(adapted, inputs), before)  # a still runs.
    adapted.set_active_adapters("b")
    assert np.abs(_sequence(adapted, inputs) - before).max() > 1e-3
    adapted.set_active_adapters(None)
    np.testing.assert_array_equal(_sequence(adapted, inputs), _sequence(backbone, inputs))
    adapted.remove_adapter("a")
    assert adapted.adapter_names == ["b"]
    assert not any("adapter_a" in w.path for w in adapted.weights)


def test_bad_names_raise(backbone):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4), name="a")
    with pytest.raises(ValueError, match="already exists"):
        adapted.add_adapter("a")
    with pytest.raises(ValueError, match="No adapter or AdapterFusion named 'x'"):
        adapted.set_active_adapters("x")
    with pytest.raises(ValueError, match="Adapter names"):
        adapted.add_adapter("a/b")
    with pytest.raises(ValueError, match="beyond"):
        adapted.add_adapter("z", AdapterConfig(adapter_size=4, leave_out=(LAYERS,)))
    assert adapted.adapter_names == ["a"]


def test_training_one_task_leaves_the_others_and_the_backbone_bit_identical(backbone, inputs):
    model = _three_tasks(backbone)
    counts = model.train_adapter("b")
    model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {w.path: w.numpy().copy() for w in model.weights}
    trained = {w.path for w in model.trainable_weights}
    model.fit(inputs, np.array([0, 1, 2, 1]), epochs=2, verbose=0)
    changed = {w.path for w in model.weights if not np.array_equal(before[w.path], w.numpy())}
    assert changed == trained
    assert all("/adapter_b/" in p or p.startswith("head_b/") for p in changed)
    assert any("layer_norm" in p for p in changed)  # b trains its own layer-norm copies.
    assert counts.trainable == sum(int(np.prod(before[p].shape)) for p in trained)


def test_adapter_file_round_trip_restores_outputs_on_another_model(backbone, inputs, tmp_path):
    model = _three_tasks(backbone)
    for task in "abc":
        model.save_adapter(str(tmp_path / task), task)
    other = AdapterModel(add_adapters(backbone, AdapterConfig(adapter_size=2), name="x"))
    for task in "abc":
        assert other.load_adapter(str(tmp_path / task), load_as=f"{task}2") == f"{task}2"
    for task in "abc":
        model.set_active_adapters(task)
        other.set_active_adapters(f"{task}2")
        np.testing.assert_array_equal(other.predict(inputs, verbose=0),
                                      model.predict(inputs, verbose=0))
    config = json.loads((tmp_path / "a" / CONFIG_FILE).read_text())
    assert config["backbone"]["hidden_dim"] == HIDDEN and config["name"] == "a"
    assert len(config["backbone"]["vocabulary_sha256"]) == 64


def test_adapter_file_is_under_5_percent_of_minilm(tmp_path):
    minilm = _bert(vocabulary_size=30522, num_layers=6, num_heads=12, hidden_dim=384,
                   intermediate_dim=1536, max_sequence_length=512)
    model = AdapterModel(add_adapters(minilm, AdapterConfig(adapter_size=64), name="mrpc"))
    model.add_classification_head("mrpc", 2)
    model.save_adapter(str(tmp_path / "mrpc"), "mrpc")
    size = os.path.getsize(tmp_path / "mrpc" / WEIGHTS_FILE)
    backbone_bytes = 4 * minilm.count_params()
    assert size < 0.05 * backbone_bytes, (size, backbone_bytes)


@pytest.mark.parametrize("other", [
    dict(seed=1),  # Same shapes, other weights: the vocabulary hash differs.
    dict(num_layers=LAYERS + 1),
])
def test_loading_onto_another_backbone_raises_and_changes_nothing(backbone, tmp_path, other):
    model = _three_tasks(backbone)
    model.save_adapter(str(tmp_path / "a"), "a")
    target = AdapterModel(add_adapters(_bert(**other), AdapterConfig(adapter_size=2), name="x"))
    weights = len(target.weights)
    with pytest.raises(ValueError, match=f"{CONFIG_FILE}: field 'backbone\\."):
        target.load_adapter(str(tmp_path / "a"))
    assert target.backbone.adapter_names == ["x"] and not target.heads
    assert len(target.weights) == weights


def test_save_adapter_replaces_an_existing_folder(backbone, tmp_path):
    model = _three_tasks(backbone)
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "stale.txt").write_text("old")
    model.save_adapter(str(folder), "a")
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def _separate(model, inputs, tasks, n):
    outputs = {}
    model.backbone.set_drop_first_n(n)
    for task in tasks:
        model.set_active_adapters(task)
        outputs[task] = model.predict(inputs, verbose=0)
    return outputs


@pytest.mark.parametrize("n", range(LAYERS + 1))
def test_parallel_equals_each_task_run_separately(backbone, inputs, n):
    model = _three_tasks(backbone)
    separate = _separate(model, inputs, "abc", n)
    parallel = model.parallel(["a", "b", "c"], drop_first_n=n)(inputs)
    assert set(parallel) == set("abc")
    for task in "abc":
        np.testing.assert_allclose(np.asarray(parallel[task]), separate[task], atol=1e-5)


def test_parallel_rejects_bad_task_lists(backbone):
    model = _three_tasks(backbone)
    for tasks in ([], ["a", "a"], ["a", "zz"]):
        with pytest.raises(ValueError):
            model.parallel(tasks, drop_first_n=1)
    with pytest.raises(ValueError, match="drop_first_n"):
        model.parallel(["a"], drop_first_n=LAYERS + 1)


def test_keras_round_trip_of_a_multi_task_model(backbone, inputs, tmp_path):
    model = _three_tasks(backbone)
    model.set_active_adapters("b")
    path = str(tmp_path / "multi.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.backbone.adapter_names == ["a", "b", "c"]
    assert restored.active_adapter == "b"
    for task in "abc":
        model.set_active_adapters(task)
        restored.set_active_adapters(task)
        np.testing.assert_array_equal(restored.predict(inputs, verbose=0),
                                      model.predict(inputs, verbose=0))


def test_one_saved_model_serves_every_task_from_raw_text(backbone, tmp_path):
    model = _three_tasks(backbone)
    parallel = model.parallel(["a", "b", "c"], drop_first_n=1)
    preprocessor = make_preprocessor(keras_hub.models.BertTokenizer(vocabulary=VOCAB), 24)
    export_multi_task(parallel, preprocessor, str(tmp_path / "export"), is_pair=True)
    first = ["the cat sat on the mat", "a big dog", ""]
    second = ["the dog", "a cat sat", "big"]
    expected = parallel(tokenize(preprocessor, tf.constant(first), tf.constant(second)))
    outputs, = serve_in_fresh_process(
        (tmp_path / "export", "serving_default", {"sentence1": first, "sentence2": second}))
    assert outputs.pop("__signatures__") == ["serving_default"]  # Its depth is fixed at export.
    assert set(outputs) == {"a_probabilities", "b_probabilities", "c_scores"}
    for task in "ab":
        np.testing.assert_allclose(outputs[f"{task}_probabilities"],
                                   tf.nn.softmax(expected[task]), atol=1e-5)
    np.testing.assert_allclose(outputs["c_scores"], np.asarray(expected["c"])[:, 0], atol=1e-5)
