"""`AdapterFusion` against AdapterHub's `BertFusion.forward` (adapters 1.3.0), written out in NumPy."""

import keras
import numpy as np
import pytest

from keras_adapters import AdapterFusion

B, T, N, D = 2, 5, 3, 8


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype("float32") for shape in ((B, T, D), (B, T, N, D), (B, T, D))]


def _randomized(fusion, inputs):
    fusion(*inputs)  # Builds.
    rng = np.random.default_rng(1)
    for weight in fusion.weights:
        weight.assign(rng.normal(0.0, 0.5, weight.shape).astype("float32"))
    return {weight.path.split("/", 1)[1]: np.asarray(weight) for weight in fusion.weights}


def _bert_fusion(w, query, outputs, residual, config):
    """BertFusion.forward in inference mode: torch's Linear(x) is x @ kernel + bias here."""
    if config.get("residual_before"):
        outputs = outputs + residual[:, :, None, :]
    q = query @ w["query/kernel"] + w["query/bias"] if config.get("query", True) else query
    k = outputs @ w["key/kernel"] + w["key/bias"] if config.get("key", True) else outputs
    value, before = config.get("value", True), config.get("value_before_softmax", True)
    v = outputs @ w["value/kernel"] if value and before else outputs
    s = np.einsum("btd,btnd->btn", q, k)
    a = np.exp(s - s.max(-1, keepdims=True))
    a = a / a.sum(-1, keepdims=True)
    c = np.einsum("btn,btnd->btd", a, v)
    if value and not before:
        c = c @ w["value/kernel"]
    return (c if config.get("residual_before") else c + residual), a


@pytest.mark.parametrize("config", [
    {},  # AdapterHub's "dynamic".
    {"value": False, "value_initialized": False},  # Its "static".
    {"value_before_softmax": False},
    {"residual_before": True, "query": False},
], ids=["dynamic", "static", "value_after_softmax", "residual_before_no_query"])
def test_fusion_computes_adapterhubs_bert_fusion(config):
    inputs = _inputs()
    fusion = AdapterFusion(**config)
    weights = _randomized(fusion, inputs)
    fused, attention = fusion(*inputs, training=False)
    expected, expected_attention = _bert_fusion(weights, *inputs, config)
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(attention, expected_attention, rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(attention) - 1 / N).max() > 0.05  # Far from uniform: a real check.


def test_one_adapter_with_the_identity_value_is_that_adapter():
    query, outputs, residual = _inputs()
    fusion = AdapterFusion()
    fusion(query, outputs[:, :, :1], residual)
    fusion.value.kernel.assign(np.eye(D, dtype="float32"))
    fused, attention = fusion(query, outputs[:, :, :1], residual)
    np.testing.assert_array_equal(attention, np.ones((B, T, 1), "float32"))
    np.testing.assert_allclose(fused, outputs[:, :, 0] + residual, rtol=0, atol=1e-6)


def test_initialisation_and_regularization_are_adapterhubs():
    keras.utils.set_random_seed(0)
    fusion = AdapterFusion()
    fusion(*_inputs())
    value = np.asarray(fusion.value.kernel)
    np.testing.assert_allclose(value, np.full((D, D), 1e-6) + np.eye(D) * (1 - 1e-6))
    assert abs(np.asarray(fusion.query.kernel).std() - 0.02) < 0.01
    assert not np.asarray(fusion.key.bias).any()
    # 0.01 * sum((I - W_v)^2): (D^2 - D) off-diagonal entries of 1e-6.
    [penalty] = fusion.losses
    np.testing.assert_allclose(penalty, 0.01 * (D * D - D) * 1e-12, rtol=1e-3)
    kernel = np.random.default_rng(0).normal(size=(D, D)).astype("float32")
    fusion.value.kernel.assign(kernel)
    np.testing.assert_allclose(fusion.losses[0], 0.01 * np.square(np.eye(D) - kernel).sum(),
                               rtol=1e-5)
    fusion.trainable = False  # Only a value matrix that trains is penalised.
    assert fusion.losses == []
    for unpenalised in (AdapterFusion(value=False, value_initialized=False),
                        AdapterFusion(regularization=False)):
        unpenalised(*_inputs())
        assert unpenalised.losses == []


def test_dropout_acts_on_the_scores_in_training_only():
    inputs = _inputs()
    fusion = AdapterFusion(dropout=0.5)
    _randomized(fusion, inputs)
    eval_a, _ = fusion(*inputs, training=False)
    np.testing.assert_array_equal(eval_a, fusion(*inputs, training=False)[0])
    assert np.abs(np.asarray(fusion(*inputs, training=True)[0]) - eval_a).max() > 1e-3


def test_keras_file_round_trip(tmp_path):
    query, outputs, residual = (keras.Input(shape[1:]) for shape in ((B, T, D), (B, T, N, D),
                                                                     (B, T, D)))
    fused, attention = AdapterFusion(value_before_softmax=False, name="fusion")(query, outputs,
                                                                               residual)
    model = keras.Model([query, outputs, residual], [fused, attention])
    inputs = _inputs()
    model.save(tmp_path / "fusion.keras")
    restored = keras.saving.load_model(tmp_path / "fusion.keras")
    assert restored.get_layer("fusion").get_config() == model.get_layer("fusion").get_config()
    for a, b in zip(restored(inputs), model(inputs)):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="at least one of query, key and value"):
        AdapterFusion(query=False, key=False, value=False)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        AdapterFusion(dropout=1.0)
