"""8 threads calling one loaded SavedModel: no errors, the single-thread outputs."""

import itertools

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

from bench.serving_load import load_test
from keras_adapters.serving.export import export_text_classifier
from tests.helpers import tiny_classifier


def test_concurrent_calls_return_the_single_thread_outputs(tmp_path):
    model, preprocessor = tiny_classifier()
    export_text_classifier(model, preprocessor, str(tmp_path / "export"),
                           is_pair=True, is_regression=False)
    signature = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
    words = "the a cat dog sat on mat big".split()
    requests = [(" ".join(a), " ".join(b)) for a, b in
                itertools.islice(zip(itertools.permutations(words, 4),
                                     itertools.permutations(words[::-1], 3)), 16)]

    def serve(pair):
        return signature(sentence1=tf.constant([pair[0]]),
                         sentence2=tf.constant([pair[1]]))["probabilities"].numpy()

    result = load_test(serve, requests, threads=8, seconds=3.0)
    assert result["errors"] == [] and result["mismatches"] == 0
    assert result["calls"] > 8 and result["latency_ms"]["p99"] >= result["latency_ms"]["p50"]


def test_load_test_reports_errors_and_changed_outputs():
    calls = itertools.count()

    def flaky(request):
        n = next(calls)
        if n >= 4 and n % 7 == 0:
            raise RuntimeError("overloaded")
        return np.array([float(n >= 4 and n % 5 == 0)])

    result = load_test(flaky, [0, 1, 2, 3], threads=4, seconds=0.3)
    assert result["errors"] and all("overloaded" in e for e in result["errors"])
    assert result["mismatches"] > 0
