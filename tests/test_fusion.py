"""AdapterFusion in the models: running, training, saving, AdapterDrop, pruning, serving.

`test_fusion_adapterhub.py` shows the outputs equal AdapterHub's; these tests
check the rest against models built separately here.
"""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

from keras_adapters import (
    AdapterConfig,
    AdapterModel,
    FusionAttention,
    add_adapters,
    from_pretrained,
    fusion_attention,
    load_adapter,
    load_adapter_fusion,
    save_adapter,
    save_adapter_fusion,
    text_classifier,
)
from keras_adapters.data.pipeline import make_preprocessor, tokenize
from keras_adapters.serving.export import export_text_classifier
from tests.helpers import WORD_PIECE_VOCAB

NUM_LAYERS = 3
ADAPTERS = ("a", "b", "c")


def _backbone(seed=0):
    keras.utils.set_random_seed(seed)
    return keras_hub.models.BertBackbone(
        vocabulary_size=len(WORD_PIECE_VOCAB), num_layers=NUM_LAYERS, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=32)


def _config(placement="seq_bn", **kwargs):
    return AdapterConfig(placement=placement, adapter_size=4, initializer_std=0.5,
                         train_layer_norms=False, **kwargs)


def _model(placement="seq_bn", adapters=ADAPTERS, fusion=True, seed=0):
    """A tiny BERT with random adapters, a random fusion over all of them and its head."""
    model = AdapterModel(add_adapters(_backbone(seed), _config(placement), name=adapters[0]))
    for adapter in adapters[1:]:
        model.add_adapter(adapter, _config(placement))
    if fusion:
        name = model.add_adapter_fusion(list(adapters), set_active=True)
        model.add_classification_head(name, 2)
        rng = np.random.default_rng(seed)
        for part in model.backbone.layer_fusions(name).values():
            for weight in part.weights:
                weight.assign(rng.normal(0.0, 0.5, weight.shape))
    return model


def _inputs(batch=4, seq=7, seed=1):
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), "int32")
    mask[1, 5:] = 0
    mask[-1, 3:] = 0
    return {"token_ids": rng.integers(5, len(WORD_PIECE_VOCAB), (batch, seq)).astype("int32") * mask,
            "segment_ids": np.zeros((batch, seq), "int32"), "padding_mask": mask}


def _states(model, name, inputs=None):
    model.backbone.set_active_adapters(name)
    return np.asarray(model.backbone(_inputs() if inputs is None else inputs)["sequence_output"])


@pytest.mark.parametrize("placement", ["seq_bn", "double_seq_bn"])
def test_one_adapter_fused_with_the_identity_value_is_that_adapter(placement):
    model = _model(placement, adapters=("a",), fusion=False)
    model.add_adapter_fusion(["a"], name="only_a")
    for part in model.backbone.layer_fusions("only_a").values():
        for slot in ("attention_fusion", "feedforward_fusion"):
            if getattr(part, slot) is not None:
                getattr(part, slot).value.kernel.assign(np.eye(8, dtype="float32"))
    fused, alone = _states(model, "only_a"), _states(model, "a")
    np.testing.assert_allclose(fused, alone, rtol=0, atol=1e-6)
    assert np.abs(alone - _states(model, None)).max() > 1e-3  # The adapter matters.


def test_train_adapter_fusion_changes_only_the_fusion_and_its_head():
    model = _model()
    counts = model.train_adapter_fusion("a,b,c")
    fused_slots = NUM_LAYERS  # seq_bn: the feed-forward slot of each layer.
    assert counts.trainable == fused_slots * (3 * 8 * 8 + 2 * 8) + (8 * 2 + 2)
    assert len(model.losses) == fused_slots  # W_v's penalty, in the training loss.
    before = {w.path: np.array(w) for w in model.weights}
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(_inputs(), np.array([0, 1, 0, 1]), epochs=3, verbose=0)
    changed = {w.path for w in model.weights if not np.array_equal(before[w.path], np.array(w))}
    trained = {w.path for w in model.trainable_weights}
    assert changed - {w.path for w in model.optimizer.variables} <= trained
    assert {p for p in trained if "fusion_a.b.c/" in p or p.startswith("head_a.b.c/")} == trained
    assert trained <= changed


def test_fusion_round_trips_through_keras_files_and_fusion_folders(tmp_path):
    model = _model()
    inputs = _inputs()
    expected = np.asarray(model(inputs))
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert restored.backbone.fusion_configs == model.backbone.fusion_configs
    np.testing.assert_array_equal(np.asarray(restored(inputs)), expected)
    # Adapters and fusion through their folders, into a model without them.
    for adapter in ADAPTERS:
        save_adapter(model, str(tmp_path / adapter), adapter)
    save_adapter_fusion(model, str(tmp_path / "fusion"), "a,b,c")
    fresh = AdapterModel(add_adapters(_backbone(), _config(), name="other"))
    with pytest.raises(ValueError, match=r"adapter_fusion_config.json: field 'adapters' names"):
        load_adapter_fusion(fresh, str(tmp_path / "fusion"))
    for adapter in ADAPTERS:
        load_adapter(fresh, str(tmp_path / adapter))
    name = fresh.load_adapter_fusion(str(tmp_path / "fusion"), set_active=True)
    np.testing.assert_array_equal(np.asarray(fresh(inputs)), expected)
    with pytest.raises(ValueError, match="is taken"):
        fresh.load_adapter_fusion(str(tmp_path / "fusion"))
    assert fresh.backbone.fusion_names == [name]


