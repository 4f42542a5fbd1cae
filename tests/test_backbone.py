"""add_adapters, AdapterDrop and freezing on keras-hub BERT backbones."""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from keras_adapters import AdapterBertBackbone
from keras_adapters.configuration.adapter_config import AdapterConfig
from keras_adapters.layers.adapter_drop import AdapterDrop
from keras_adapters.models.adapter_backbone import add_adapters
from keras_adapters.models.freezing import count_parameters, freeze_for_adapter_tuning

HIDDEN, LAYERS = 16, 3


@pytest.fixture(scope="module")
def backbone():
    keras.utils.set_random_seed(0)
    return keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=LAYERS, num_heads=2, hidden_dim=HIDDEN,
        intermediate_dim=32, max_sequence_length=24, dropout=0.0)


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    mask = np.ones((3, 12), "int32")
    mask[1, 7:] = 0
    return {
        "token_ids": rng.integers(0, 50, (3, 12)).astype("int32") * mask,
        "segment_ids": np.concatenate([np.zeros((3, 6)), np.ones((3, 6))], 1).astype("int32"),
        "padding_mask": mask,
    }


def _outputs(model, inputs):
    return {k: np.asarray(v) for k, v in model(inputs, training=False).items()}


def test_zero_initialised_adapters_are_bit_identical(backbone, inputs):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4, initializer_std=0.0))
    expected, actual = _outputs(backbone, inputs), _outputs(adapted, inputs)
    for key in expected:
        assert np.array_equal(expected[key], actual[key]), key


def test_pretrained_weights_are_copied_exactly(backbone):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4))
    source = {w.path: w.numpy() for w in backbone.weights}
    target = {w.path: w.numpy() for w in adapted.weights}
    for path, value in source.items():
        assert np.array_equal(target[path], value), path
    assert isinstance(adapted, keras_hub.models.BertBackbone)


@pytest.mark.parametrize("placement,per_layer", [("houlsby", 2), ("pfeiffer", 1)])
def test_placement_and_parameter_counts(backbone, placement, per_layer):
    m = 4
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=m, placement=placement))
    assert len(adapted.adapters) == LAYERS * per_layer
    counts = count_parameters(adapted)
    assert counts.pretrained == backbone.count_params()
    adapters = LAYERS * per_layer * (2 * m * HIDDEN + HIDDEN + m)
    layer_norm_copies = LAYERS * 2 * 2 * HIDDEN  # Two layer norms per layer, gamma and beta.
    assert counts.total - counts.pretrained == adapters + layer_norm_copies


def test_leave_out_layers_get_no_adapters(backbone, inputs):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4, leave_out=(0, 2)))
    assert [bool(layer.named_adapters) for layer in adapted.transformer_layers] == \
        [False, True, False]


def test_sizes_per_layer_and_a_missing_one_changes_nothing(backbone, inputs):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size={"1": 3, "default": 5},
                                                   leave_out=(2,)))
    sizes = [part.feedforward_adapter.bottleneck_dim
             for part in adapted.layer_adapters("default").values()]
    assert sizes == [5, 3]
    with pytest.raises(ValueError, match="no entry for layer 1 and no 'default'"):
        adapted.add_adapter("partial", AdapterConfig(adapter_size={"0": 2}))
    assert adapted.adapter_names == ["default"]
    assert all(list(layer.named_adapters) in ([], ["default"])
               for layer in adapted.transformer_layers)


def test_adapters_change_outputs_and_adapter_drop_all_equals_backbone(backbone, inputs):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4, initializer_std=0.5))
    plain = _outputs(backbone, inputs)["sequence_output"]
    assert np.abs(_outputs(adapted, inputs)["sequence_output"] - plain).max() > 1e-3
    adapted.set_drop_first_n(LAYERS)
    assert np.array_equal(_outputs(adapted, inputs)["sequence_output"], plain)


def test_adapter_drop_equals_model_without_those_adapters(backbone, inputs):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4, initializer_std=0.5))
    reference = add_adapters(backbone, AdapterConfig(adapter_size=4, leave_out=(0, 1)))
    for layer, twin in zip(adapted.transformer_layers[2:], reference.transformer_layers[2:]):
        twin.named_adapters["default"].set_weights(layer.named_adapters["default"].get_weights())
    adapted.set_drop_first_n(2)
    np.testing.assert_array_equal(
        _outputs(adapted, inputs)["sequence_output"],
        _outputs(reference, inputs)["sequence_output"])


