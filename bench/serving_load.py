r"""Load test of an exported classifier: 8 threads calling one SavedModel at once.

Exports all-MiniLM-L6-v2 with adapters (size 64) and an MRPC head as
`run_classifier.py` does, then, in a fresh process that imports only
TensorFlow and tensorflow-text, loads the SavedModel and:

1. answers every request once on one thread: the reference outputs and the
   single-thread latency;
2. runs `--threads` threads for `--seconds`, each sending requests in turn
   (one sentence pair each, from MRPC dev when `../shared/data/glue` is there).

It fails unless every concurrent call succeeds and returns the reference
output. Prints p50/p99 latency and throughput and writes JSON.

  python bench/serving_load.py --output=bench/results/serving_load.json
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "bench/results/serving_load.json", "JSON destination.")
flags.DEFINE_integer("threads", 8, "Concurrent callers.")
flags.DEFINE_float("seconds", 30.0, "How long the threads call.")
flags.DEFINE_integer("requests", 64, "Distinct requests (sentence pairs) cycled through.")
flags.DEFINE_string("glue_dir", "../shared/data/glue", "GLUE folder for real MRPC pairs.")
flags.DEFINE_string("serve_dir", None, "Internal: load-test this SavedModel and print JSON.")


def load_test(serve, requests, threads, seconds):
    """Call `serve(request)` from `threads` threads for `seconds`.

    Args:
        serve: function from one request to a NumPy array.
        requests: list of requests; each thread cycles through them from its
            own offset.
        threads: int.
        seconds: float, the calling time; calls under way at the end finish.

    Returns:
        dict: `errors` (list of str), `mismatches` (how many outputs differ
        from a single-thread call's by more than 1e-6), `calls`, `seconds`,
        `latency_ms` (`p50`, `p90`, `p99`, `max`), `calls_per_second`, and
        `single_thread_latency_ms` (`p50`, `p99`) of the reference pass.
    """
    reference, single = [], []
    for request in requests:
        start = time.perf_counter()
        reference.append(serve(request))
        single.append(time.perf_counter() - start)
    latencies, errors, mismatches = [], [], [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def caller(offset):
        i = offset
        while time.perf_counter() < deadline:
            index = i % len(requests)
            start = time.perf_counter()
            try:
                output = serve(requests[index])
            except Exception as e:  # noqa: BLE001  (every failure is reported)
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if np.abs(output - reference[index]).max() > 1e-6:
                    mismatches[0] += 1
            i += 1

    start = time.perf_counter()
    workers = [threading.Thread(target=caller, args=(k * len(requests) // threads,))
               for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1e3
    return {
        "errors": errors,
        "mismatches": mismatches[0],
        "calls": len(latencies),
        "seconds": wall,
        "calls_per_second": len(latencies) / wall,
        "latency_ms": {q: float(np.percentile(ms, p)) if ms.size else None
                       for q, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
        "single_thread_latency_ms": {
            "p50": float(np.percentile(single, 50) * 1e3),
            "p99": float(np.percentile(single, 99) * 1e3)},
    }


def sentence_pairs(count):
    """`count` MRPC dev pairs, or made-up ones without the data."""
    from keras_adapters.tasks.glue import data as glue

    try:
        dev = glue.read_tsv_split(FLAGS.glue_dir, "mrpc", "dev")
        return list(zip(dev.text_a, dev.text_b))[:count]
    except FileNotFoundError:
        words = "the cat sat on a mat while dogs ran past quickly and nobody saw it".split()
        rng = np.random.default_rng(0)
        return [(" ".join(rng.choice(words, 20)), " ".join(rng.choice(words, 15)))
                for _ in range(count)]


def export(export_dir):
    """MiniLM with random adapters (size 64) and a 2-class head, exported for pairs."""
    import keras
    import keras_hub

    from keras_adapters import AdapterConfig, add_adapters, from_pretrained
    from keras_adapters.data.pipeline import make_preprocessor
    from keras_adapters.serving.export import export_text_classifier

    keras.utils.set_random_seed(0)
    backbone, tokenizer = from_pretrained()
    model = keras_hub.models.BertTextClassifier(
        add_adapters(backbone, AdapterConfig(adapter_size=64, initializer_std=0.1)),
        num_classes=2, preprocessor=None)
    export_text_classifier(model, make_preprocessor(tokenizer, 128), export_dir,
                           is_pair=True, is_regression=False)


def serve_and_measure(export_dir):
    """The load test proper, in this (fresh) process."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

    signature = tf.saved_model.load(export_dir).signatures["serving_default"]

    def serve(pair):
        outputs = signature(sentence1=tf.constant([pair[0]]), sentence2=tf.constant([pair[1]]))
        return outputs["probabilities"].numpy()

    return load_test(serve, sentence_pairs(FLAGS.requests), FLAGS.threads, FLAGS.seconds)


def main(argv):
    del argv
    if FLAGS.serve_dir:
        print(json.dumps(serve_and_measure(FLAGS.serve_dir)))
        return
    from keras_adapters.utils.atomic import write_json

    with tempfile.TemporaryDirectory() as scratch:
        export_dir = os.path.join(scratch, "saved_model")
        export(export_dir)
        command = [sys.executable, __file__, f"--serve_dir={export_dir}", *sys.argv[1:]]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    result["config"] = {"threads": FLAGS.threads, "seconds": FLAGS.seconds,
                        "requests": FLAGS.requests, "model": "all-MiniLM-L6-v2 + adapters 64",
                        "batch_per_call": 1, "max_seq_length": 128,
                        "cpu_count": os.cpu_count()}
    write_json(FLAGS.output, result)
    latency = result["latency_ms"]
    print(f"{result['calls']} calls from {FLAGS.threads} threads in {result['seconds']:.1f} s "
          f"({result['calls_per_second']:.1f}/s): p50 {latency['p50']:.1f} ms, p99 "
          f"{latency['p99']:.1f} ms; single thread p50 "
          f"{result['single_thread_latency_ms']['p50']:.1f} ms; errors {len(result['errors'])}, "
          f"mismatches {result['mismatches']}")
    if result["errors"] or result["mismatches"]:
        raise SystemExit("The load test saw errors or outputs that differ from one thread's.")


if __name__ == "__main__":
    app.run(main)