def test_bad_fusions_are_refused_clearly():
    model = _model(fusion=False)
    model.add_adapter("houlsby", _config("houlsby"))
    model.add_adapter("parallel", _config("par_bn"))
    with pytest.raises(ValueError, match="same slots"):
        model.add_adapter_fusion(["a", "houlsby"])
    with pytest.raises(ValueError, match="none may be parallel"):
        model.add_adapter_fusion(["parallel"], name="p")
    with pytest.raises(ValueError, match="distinct adapters"):
        model.add_adapter_fusion(["a", "a"])
    with pytest.raises(ValueError, match="No adapter named 'z'"):
        model.add_adapter_fusion("a,z")
    with pytest.raises(ValueError, match="is taken"):
        model.add_adapter_fusion(["a"])  # Its default name is the adapter's.
    with pytest.raises(ValueError, match="temperature=True is not supported"):
        model.add_adapter_fusion(["a", "b"], config={"temperature": True})
    model.add_adapter_fusion("a,b")
    with pytest.raises(ValueError, match=r"fused by AdapterFusions \['a,b'\]"):
        model.remove_task("a")
    with pytest.raises(ValueError, match="No adapter or AdapterFusion named 'b,a'"):
        model.set_active_adapters("b,a")
    model.remove_adapter_fusion("a,b")
    model.remove_task("a")  # Now it can go.


def test_drop_first_n_runs_the_lowest_layers_without_fusion():
    model = _model()
    # A separately built fusion that simply is not in layer 0, with the same weights.
    pruned = model.add_adapter_fusion({"1": list(ADAPTERS), "2": list(ADAPTERS)},
                                      name="above_0")
    for index, part in model.backbone.layer_fusions("above_0").items():
        part.set_weights(model.backbone.layer_fusions("a,b,c")[index].get_weights())
    model.backbone.set_drop_first_n(1)
    dropped = _states(model, "a,b,c")
    model.backbone.set_drop_first_n(0)
    np.testing.assert_allclose(dropped, _states(model, pruned), rtol=0, atol=1e-6)
    assert np.abs(dropped - _states(model, "a,b,c")).max() > 1e-3
    # Specialised AdapterDrop: the lowest layer's fusion does not train.
    model.backbone.set_drop_first_n(1)
    model.train_adapter_fusion("a,b,c")
    assert not any(w.path.startswith("transformer_layer_0/") for w in model.trainable_weights)


def test_a_compiled_fusion_runs_after_a_call_that_dropped_it():
    # Regression: in a `cond` branch holding a fusion and the adds around it, TensorFlow's
    # graph optimizer put a temporary variable, which a call that skipped the branch
    # created and never freed; the next call taking the branch failed (AlreadyExistsError).
    # It showed on MiniLM with Houlsby adapters at batch 32 and length 128, not smaller.
    backbone = add_adapters(from_pretrained()[0], _config("double_seq_bn"), name="a")
    backbone.add_adapter("b", _config("double_seq_bn"))
    backbone.add_adapter_fusion(["a", "b"], set_active=True)
    model = text_classifier(backbone, 2)
    inputs = {key: np.tile(value, (8, 19))[:, :128] for key, value in _inputs().items()}
    traced = tf.function(lambda features: model(features, training=False)).get_concrete_function(
        {key: tf.TensorSpec(value.shape, value.dtype) for key, value in inputs.items()})
    logits = {}
    for n in (1, 0, 0):
        backbone.set_drop_first_n(n)
        logits[n] = np.asarray(traced(inputs))
        np.testing.assert_allclose(logits[n], np.asarray(model(inputs)), rtol=0, atol=1e-4)
    assert np.abs(logits[1] - logits[0]).max() > 1e-3


def _dominant_fusion(model, favourite, score):
    """Set every fusion so that adapter `favourite` scores `score` and the others 0.

    The fused adapters' `up` outputs are constants: `u` for the favourite, 0
    for the others; the key is the identity and the query the constant `u`,
    so every token's scores are `|u|^2 = score` and 0.
    """
    u = np.zeros(8, "float32")
    u[0] = np.sqrt(score)
    for adapter in ADAPTERS:
        for part in model.backbone.layer_adapters(adapter).values():
            up = part.feedforward_adapter.up_projection
            up.kernel.assign(np.zeros(up.kernel.shape, "float32"))
            up.bias.assign(u if adapter == favourite else np.zeros(8, "float32"))
    for part in model.backbone.layer_fusions("a,b,c").values():
        fusion = part.feedforward_fusion
        fusion.key.kernel.assign(np.eye(8, dtype="float32"))
        fusion.key.bias.assign(np.zeros(8, "float32"))
        fusion.query.kernel.assign(np.zeros((8, 8), "float32"))
        fusion.query.bias.assign(u)