def test_drop_first_n_applies_inside_compiled_functions(backbone, inputs):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4, initializer_std=0.5))
    compiled = tf.function(lambda: adapted(inputs, training=False)["sequence_output"])
    with_adapters = compiled().numpy()
    adapted.set_drop_first_n(LAYERS)
    without = compiled().numpy()
    expected = tf.function(lambda: backbone(inputs, training=False)["sequence_output"])()
    assert np.abs(with_adapters - without).max() > 1e-3
    np.testing.assert_array_equal(without, expected)


@pytest.mark.parametrize("n", [-1, LAYERS + 1, 1.5])
def test_bad_drop_first_n_raises(backbone, n):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4))
    with pytest.raises(ValueError, match="drop_first_n"):
        adapted.set_drop_first_n(n)


def test_add_adapters_rejects_adapted_or_foreign_models(backbone):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4))
    with pytest.raises(ValueError, match="already"):
        add_adapters(adapted)
    with pytest.raises(TypeError):
        add_adapters(keras.Sequential([keras.layers.Dense(2)]))


@pytest.mark.parametrize("source_n,n", [(0, 2), (1, 0)])
def test_add_adapters_sets_drop_first_n_over_a_source_with_its_own(backbone, inputs, source_n, n):
    """`from_pretrained` returns an adapter backbone without adapters, which has
    AdapterDrop state of its own; `add_adapters`' `drop_first_n` wins over it."""
    source = add_adapters(backbone, name=None)
    source.set_drop_first_n(source_n)
    adapted = add_adapters(source, AdapterConfig(adapter_size=4, initializer_std=0.5),
                           drop_first_n=n)
    reference = add_adapters(backbone, AdapterConfig(adapter_size=4), drop_first_n=n)
    reference.set_weights(adapted.get_weights())
    assert adapted.drop_first_n == n
    np.testing.assert_array_equal(_outputs(adapted, inputs)["sequence_output"],
                                  _outputs(reference, inputs)["sequence_output"])


def test_keras_round_trip_keeps_outputs_and_drop_first_n(backbone, inputs, tmp_path):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4, initializer_std=0.5),
                           drop_first_n=1)
    classifier = keras_hub.models.BertTextClassifier(adapted, num_classes=3, preprocessor=None)
    path = str(tmp_path / "classifier.keras")
    classifier.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.backbone, AdapterBertBackbone)
    assert restored.backbone.drop_first_n == 1
    np.testing.assert_array_equal(restored.predict(inputs, verbose=0),
                                  classifier.predict(inputs, verbose=0))


def _classifier(backbone, **adapter_drop):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4), **adapter_drop)
    model = keras_hub.models.BertTextClassifier(adapted, num_classes=2, preprocessor=None)
    counts = freeze_for_adapter_tuning(model)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, counts


def test_freezing_trains_only_adapters_their_layer_norms_and_head(backbone):
    model, counts = _classifier(backbone)
    trainable = {w.path for w in model.trainable_weights}
    expected = {w.path for a in model.backbone.adapters for w in a.weights}
    expected |= {w.path for w in model.backbone.weights
                 if "layer_norm" in w.path and "/adapter_default/" in w.path}
    expected |= {"logits/kernel", "logits/bias"}
    assert len(expected) == LAYERS * (2 * 4 + 2 * 2) + 2  # Adapters, layer-norm copies, head.
    assert trainable == expected
    assert counts.trainable == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert 0 < counts.trainable_percent < 100


def test_training_step_moves_only_trainable_weights(backbone, inputs):
    model, _ = _classifier(backbone)
    before = {w.path: w.numpy().copy() for w in model.weights}
    trainable = {w.path for w in model.trainable_weights}
    model.fit(inputs, np.array([0, 1, 1]), epochs=2, verbose=0)
    for weight in model.weights:
        changed = not np.array_equal(before[weight.path], weight.numpy())
        if weight.path in trainable:
            if "adapter" in weight.path or weight.path.startswith("logits"):
                assert changed, f"{weight.path} did not train"
        else:
            assert not changed, f"frozen {weight.path} changed"


