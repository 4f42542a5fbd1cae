"""The warmup + linear decay schedule and AdamW set-up."""

import keras
import numpy as np
import pytest

from keras_adapters.training.optimization import WarmupLinearDecay, create_optimizer


def test_schedule_matches_warmup_then_linear_decay():
    schedule = WarmupLinearDecay(1e-3, total_steps=100, warmup_steps=10)
    for step in [0, 1, 5, 10, 11, 55, 99, 100, 150]:
        expected = 1e-3 * (step / 10 if step < 10 else max(0.0, (100 - step) / 90))
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-9), step


def test_schedule_without_warmup_and_round_trip():
    schedule = WarmupLinearDecay(2.0, total_steps=4, warmup_steps=0)
    assert [float(schedule(s)) for s in range(5)] == [2.0, 1.5, 1.0, 0.5, 0.0]
    clone = WarmupLinearDecay.from_config(schedule.get_config())
    assert float(clone(3)) == 0.5


@pytest.mark.parametrize("args", [(0.0, 10, 1), (1e-3, 0, 0), (1e-3, 10, 11)])
def test_bad_schedules_raise(args):
    with pytest.raises(ValueError):
        WarmupLinearDecay(*args)


def test_weight_decay_skips_biases_and_layer_norms():
    optimizer = create_optimizer(1.0, total_steps=10, warmup_proportion=0.0, weight_decay=0.1)
    kernel = keras.Variable(np.ones(3, "float32"), name="kernel")
    bias = keras.Variable(np.ones(3, "float32"), name="bias")
    gamma = keras.Variable(np.ones(3, "float32"), name="gamma")
    zeros = np.zeros(3, "float32")
    optimizer.apply_gradients([(zeros, kernel), (zeros, bias), (zeros, gamma)])
    # Step 0 of a 10-step decay has rate 1.0: decoupled decay scales by 1 - lr*wd.
    np.testing.assert_allclose(kernel.numpy(), 0.9, rtol=1e-6)
    np.testing.assert_array_equal(bias.numpy(), 1.0)
    np.testing.assert_array_equal(gamma.numpy(), 1.0)


def test_warmup_proportion_sets_warmup_steps():
    optimizer = create_optimizer(1e-3, total_steps=200, warmup_proportion=0.1)
    rates = []
    for step in (0, 10, 20, 110):
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    np.testing.assert_allclose(rates, [0.0, 5e-4, 1e-3, 5e-4], rtol=1e-6)
    with pytest.raises(ValueError):
        create_optimizer(1e-3, total_steps=10, warmup_proportion=1.5)
