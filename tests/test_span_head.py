"""The span head: logits, padding masking, loss and freezing."""

import keras
import keras_hub
import numpy as np

from keras_adapters.configuration.adapter_config import AdapterConfig
from keras_adapters.models.adapter_backbone import add_adapters
from keras_adapters.models.freezing import find_adapter_backbone, freeze_for_adapter_tuning
from keras_adapters.tasks.squad.span_head import SPAN_LOSS_WEIGHTS, build_span_model, span_loss


def _model():
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=30, num_layers=2, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=16, dropout=0.0)
    return build_span_model(add_adapters(backbone, AdapterConfig(adapter_size=2)))


def _inputs():
    mask = np.ones((2, 10), "int32")
    mask[1, 6:] = 0
    return {"token_ids": np.arange(20).reshape(2, 10).astype("int32") % 30 * mask,
            "segment_ids": np.zeros((2, 10), "int32"), "padding_mask": mask}


def test_logits_equal_a_dense_layer_on_the_sequence_output_and_mask_padding():
    model = _model()
    inputs = _inputs()
    outputs = model(inputs)
    sequence = find_adapter_backbone(model)(inputs)["sequence_output"]
    dense = model.get_layer("span_head").dense
    expected = sequence.numpy() @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(outputs["start_logits"][0], expected[0, :, 0], atol=1e-5)
    np.testing.assert_allclose(outputs["end_logits"][1, :6], expected[1, :6, 1], atol=1e-5)
    assert (outputs["end_logits"][1, 6:].numpy() < -1e8).all()


def test_loss_is_the_mean_of_start_and_end_cross_entropies():
    model = _model()
    model.compile(optimizer="sgd", loss=span_loss(), loss_weights=SPAN_LOSS_WEIGHTS)
    inputs = _inputs()
    labels = {"start_logits": np.array([2, 1]), "end_logits": np.array([4, 3])}
    outputs = model(inputs)
    expected = np.mean([
        keras.losses.sparse_categorical_crossentropy(
            labels[k], outputs[k], from_logits=True).numpy().mean()
        for k in labels])
    assert np.isclose(model.evaluate(inputs, labels, verbose=0)[0], expected, rtol=1e-5)


def test_adapter_tuning_trains_adapters_layer_norms_and_the_span_head(tmp_path):
    model = _model()
    freeze_for_adapter_tuning(model)
    trainable = {w.path for w in model.trainable_weights}
    assert {"span_head/span_logits/kernel", "span_head/span_logits/bias"} <= trainable
    assert not any("query" in p or "token_embedding" in p for p in trainable)
    path = str(tmp_path / "span.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(restored(_inputs())["start_logits"],
                                  model(_inputs())["start_logits"])