def test_mirrored_strategy_over_two_cpus(backbone, inputs):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():  # Robust AdapterDrop draws its depth inside the replicas.
        model, _ = _classifier(backbone, robust_adapter_drop=True, seed=0)
    top = model.backbone.adapters[-1]  # Never dropped: robust depths stop below the top.
    before = top.up_projection.kernel.numpy().copy()
    frozen = model.backbone.token_embedding.embeddings.numpy().copy()
    model.fit({k: np.tile(v, (2, 1)) for k, v in inputs.items()},
              np.array([0, 1, 1, 0, 1, 1]), batch_size=6, epochs=1, verbose=0)
    assert not np.array_equal(before, top.up_projection.kernel.numpy())
    assert np.array_equal(frozen, model.backbone.token_embedding.embeddings.numpy())


def test_robust_adapter_drop_draws_every_depth_uniformly_and_reproducibly():
    def draws(seed):
        layer = AdapterDrop(LAYERS + 1, robust=True, seed=seed)
        step = tf.function(lambda: layer(tf.zeros(()), training=True))
        return [int(np.sum(~step().numpy())) for _ in range(400)]

    depths = draws(seed=3)
    counts = np.bincount(depths, minlength=LAYERS + 1)
    assert len(counts) == LAYERS + 1 and counts.min() > 60  # {0..L-1}, each ~100 of 400.
    assert draws(seed=3) == depths and draws(seed=4) != depths
    layer = AdapterDrop(LAYERS + 1, drop_first_n=2, robust=True, seed=3)
    assert layer(tf.zeros(()), training=False).numpy().tolist() == [False, False, True, True]
    with layer.override(tf.constant(1)):
        assert layer(tf.zeros(()), training=True).numpy().tolist() == [False, True, True, True]


def test_robust_training_steps_each_run_the_drawn_depth(backbone, inputs):
    config = AdapterConfig(adapter_size=4, initializer_std=0.5)
    robust = add_adapters(backbone, config, robust_adapter_drop=True, seed=11)
    fixed = add_adapters(backbone, config)
    fixed.set_weights(robust.get_weights())
    twin = AdapterDrop(LAYERS, robust=True, seed=11)  # Draws the same depths.
    step = tf.function(lambda: robust(inputs, training=True)["sequence_output"])
    depths = []
    for _ in range(12):
        depth = int(np.sum(~twin(tf.zeros(()), training=True).numpy()))
        fixed.set_drop_first_n(depth)
        np.testing.assert_allclose(step().numpy(), _outputs(fixed, inputs)["sequence_output"],
                                   atol=1e-6)
        depths.append(depth)
    assert set(depths) == set(range(LAYERS))
    robust.set_drop_first_n(1)  # Inference runs the depth it is given.
    fixed.set_drop_first_n(1)
    np.testing.assert_array_equal(_outputs(robust, inputs)["sequence_output"],
                                  _outputs(fixed, inputs)["sequence_output"])


def test_specialised_drop_freezes_everything_below_the_first_adapter(backbone, inputs):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4), drop_first_n=2)
    model = keras_hub.models.BertTextClassifier(adapted, num_classes=2, preprocessor=None)
    freeze_for_adapter_tuning(model)
    trainable = {w.path for w in model.trainable_weights}
    assert trainable and all(not p.startswith(("transformer_layer_0/", "transformer_layer_1/",
                                              "embeddings_layer_norm/")) for p in trainable)
    assert {p for p in trainable if "layer_norm" in p} == {
        f"transformer_layer_2/adapter_default/{slot}_layer_norm/{w}"
        for slot in ("attention", "feedforward") for w in ("gamma", "beta")}
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(inputs, np.array([0, 1, 1]), epochs=1, verbose=0)
    slots = {v.path for v in model.optimizer.variables}
    assert not any("transformer_layer_0" in p or "transformer_layer_1" in p for p in slots)


def test_keras_round_trip_keeps_robust_adapter_drop(backbone, tmp_path):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4), drop_first_n=1,
                           robust_adapter_drop=True, seed=5)
    path = str(tmp_path / "robust.keras")
    adapted.save(path)
    restored = keras.saving.load_model(path)
    assert (restored.robust_adapter_drop, restored.seed, restored.drop_first_n) == (True, 5, 1)
    assert restored.adapter_drop.seed_generator.state.numpy().tolist() == \
        adapted.adapter_drop.seed_generator.state.numpy().tolist()


