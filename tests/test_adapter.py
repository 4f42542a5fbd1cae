"""The BottleneckAdapter layer and AdapterConfig."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_adapters.configuration.adapter_config import AdapterConfig
from keras_adapters.layers.bottleneck_adapter import BottleneckAdapter
from keras_adapters.models.adapter_encoder import AdapterTransformerEncoder
from tests.helpers import run_layer_test


def _build(d=384, **kwargs):
    adapter = BottleneckAdapter(**kwargs)
    adapter.build((None, None, d))
    return adapter


@pytest.mark.parametrize("d,m", [(384, 64), (768, 64), (16, 3)])
def test_parameter_count_is_2md_plus_d_plus_m(d, m):
    adapter = _build(d, adapter_size=m)
    assert adapter.count_params() == 2 * m * d + d + m


def test_reduction_factor_sets_bottleneck():
    adapter = _build(384, reduction_factor=16)
    assert adapter.bottleneck_dim == 24
    assert adapter.count_params() == 2 * 24 * 384 + 384 + 24


def test_init_is_truncated_normal_std_1e2_and_zero_biases():
    keras.utils.set_random_seed(0)
    adapter = _build(768, adapter_size=64)
    kernels = np.concatenate([
        adapter.down_projection.kernel.numpy().ravel(),
        adapter.up_projection.kernel.numpy().ravel(),
    ])
    # A normal truncated at 2 std has std 0.8796 * sigma.
    assert abs(kernels.std() - 0.8796e-2) < 2e-4
    assert np.abs(kernels).max() <= 2e-2
    assert np.abs(kernels).max() > 1.9e-2
    assert not adapter.down_projection.bias.numpy().any()
    assert not adapter.up_projection.bias.numpy().any()
    down, up = adapter.down_projection.kernel.numpy(), adapter.up_projection.kernel.numpy()
    assert not np.allclose(down.ravel()[:100], up.ravel()[:100])  # Two draws, not one repeated.


def test_adapterhub_inits_bert_and_mam_adapter():
    keras.utils.set_random_seed(0)
    bert = _build(768, adapter_size=64, init_weights="bert")
    assert abs(bert.down_projection.kernel.numpy().std() - 0.02) < 5e-4  # N(0, 0.02), untruncated.
    assert np.abs(bert.up_projection.kernel.numpy()).max() > 0.06
    mam = _build(768, adapter_size=64, init_weights="mam_adapter")  # He et al.: starts a no-op.
    down = mam.down_projection.kernel.numpy()
    assert np.abs(down).max() <= 768 ** -0.5 and np.abs(down).max() > 0.99 * 768 ** -0.5
    assert not mam.up_projection.kernel.numpy().any()
    h = np.random.default_rng(0).normal(size=(2, 768)).astype("float32")
    np.testing.assert_array_equal(mam(h), h)


def test_dropout_acts_in_training_only_through_the_call_context():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 16))
    adapter = BottleneckAdapter(adapter_size=4, dropout=0.5, initializer_std=1.0)
    model = keras.Model(inputs, adapter(inputs))  # `training` reaches the adapter unpassed.
    h = np.random.default_rng(0).normal(size=(2, 6, 16)).astype("float32")
    up = adapter.up_projection(adapter.activation(adapter.down_projection(h)))
    np.testing.assert_allclose(model(h, training=False), h + up, atol=1e-6)
    dropped = np.asarray(model(h, training=True)) - h
    kept = dropped != 0  # Kept units are scaled by 1 / (1 - 0.5).
    assert 0.3 < kept.mean() < 0.7
    np.testing.assert_allclose(dropped[kept], 2 * np.asarray(up)[kept], atol=1e-5)


def test_computes_h_plus_up_act_down_h():
    keras.utils.set_random_seed(1)
    adapter = _build(8, adapter_size=3, activation="relu", initializer_std=0.5)
    h = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    down, up = adapter.down_projection, adapter.up_projection
    expected = h + (np.maximum(h @ down.kernel.numpy() + down.bias.numpy(), 0)
                    @ up.kernel.numpy() + up.bias.numpy())
    np.testing.assert_allclose(adapter(h), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["gelu", "relu", "tanh"])
def test_compiled_call_with_unknown_shape_is_the_same_formula(activation):
    # Traced with unknown batch and sequence, as in a model; TensorFlow's
    # graph optimizer may then fuse each projection with what follows it.
    keras.utils.set_random_seed(2)
    adapter = _build(16, adapter_size=4, activation=activation, initializer_std=0.5)
    adapter.down_projection.bias.assign(np.linspace(-1, 1, 4))
    adapter.up_projection.bias.assign(np.linspace(1, -1, 16))
    h = np.random.default_rng(1).normal(size=(3, 7, 16)).astype("float32")
    down, up = adapter.down_projection, adapter.up_projection
    act = keras.activations.get(activation)
    expected = h + (np.asarray(act(h @ down.kernel.numpy() + down.bias.numpy()))
                    @ up.kernel.numpy() + up.bias.numpy())
    call = tf.function(adapter, input_signature=[tf.TensorSpec((None, None, 16))])
    np.testing.assert_allclose(call(h), expected, rtol=1e-5, atol=1e-5)
    assert call.get_concrete_function().structured_outputs.shape.as_list() == [None, None, 16]


def test_zero_init_is_exact_identity():
    adapter = _build(8, adapter_size=4, initializer_std=0.0)
    h = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
    assert np.array_equal(adapter(h), h)


@pytest.mark.parametrize("kwargs", [
    {}, {"adapter_size": 4, "reduction_factor": 2}, {"adapter_size": 0},
    {"adapter_size": 4, "initializer_std": -1.0},
])
def test_bad_sizes_raise(kwargs):
    with pytest.raises(ValueError):
        BottleneckAdapter(**kwargs)


def test_keras_round_trip_in_a_functional_model(tmp_path):
    inputs = keras.Input((None, 8))
    model = keras.Model(inputs, BottleneckAdapter(adapter_size=4, initializer_std=0.3)(inputs))
    path = str(tmp_path / "adapter.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    h = np.random.default_rng(0).normal(size=(2, 3, 8)).astype("float32")
    np.testing.assert_array_equal(model(h), restored(h))
    assert restored.layers[-1].get_config() == model.layers[-1].get_config()


def test_works_in_a_subclassed_model():
    class Tagger(keras.Model):
        def __init__(self):
            super().__init__()
            self.adapter = BottleneckAdapter(adapter_size=2)
            self.head = keras.layers.Dense(3)

        def call(self, x):
            return self.head(self.adapter(x))

    model = Tagger()
    model.compile(optimizer="adam", loss="mse")
    x = np.ones((4, 6), "float32")
    model.fit(x, np.zeros((4, 3), "float32"), epochs=1, verbose=0)
    assert len(model.trainable_weights) == 6


def test_config_json_round_trip_and_validation():
    config = AdapterConfig(adapter_size=None, reduction_factor=8, placement="pfeiffer",
                           leave_out=(3, 1, 1))
    assert config.leave_out == (1, 3)
    assert AdapterConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["placement"] == "pfeiffer"
    with pytest.raises(ValueError, match="placement"):
        AdapterConfig(placement="middle")
    with pytest.raises(ValueError, match="at most one"):
        AdapterConfig(adapter_size=8, reduction_factor=8)
    with pytest.raises(ValueError, match="negative"):
        AdapterConfig(leave_out=(-1,))


def test_adapter_config_sizes_and_adapterhub_names():
    assert AdapterConfig().adapter_size == 64  # Houlsby's default.
    config = AdapterConfig(reduction_factor=16)  # One size field is enough.
    assert (config.adapter_size, config.reduction_factor) == (None, 16)
    assert AdapterConfig(placement="double_seq_bn").placement == "houlsby"  # Same dataflow.
    seq_bn = AdapterConfig(placement="seq_bn")
    assert (seq_bn.placement, seq_bn.original_ln_before) == ("pfeiffer", True)
    par_bn = AdapterConfig(placement="par_bn")  # AdapterHub's ParBnConfig scales by 4.
    assert (par_bn.placement, par_bn.is_parallel, par_bn.scaling) == ("pfeiffer", True, 4.0)
    assert AdapterConfig(placement="par_bn", scaling="learned").scaling == "learned"
    assert AdapterConfig.from_json(par_bn.to_json()) == par_bn


def test_adapter_config_sizes_per_layer():
    config = AdapterConfig(reduction_factor={"1": 4, "default": 2}, leave_out=(2,))
    assert [config.for_layer(i) and config.for_layer(i).reduction_factor
            for i in range(3)] == [2, 4, None]
    with pytest.raises(ValueError, match="no entry for layer 0 and no 'default'"):
        AdapterConfig(adapter_size={"1": 4}).for_layer(0)


@pytest.mark.parametrize("fields, message", [
    ({"adapter_size": {"first": 4}}, "adapter_size must be a positive integer, or a dict"),
    ({"residual_before_ln": "pre_add"}, "residual_before_ln must be one of"),
    ({"residual_before_ln": "post_add"}, "needs original_ln_before=True"),
    ({"placement": "seq_bn", "is_parallel": True}, "exclude each other"),
    ({"scaling": "vector"}, "scaling must be a number or one of"),
    ({"init_weights": "xavier"}, "init_weights must be one of"),
])
def test_adapter_config_refuses_bad_adapterhub_fields(fields, message):
    with pytest.raises(ValueError, match=message):
        AdapterConfig(**fields)


def _layer_norm(x, epsilon=1e-5):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + epsilon)


@pytest.mark.parametrize("adapter_residual_before_ln", [False, True])
def test_adapterhub_options_compute_adapterhubs_forward(adapter_residual_before_ln):
    # AdapterHub's Adapter.forward (adapters 1.3.0), written out in NumPy.
    adapter = BottleneckAdapter(adapter_size=3, activation="relu", scaling="channel",
                                use_gating=True, ln_before=True, ln_after=True,
                                adapter_residual_before_ln=adapter_residual_before_ln,
                                init_weights="bert")
    rng = np.random.default_rng(0)
    z, r = rng.normal(size=(2, 4, 6)).astype("float32"), rng.normal(size=(2, 4, 6))
    adapter.build(z.shape)
    for weight in adapter.weights:
        weight.assign(rng.normal(0.0, 0.5, weight.shape))
    w = {weight.path.split("/", 1)[1]: np.asarray(weight) for weight in adapter.weights}
    normed = _layer_norm(z) * w["norm_before/gamma"] + w["norm_before/beta"]
    down = np.maximum(normed @ w["down_projection/kernel"] + w["down_projection/bias"], 0)
    up = (down @ w["up_projection/kernel"] + w["up_projection/bias"]) * w["scaling"]
    gate = 1 / (1 + np.exp(-(z @ w["gate/kernel"] + w["gate/bias"])))
    out = up * gate.mean(axis=1, keepdims=True)
    out = out + r if adapter_residual_before_ln else out
    out = _layer_norm(out) * w["norm_after/gamma"] + w["norm_after/beta"]
    out = out if adapter_residual_before_ln else out + r
    np.testing.assert_allclose(adapter(z, residual=r.astype("float32")), out, atol=1e-5)


@pytest.mark.parametrize("layer_cls, init_kwargs", [
    (BottleneckAdapter, {"adapter_size": 4, "initializer_std": 0.5}),
    (BottleneckAdapter, {"adapter_size": 4, "scaling": "learned", "use_gating": True,
                         "ln_before": True, "ln_after": True, "init_weights": "mam_adapter"}),
    (AdapterTransformerEncoder, {"adapter_configs": {"a": AdapterConfig(adapter_size=4).to_dict()},
                                 "active_adapter": "a", "num_heads": 2, "intermediate_dim": 16}),
    (AdapterTransformerEncoder, {"adapter_configs": {"a": AdapterConfig(
        reduction_factor=2, placement="par_bn", use_gating=True).to_dict()},
        "active_adapter": "a", "num_heads": 2, "intermediate_dim": 16}),
], ids=["BottleneckAdapter", "BottleneckAdapter_adapterhub_options", "AdapterTransformerEncoder",
        "AdapterTransformerEncoder_par_bn"])
def test_layer_contract(layer_cls, init_kwargs, tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    run_layer_test(layer_cls, init_kwargs, x, (2, 5, 8), tmp_path)