def test_fusion_attention_is_each_adapters_mean_weight():
    model = _model()
    _dominant_fusion(model, "b", score=np.log(8.0))
    batches = [_inputs(seed=1), (_inputs(batch=2, seed=2), np.zeros(2))]
    attention = fusion_attention(model, "a,b,c", batches)
    favourite = 8.0 / (8.0 + 2)  # softmax([0, log 8, 0])
    expected = np.tile([(1 - favourite) / 2, favourite, (1 - favourite) / 2], (NUM_LAYERS, 1))
    np.testing.assert_allclose(attention.per_layer, expected, rtol=1e-5)
    assert model.backbone.active_adapter == "a,b,c"  # Restored.
    model.backbone.set_drop_first_n(2)
    attention = fusion_attention(model, "a,b,c", batches)
    assert np.isnan(attention.per_layer[:2]).all()
    np.testing.assert_allclose(attention.mean, expected[0], rtol=1e-5)


def test_fusion_attention_counts_the_real_tokens_only():
    model = _model()  # Random fusions: the weights differ from token to token.
    padded = _inputs()
    lengths = padded["padding_mask"].sum(axis=1)
    one_by_one = [{key: value[i:i + 1, :length] for key, value in padded.items()}
                  for i, length in enumerate(lengths)]
    together = fusion_attention(model, "a,b,c", [padded]).per_layer
    np.testing.assert_allclose(together, fusion_attention(model, "a,b,c", one_by_one).per_layer,
                               rtol=1e-5)
    assert np.abs(together - 1 / 3).max() > 1e-3
    np.testing.assert_allclose(together.sum(axis=1), 1.0, rtol=1e-5)


def _variables_read(model, inputs):
    """Ids of the variables a traced inference call of `model` reads."""
    function = tf.function(lambda features: model(features, training=False))
    concrete = function.get_concrete_function(
        {key: tf.TensorSpec(value.shape, value.dtype) for key, value in inputs.items()})
    return {id(v) for v in concrete.graph.variables}


def test_pruning_keeps_the_most_attended_adapters_and_computes_no_other():
    model = _model()
    inputs = _inputs()
    unpruned = np.asarray(model(inputs))
    attention = FusionAttention(list(ADAPTERS), np.tile([0.5, 0.2, 0.3], (NUM_LAYERS, 1)))
    same = model.prune_adapter_fusion("a,b,c", keep=3, attention=attention, new_name="all_three")
    model.set_active_adapters(same)
    np.testing.assert_allclose(np.asarray(model(inputs)), unpruned, rtol=0, atol=1e-6)
    pruned = model.prune_adapter_fusion("a,b,c", keep=2, attention=attention)
    assert pruned == "a,c" and model.backbone.fused_adapters(pruned) == ["a", "c"]
    model.set_active_adapters(pruned)
    read = _variables_read(model, inputs)
    adapter_b = {id(w.value) for part in model.backbone.layer_adapters("b").values()
                 for w in part.weights}
    adapter_a = {id(w.value) for part in model.backbone.layer_adapters("a").values()
                 for w in part.weights}
    assert adapter_a <= read and not adapter_b & read
    np.testing.assert_array_equal(model.heads[pruned].get_weights()[0],
                                  model.heads["a,b,c"].get_weights()[0])
    # Per layer: layer 1 prefers b.
    attention.per_layer[1] = [0.1, 0.6, 0.3]
    per_layer = model.prune_adapter_fusion("a,b,c", keep=2, attention=attention, per_layer=True,
                                           new_name="by_layer")
    assert model.backbone.fusion_configs[per_layer]["adapters"] == {
        "0": ["a", "c"], "1": ["b", "c"], "2": ["a", "c"]}
    with pytest.raises(ValueError, match="keep must be an integer in"):
        model.prune_adapter_fusion("a,b,c", keep=4, attention=attention)
    with pytest.raises(ValueError, match="cannot hold"):
        model.save_adapter_fusion("unused", per_layer, format="adapterhub")


def test_a_fused_model_serves_raw_text_at_any_depth(tmp_path):
    model = _model()
    for weight in model.heads["a,b,c"].weights:
        weight.assign(weight * 300.0)  # Confident enough for the depth to show.
    preprocessor = make_preprocessor(keras_hub.models.BertTokenizer(vocabulary=WORD_PIECE_VOCAB), 32)
    export_text_classifier(model, preprocessor, str(tmp_path / "export"), is_pair=False,
                           is_regression=False)
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    texts = tf.constant(["the cat sat on the mat", "a big dog", ""])
    served = []
    for n in range(NUM_LAYERS + 1):
        model.backbone.set_drop_first_n(n)
        expected = tf.nn.softmax(model(tokenize(preprocessor, texts), training=False))
        outputs = loaded.signatures["serving_adapter_drop"](sentence1=texts,
                                                             drop_first_n=tf.constant(n))
        np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
        served.append(outputs["probabilities"].numpy())
    assert np.abs(served[0] - served[NUM_LAYERS]).max() > 1e-4