@pytest.mark.parametrize("drop_first_n", [0, 2])
def test_no_gradient_flows_below_the_lowest_trainable_layer(backbone, inputs, drop_first_n):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4), drop_first_n=drop_first_n)
    model = keras_hub.models.BertTextClassifier(adapted, num_classes=2, preprocessor=None)
    freeze_for_adapter_tuning(model)
    kernels = [layer._feedforward_output_dense.kernel for layer in adapted.transformer_layers]
    with tf.GradientTape() as tape:  # Watches every variable, frozen ones included.
        loss = tf.reduce_sum(model(inputs, training=True))
    grads = tape.gradient(loss, [adapted.token_embedding.embeddings, *kernels])
    reached = [g is not None for g in grads]
    assert reached == [False] * (1 + drop_first_n) + [True] * (LAYERS - drop_first_n)


def test_lora_trains_every_layer_as_on_the_keras_hub_backbone(backbone, inputs):
    """keras-hub's `enable_lora` freezes each transformer layer, then makes the LoRA
    weights inside it trainable. Every layer's LoRA gets the gradient it gets on
    keras-hub's own backbone (cutting backprop by the layers' own `trainable_weights`
    trained the top layer's alone)."""
    reference = keras_hub.models.BertBackbone.from_config(backbone.get_config())
    ours = AdapterBertBackbone.from_config(backbone.get_config())
    reference.set_weights(backbone.get_weights())
    for model in (reference, ours):
        model.enable_lora(2)
    rng = np.random.default_rng(0)
    for weight in reference.trainable_weights:  # LoRA's B starts at zero: no gradient for A.
        weight.assign(rng.normal(size=weight.shape))
    values = {weight.path: weight.numpy() for weight in reference.weights}
    for weight in ours.weights:  # Ours also holds AdapterDrop's depth.
        if weight.path in values:
            weight.assign(values.pop(weight.path))
    assert not values
    grads = {}
    for model in (reference, ours):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(inputs, training=True)["pooled_output"] ** 2)
        grads[model] = dict(zip([w.path for w in model.trainable_weights],
                                tape.gradient(loss, model.trainable_weights)))
    assert sorted(grads[ours]) == sorted(grads[reference])
    assert sum("lora_kernel_a" in path for path in grads[ours]) == 2 * LAYERS  # Query, value.
    for path, grad in grads[reference].items():
        np.testing.assert_allclose(grads[ours][path], grad, rtol=1e-5, atol=1e-6, err_msg=path)


def _cond_ops(concrete_function):
    return [op.type for op in concrete_function.graph.get_operations()
            if op.type in ("If", "StatelessIf")]


def test_specialised_training_is_traced_without_conds_at_the_depth_it_reads(backbone, inputs):
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=4, initializer_std=0.5),
                           drop_first_n=2)
    reference = add_adapters(backbone, AdapterConfig(adapter_size=4, leave_out=(0, 1)))
    for layer, twin in zip(adapted.transformer_layers[2:], reference.transformer_layers[2:]):
        twin.named_adapters["default"].set_weights(layer.named_adapters["default"].get_weights())
    train = tf.function(lambda: adapted(inputs, training=True)["sequence_output"])
    infer = tf.function(lambda: adapted(inputs, training=False)["sequence_output"])
    assert _cond_ops(train.get_concrete_function()) == []
    assert len(_cond_ops(infer.get_concrete_function())) == 4 * LAYERS  # 2 adapters, 2 norms.
    expected = reference(inputs, training=True)["sequence_output"].numpy()  # dropout is 0.
    np.testing.assert_allclose(train().numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(infer().numpy(), expected, atol=1e-5)
    assert [layer.adapter_gate for layer in adapted.transformer_layers] == [None] * LAYERS
    adapted.set_drop_first_n(LAYERS)  # Inference sees it; the traced training step does not.
    plain = _outputs(backbone, inputs)["sequence_output"]
    assert np.abs(plain - expected).max() > 1e-3
    np.testing.assert_allclose(infer().numpy(), plain, atol=1e-5)
    np.testing.assert_allclose(train().numpy(), expected, atol=1e-5)


def test_robust_training_keeps_its_gates_in_the_graph(backbone, inputs):
    robust = add_adapters(backbone, AdapterConfig(adapter_size=4), robust_adapter_drop=True)
    train = tf.function(lambda: robust(inputs, training=True)["sequence_output"])
    assert len(_cond_ops(train.get_concrete_function())) == 4 * LAYERS
