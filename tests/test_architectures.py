"""Everything adapters do, on each keras-hub encoder architecture (tests/helpers.ARCHITECTURES).

Each test is written once and runs for BERT, RoBERTa, XLM-RoBERTa, DistilBERT
and ELECTRA on 2-layer, hidden-size-8 models.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

from keras_adapters import AdapterConfig, AdapterModel, add_adapters, freeze_for_adapter_tuning
from keras_adapters.data.pipeline import make_preprocessor, tokenize
from keras_adapters.models.adapter_backbone import AdapterBackbone
from keras_adapters.serving.export import export_text_classifier
from tests.helpers import (
    ARCHITECTURE_IDS,
    ARCHITECTURES,
    TEXTS_A,
    TEXTS_B,
    assert_outputs_equal,
    outputs_of,
    run_serialization_test,
    serve_in_fresh_process,
)

LAYERS = 2


@pytest.fixture(scope="module", params=ARCHITECTURES, ids=ARCHITECTURE_IDS)
def arch(request):
    return request.param


@pytest.fixture(scope="module")
def backbone(arch):
    return arch.backbone()


@pytest.fixture(scope="module")
def inputs(arch):
    return arch.inputs()


def _sequence(model, inputs, training=False):
    return model.features(model(inputs, training=training))["sequence_output"]


def test_adapters_keep_the_class_the_weights_and_the_outputs(arch, backbone, inputs):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4, initializer_std=0.0))
    assert isinstance(adapted, arch.backbone_cls) and isinstance(adapted, AdapterBackbone)
    assert adapted.architecture.name == arch.name
    source = {w.path: w.numpy() for w in backbone.weights}
    target = {w.path: w.numpy() for w in adapted.weights}
    added = {w.path for w in adapted.adapter_weights}
    assert set(target) == set(source) | added and not set(source) & added
    for path, value in source.items():
        np.testing.assert_array_equal(target[path], value, err_msg=path)
    expected = outputs_of(backbone, inputs)
    assert_outputs_equal(outputs_of(adapted, inputs), expected)  # Zero adapters: bit for bit.

    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4, initializer_std=0.5))
    changed = outputs_of(adapted, inputs)
    assert max(np.abs(changed[k] - expected[k]).max() for k in expected) > 1e-3
    adapted.set_drop_first_n(LAYERS)  # AdapterDrop of every layer: the backbone exactly.
    assert_outputs_equal(outputs_of(adapted, inputs), expected)
    adapted.set_drop_first_n(0)
    adapted.set_active_adapters(None)  # Inactive: the backbone exactly.
    assert_outputs_equal(outputs_of(adapted, inputs), expected)


@pytest.mark.parametrize("placement,per_layer", [("houlsby", 2), ("pfeiffer", 1), ("seq_bn", 1)])
def test_placement_freezing_and_a_training_step(arch, backbone, inputs, placement, per_layer):
    model = AdapterModel(add_adapters(backbone, AdapterConfig(adapter_size=4, placement=placement),
                                      name="task"))
    model.add_classification_head("task", num_classes=2)
    counts = model.train_adapter("task")
    adapters = model.backbone.adapters
    assert len(adapters) == LAYERS * per_layer
    layer_norm_copies = LAYERS * 2 * 2 * 8  # Two layer norms per layer, gamma and beta.
    head = 8 * 2 + 2
    assert counts.trainable == sum(a.count_params() for a in adapters) + layer_norm_copies + head
    assert counts.pretrained == backbone.count_params()
    if placement != "houlsby":
        return
    before = {w.path: w.numpy().copy() for w in model.weights}
    trainable = {w.path for w in model.trainable_weights}
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(inputs, np.array([0, 1, 1]), epochs=2, verbose=0)
    for weight in model.weights:
        changed = not np.array_equal(before[weight.path], weight.numpy())
        if weight.path not in trainable:
            assert not changed, f"frozen {weight.path} changed"
        elif "projection" in weight.path or "head_task" in weight.path:
            assert changed, f"{weight.path} did not train"


def test_specialised_and_robust_adapter_drop(arch, backbone, inputs):
    config = AdapterConfig(adapter_size=4, initializer_std=0.5)
    specialised = add_adapters(backbone, config, drop_first_n=1)
    reference = add_adapters(backbone, AdapterConfig(adapter_size=4, leave_out=(0,)))
    reference.layer_adapters()[1].set_weights(specialised.layer_adapters()[1].get_weights())
    train = tf.function(lambda: _sequence(specialised, inputs, training=True))
    conds = [op for op in train.get_concrete_function().graph.get_operations()
             if op.type in ("If", "StatelessIf")]
    assert conds == []  # The depth is fixed when the training step is traced.
    expected = _sequence(reference, inputs).numpy()
    np.testing.assert_allclose(train().numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(_sequence(specialised, inputs), expected, atol=1e-5)

    robust = add_adapters(backbone, config, robust_adapter_drop=True, seed=3)
    robust.layer_adapters()[1].set_weights(specialised.layer_adapters()[1].get_weights())
    robust.layer_adapters()[0].set_weights(specialised.layer_adapters()[0].get_weights())
    robust.set_drop_first_n(1)
    np.testing.assert_array_equal(_sequence(robust, inputs).numpy(),
                                  _sequence(specialised, inputs).numpy())
    step = tf.function(lambda: _sequence(robust, inputs, training=True))
    drawn = {round(float(np.abs(step().numpy() - expected).max()), 6) for _ in range(12)}
    assert len(drawn) == LAYERS  # Depths 0 and 1 drawn, each a different output.


def test_named_adapters_adapter_files_and_parallel_inference(arch, backbone, inputs, tmp_path):
    model = AdapterModel(add_adapters(backbone, AdapterConfig(adapter_size=4, initializer_std=0.3),
                                      name="a"))
    model.add_classification_head("a", 2)
    # AdapterHub's seq_bn: the adapter reads LN(h + x) (tests/test_adapterhub.py checks it).
    model.add_adapter("b", AdapterConfig(adapter_size=2, initializer_std=0.3, placement="seq_bn"))
    model.add_classification_head("b", 3)
    freeze_for_adapter_tuning(model, "b")
    single = {}
    for task in "ab":
        model.set_active_adapters(task)
        single[task] = model(inputs).numpy()
    assert not np.allclose(single["a"][:, :2], single["b"][:, :2])

    model.save_adapter(str(tmp_path / "b"), "b")
    assert model.load_adapter(str(tmp_path / "b"), load_as="b_copy", set_active=True) == "b_copy"
    np.testing.assert_array_equal(model(inputs).numpy(), single["b"])

    for n in range(LAYERS + 1):
        model.backbone.set_drop_first_n(n)
        both = model.parallel(["a", "b"], drop_first_n=n)(inputs)
        for task in "ab":
            model.set_active_adapters(task)
            np.testing.assert_allclose(both[task].numpy(), model(inputs).numpy(), atol=1e-5)


def test_keras_file_and_keras_hub_preset_round_trips(arch, backbone, inputs, tmp_path):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4, initializer_std=0.5),
                           name="sst2", drop_first_n=1)
    restored = run_serialization_test(adapted, inputs, tmp_path / "backbone.keras")
    assert type(restored) is type(adapted) and restored.drop_first_n == 1

    preset = str(tmp_path / "preset")
    tokenizer = arch.make_tokenizer()
    adapted.save_to_preset(preset)
    tokenizer.save_to_preset(preset)
    loaded = arch.backbone_cls.from_preset(preset)
    assert type(loaded) is type(adapted) and loaded.adapter_names == ["sst2"]
    assert_outputs_equal(outputs_of(loaded, inputs), outputs_of(adapted, inputs))
    loaded_tokenizer = type(tokenizer).from_preset(preset)
    assert isinstance(loaded_tokenizer, type(tokenizer))
    assert str(loaded_tokenizer(TEXTS_A)) == str(tokenizer(TEXTS_A))
    if arch.classifier_cls is not None:
        classifier = arch.classifier_cls.from_preset(preset, num_classes=2)
        assert isinstance(classifier, arch.classifier_cls)
        assert type(classifier.backbone) is type(adapted)
        assert_outputs_equal(outputs_of(classifier.backbone, inputs), outputs_of(adapted, inputs))
        classifier.preprocessor.sequence_length = 16  # The tiny models have 32 positions.
        assert classifier.predict(TEXTS_A, verbose=0).shape == (3, 2)


def test_raw_text_saved_models_with_the_drop_first_n_knob(tmp_path):
    """Every architecture exported as serving loads it, in one fresh process."""
    calls, expected = [], []
    for arch in ARCHITECTURES:
        model = AdapterModel(add_adapters(arch.backbone(),
                                          AdapterConfig(adapter_size=4, initializer_std=1.0)))
        head = model.add_classification_head("default", 1)  # Scores: the logits themselves.
        head.set_weights([w * 1000 for w in head.get_weights()])
        preprocessor = make_preprocessor(arch.make_tokenizer(), 16)
        export_dir = tmp_path / arch.name
        export_text_classifier(model, preprocessor, str(export_dir), is_pair=True,
                               is_regression=True)
        features = tokenize(preprocessor, tf.constant(TEXTS_A), tf.constant(TEXTS_B))
        texts = {"sentence1": TEXTS_A, "sentence2": TEXTS_B}
        scores = []
        for n in (0, LAYERS):
            model.backbone.set_drop_first_n(n)
            scores.append(model(features).numpy()[:, 0])
        assert np.abs(scores[0] - scores[1]).max() > 1e-2, arch.name  # The knob matters.
        model.backbone.set_drop_first_n(0)
        expected += scores
        calls += [(export_dir, "serving_default", texts),
                  (export_dir, "serving_adapter_drop", {**texts, "drop_first_n": LAYERS})]
    for outputs, scores in zip(serve_in_fresh_process(*calls), expected):
        np.testing.assert_allclose(outputs["scores"], scores, rtol=1e-5, atol=1e-4)
