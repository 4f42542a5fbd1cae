"""Training steps compiled with XLA (`jit_compile=True`), as a TPU always compiles them.

Each training mode trains a tiny model on XLA:CPU and, from the same
initial weights, without XLA: the losses fall, frozen weights stay
bit-identical, and the two runs agree to float tolerance.
"""

import keras
import keras_hub
import numpy as np
import pytest

from keras_adapters import AdapterConfig, add_adapters, freeze_for_adapter_tuning
from keras_adapters.data.pipeline import (
    batch_examples,
    bucket_lengths,
    make_preprocessor,
    tokenize_examples,
)
from keras_adapters.tasks.glue.metrics import compute_metrics
from keras_adapters.tasks.squad.span_head import (
    SPAN_LOSS_WEIGHTS,
    build_span_model,
    span_loss,
)
from tests.helpers import ARCHITECTURES

BERT = ARCHITECTURES[0]
STEPS = 10
MODES = {  # add_adapters arguments; None: full fine-tuning.
    "adapters": {},
    "specialised_adapter_drop": {"drop_first_n": 1},
    "robust_adapter_drop": {"robust_adapter_drop": True, "seed": 3},
    "full": None,
    "squad_span_head": {},
}


def _model(mode, jit_compile):
    backbone = BERT.backbone(seed=0)
    if MODES[mode] is not None:
        backbone = add_adapters(backbone, AdapterConfig(adapter_size=4, initializer_std=0.1),
                                **MODES[mode])
    keras.utils.set_random_seed(1)  # The same head in both runs.
    if mode == "squad_span_head":
        model = build_span_model(backbone)
        loss, loss_weights = span_loss(), SPAN_LOSS_WEIGHTS
    else:
        # No dropout: XLA and TensorFlow draw different random masks.
        model = keras_hub.models.BertTextClassifier(backbone, 2, preprocessor=None, dropout=0.0)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        loss_weights = None
    if MODES[mode] is not None:
        freeze_for_adapter_tuning(model)
    # Plain SGD: Adam's step is about the learning rate even for gradients
    # near zero, so it would turn float noise between the runs into weight gaps.
    model.compile(optimizer=keras.optimizers.SGD(0.2 if mode == "full" else 1.0), loss=loss,
                  loss_weights=loss_weights, jit_compile=jit_compile)
    return model


def _batch(mode):
    inputs = BERT.inputs(batch=8, seq=16)
    rng = np.random.default_rng(2)
    if mode == "squad_span_head":
        return inputs, {"start_logits": rng.integers(1, 8, 8), "end_logits": rng.integers(8, 9, 8)}
    return inputs, rng.integers(0, 2, 8)


@pytest.mark.parametrize("mode", MODES)
def test_xla_training_step_matches_the_uncompiled_step(mode):
    x, y = _batch(mode)
    compiled, plain = _model(mode, jit_compile=True), _model(mode, jit_compile=False)
    for a, b in zip(compiled.variables, plain.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    trainable = {id(w) for w in compiled.trainable_weights}
    frozen = {w.path: w.numpy().copy() for w in compiled.weights if id(w) not in trainable}
    compiled_losses = [_step(compiled, x, y) for _ in range(STEPS)]
    plain_losses = [_step(plain, x, y) for _ in range(STEPS)]
    assert compiled.jit_compile is True and plain.jit_compile is False
    assert compiled_losses[-1] < 0.9 * compiled_losses[0]
    np.testing.assert_allclose(compiled_losses, plain_losses, rtol=1e-4)
    for a, b in zip(compiled.weights, plain.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)
    for weight in compiled.weights:
        if weight.path in frozen:
            np.testing.assert_array_equal(weight.numpy(), frozen[weight.path], err_msg=weight.path)


def _step(model, x, y):
    return float(model.train_on_batch(x, y, return_dict=True)["loss"])


def test_tpu_data_path_under_xla_uses_few_shapes_and_scores_like_the_dynamic_path():
    """Static shapes (full batches cut to a few lengths) under XLA, as on a TPU."""
    rng = np.random.default_rng(0)
    words = "the a cat dog sat on mat big".split()
    texts = [" ".join(rng.choice(words, n)) for n in rng.integers(1, 30, size=45)]
    labels = rng.integers(0, 2, 45)
    preprocessor = make_preprocessor(BERT.make_tokenizer(), 32)
    tokenized = tokenize_examples(preprocessor, texts, None, labels)
    model = _model("adapters", jit_compile=True)
    train = batch_examples(tokenized, 8, training=True, seed=0, epoch=0, static_shapes=True)
    shapes = {tuple(x["token_ids"].shape) for x, _ in train}  # One XLA program per shape.
    assert len(shapes) <= len(bucket_lengths(32)) == 2 and {b for b, _ in shapes} == {8}
    model.fit(train, epochs=1, verbose=0)

    static = batch_examples(tokenized, 8, static_shapes=True)
    assert {tuple(x["token_ids"].shape) for x, _ in static} <= {(8, 16), (8, 32)}
    predicted = model.predict(static, verbose=0)
    assert len(predicted) == 48  # 45 examples and 3 filling rows, dropped next.
    dynamic = model.predict(batch_examples(tokenized, 8), verbose=0)
    np.testing.assert_allclose(predicted[:45], dynamic, atol=1e-5)
    assert compute_metrics("mrpc", labels, predicted[:45].argmax(1)) == \
        compute_metrics("mrpc", labels, dynamic.argmax(1))
