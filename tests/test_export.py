"""SavedModel export: raw text in, the in-Python model's outputs out."""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

from keras_adapters.configuration.adapter_config import AdapterConfig
from keras_adapters.data.pipeline import make_preprocessor, tokenize
from keras_adapters.models.adapter_backbone import add_adapters
from keras_adapters.serving.export import export_text_classifier
from tests.helpers import saved_model_cli_show, serve_in_fresh_process, tiny_classifier

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the a cat dog sat on mat big".split()
A = ["the cat sat on the mat", "a big dog", ""]
B = ["the dog", "a cat sat", "big"]


def test_exports_serve_the_model_in_a_fresh_process(tmp_path):
    """Pair and single-sentence classifiers and a regressor, as serving loads them."""
    kinds = {"pair": (True, False), "single": (False, False), "regression": (True, True)}
    calls, expected = [], {}
    for kind, (is_pair, is_regression) in kinds.items():
        model, preprocessor = tiny_classifier(num_classes=1 if is_regression else 3)
        export_text_classifier(model, preprocessor, str(tmp_path / kind),
                               is_pair=is_pair, is_regression=is_regression)
        texts = {"sentence1": A, **({"sentence2": B} if is_pair else {})}
        logits = model.predict(tokenize(preprocessor, *map(tf.constant, texts.values())),
                               verbose=0)
        expected[kind] = ({"scores": logits[:, 0]} if is_regression
                          else {"probabilities": tf.nn.softmax(logits).numpy()})
        calls.append((tmp_path / kind, "serving_default", texts))
    for kind, outputs in zip(kinds, serve_in_fresh_process(*calls)):
        assert outputs.pop("__signatures__") == ["serving_adapter_drop", "serving_default"]
        assert outputs.keys() == expected[kind].keys()
        for name, value in expected[kind].items():
            np.testing.assert_allclose(outputs[name], value, atol=1e-5, err_msg=kind)
    shown = saved_model_cli_show(tmp_path / "pair")
    for name in ("sentence1", "sentence2"):
        assert f"inputs['{name}'] tensor_info:\n        dtype: DT_STRING" in shown
    assert "signature_def['serving_adapter_drop']" in shown


def test_export_replaces_an_existing_export_atomically(tmp_path):
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(VOCAB), num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=32)
    model = keras_hub.models.BertTextClassifier(backbone, num_classes=2, preprocessor=None)
    preprocessor = make_preprocessor(keras_hub.models.BertTokenizer(vocabulary=VOCAB), 32)
    target = tmp_path / "export"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    export_text_classifier(model, preprocessor, str(target), is_pair=False, is_regression=False)
    assert (target / "saved_model.pb").exists() and not (target / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_adapter_drop_signature_runs_the_requested_depth(tmp_path):
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(VOCAB), num_layers=3, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=32)
    adapted = add_adapters(backbone, AdapterConfig(adapter_size=2, initializer_std=0.5),
                           drop_first_n=1, robust_adapter_drop=True, seed=0)
    model = keras_hub.models.BertTextClassifier(adapted, num_classes=3, preprocessor=None)
    head = model.get_layer("logits")
    head.kernel.assign(head.kernel * 300.0)  # Confident enough for the depth to show.
    preprocessor = make_preprocessor(keras_hub.models.BertTokenizer(vocabulary=VOCAB), 32)
    export_text_classifier(model, preprocessor, str(tmp_path / "export"),
                           is_pair=True, is_regression=False)
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    features = tokenize(preprocessor, tf.constant(A), tf.constant(B))
    served = []
    for n in range(4):
        adapted.set_drop_first_n(n)
        expected = tf.nn.softmax(model.predict(features, verbose=0))
        outputs = loaded.signatures["serving_adapter_drop"](
            sentence1=tf.constant(A), sentence2=tf.constant(B), drop_first_n=tf.constant(n))
        np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
        served.append(outputs["probabilities"].numpy())
    assert np.abs(served[0] - served[3]).max() > 1e-4  # The depth matters.
    default = loaded.signatures["serving_default"](sentence1=tf.constant(A),
                                                   sentence2=tf.constant(B))
    np.testing.assert_allclose(default["probabilities"], served[1], atol=1e-6)  # Exported at 1.


def test_serving_answers_bad_requests_or_refuses_them_clearly(tmp_path):
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(VOCAB), num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=32)
    model = keras_hub.models.BertTextClassifier(backbone, num_classes=2, preprocessor=None)
    preprocessor = make_preprocessor(keras_hub.models.BertTokenizer(vocabulary=VOCAB), 32)
    export_text_classifier(model, preprocessor, str(tmp_path / "export"),
                           is_pair=True, is_regression=False)
    serve = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]

    def expected(first, second):
        features = tokenize(preprocessor, tf.constant(first), tf.constant(second))
        return tf.nn.softmax(model.predict(features, verbose=0)).numpy()

    long_text = "the big cat sat on the mat " * 500  # truncated to 32 tokens, as in training
    requests = [([""], [""], [""], [""]),
                ([long_text], ["a dog"], [long_text], ["a dog"]),
                ([b"the \xff\xfe cat"], [b"dog \xc3"], ["the \ufffd\ufffd cat"], ["dog \ufffd"])]
    for first, second, as_text_a, as_text_b in requests:
        outputs = serve(sentence1=tf.constant(first), sentence2=tf.constant(second))
        np.testing.assert_allclose(outputs["probabilities"], expected(as_text_a, as_text_b),
                                   atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="sentence2 must hold as many texts as sentence1"):
        serve(sentence1=tf.constant(["a", "b"]), sentence2=tf.constant(["a"]))
