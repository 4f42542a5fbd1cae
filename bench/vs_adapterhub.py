r"""This library against AdapterHub (`adapters` 1.3.0 on PyTorch), side by side.

Issue 15, part 3. One BERT-base configuration on both sides (12 layers,
hidden 768, 12 heads, intermediate 3072, vocabulary 30522, 512 positions,
exact erf GELU, random weights) at batch 16 and sequence length 128, with the
same adapters (AdapterHub's `double_seq_bn`, reduction factor 768/64 = 12, so
size 64, swish; here `AdapterConfig(adapter_size=64, placement="double_seq_bn",
activation="silu")`) and the same 2-label head (AdapterHub's default: dropout,
dense, tanh, dropout, dense, on the first token; here
`ClassificationHead(2, layers=2, use_pooler=False)`). Rows:

- training step (loss, backprop, clipping at global norm 1, AdamW step):
  `full` fine-tuning; `adapters`, AdapterHub's `train_adapter` against
  `train_layer_norms=False` (adapters and head train: the like-for-like row);
  `adapters_layer_norms`, our Houlsby-paper default (the layer norms train
  too: our per-adapter copies; on AdapterHub the encoder's `LayerNorm`s
  unfrozen after `train_adapter`, the embeddings' stays frozen on both);
  `adapter_drop`, AdapterDrop of the lowest n layers (`--drop_first_n`, layer
  norms frozen: `set_drop_first_n` against `skip_layers=range(n)`);
- inference (`training=False` / `eval()` under `torch.no_grad()`): the
  `inference_bare` model (no adapter active) and `inference_adapter`;
- multi-task inference, `--tasks` adapters with heads: `separate_n{n}`, one
  pass per task, and `parallel_n{n}`, one `ParallelAdapterModel` call against
  `set_active_adapters(Parallel(...), skip_layers=range(n))`, at n = 0 and
  n = `--drop_first_n` (both libraries run the skipped layers once for all
  tasks);
- `matmul`: one `--matmul_size`-square fp32 matmul, the peak each framework
  reaches on this CPU;
- peak memory of each training arm.

Each library runs in its own persistent worker process (TensorFlow and
PyTorch clash in one process), started once with the same thread limits
(`--threads` intra-op threads through `tf.config.threading` and
`torch.set_num_threads`, and `OMP_NUM_THREADS`/`MKL_NUM_THREADS`), that builds
every arm's model once, traces it and runs it `--warmup` times. This parent
process then asks the workers in turn, over a pipe (JSON lines), to time
`--steps` calls of an arm: within each repeat every arm runs on both sides
before the next, which library goes first alternates from arm to arm and
from repeat to repeat, and the arm order rotates. The seconds of a repeat are
the mean of its steps; rows compare medians over `--repeats`, ours /
AdapterHub's. Each worker builds its own model per training arm (the
training arms share nothing, as in `adapter_speed.py`), and one model with
all tasks for the inference rows.

The PyTorch side is an idiomatic AdapterHub user's: `BertAdapterModel`,
`add_adapter`, `add_classification_head`, `train_adapter(name)`,
`model.train()`, what `AdapterTrainer` does per step (the loss the model
returns, `backward`, `clip_grad_norm_(1.0)`, fused `torch.optim.AdamW`,
Hugging Face Trainer's default from torch 2.8, with weight decay 0.01 except
biases and `LayerNorm.weight`, and a linear schedule), and `eval()` with
`torch.no_grad()` for inference. Ours uses the library's public API:
`AdapterBertBackbone`, `AdapterModel.add_head` and `train_adapter`,
`set_drop_first_n`, `AdapterModel.parallel`, `create_optimizer` (the
training scripts' AdamW: the same clipping, weight decay and schedule) and a
compiled Keras step (`train_on_batch`); inference as `bench/multi_task.py`
does it, a `tf.function` traced once per arm (the graph keeps the adapter
active while tracing; the AdapterDrop depth is read when run). The full
fine-tuning model is the backbone with no adapter and the same head.

Checks at startup: the bottleneck sizes, and the parameters each training
arm trains, agree between the libraries (ours: trainable weights; AdapterHub:
those that got a gradient, which leaves out the adapters AdapterDrop skips
and, under full fine-tuning, the unused pooler: `requires_grad` counts are
recorded too); each library's parallel logits equal its separate passes'.

Matmul FLOPs (the rate column) are counted analytically per token (B·s
tokens per batch), for hidden d, intermediate i, sequence s, adapter size m,
L layers; embeddings (a gather), pooler and head are left out (< 0.2%):

- a layer's forward: P = 2(4d² + 2di) in the projections, plus A = 4sd in
  attention's scores and weighted values; adapters add M = 8dm per layer
  (two adapters, each d→m→d);
- backward: each matmul's input gradient costs its forward again (attention's
  2A: both operands are activations) where anything below still trains, and
  its weight gradient its forward again only if the weight trains. Full
  fine-tuning: 2P + 2A in every layer (embeddings train). Adapters whose
  lowest trained layer is f (0, or n under AdapterDrop): P + 2A + 2M in the
  layers above f; in layer f the feed-forward input gradients (4di), the
  feed-forward adapter's input and weight gradients (4dm + 4dm), and the
  attention adapter's weight gradients and up-projection input gradient
  (4dm + 2dm); nothing below f. Layer norms cost no matmul, so both adapter
  rows count the same;
- multi-task, T tasks at depth n: separate T(L(P + A) + (L - n)M); ours
  parallel n(P + A) + T(L - n)(P + A + M); AdapterHub's copies the batch at
  the first adapter (after layer n's attention output projection), so it also
  shares that layer's 8d² + A: n(P + A) + (8d² + A) + T((L - n)(P + A + M) -
  (8d² + A));
- `matmul`: 2N³.

GFLOP/s = FLOPs / median seconds; "of peak" divides by `--peak_gflops`
(about 140 GFLOP/s for a large fp32 matmul on the 2-core AVX2 machine of
docs/facts.md; the `matmul` row measures it on this one).

Peak memory: after timing, a fresh worker per training arm and library
builds only that arm's model and trains `--warmup` + `--steps` steps; it
reports its peak resident set (VmHWM) and its resident set once the model is
built, before the first step. Their difference is what training adds to the
runtime and the weights: the traced step (TensorFlow), activations kept for
backprop, gradients, optimizer slots. Not `ru_maxrss`, which Linux carries
over from the parent across fork and exec; not tracemalloc, which sees
neither TensorFlow's nor PyTorch's allocator.

  python bench/vs_adapterhub.py --output=bench/results/vs_adapterhub.json

A quick smoke test on a tiny configuration:

  python bench/vs_adapterhub.py --num_layers=2 --hidden_dim=64 --num_heads=4 \
      --intermediate_dim=256 --adapter_size=8 --drop_first_n=1 --seq_length=16 \
      --batch_size=4 --repeats=2 --matmul_size=512 --output=/tmp/vs_adapterhub.json

Run it on an otherwise idle machine: PyTorch's OpenMP threads wait for each
other at the end of every op, so a core taken by another process stalls each
op by a scheduler time slice (on a tiny model under a load average of 4, a
forward pass took up to 0.3 s against 1 ms idle, with 2 threads); TensorFlow's
thread pool suffers far less. The load average before and after the run is
recorded, and a warning printed when it starts above 0.5.

`--jit_compile` compiles our side with XLA (default off, as in the training
scripts); `--inter_op_threads=1` runs one TensorFlow op at a time (PyTorch's
eager mode runs one at a time anyway).
"""

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "bench/results/vs_adapterhub.json", "JSON destination.")
flags.DEFINE_integer("num_layers", 12, "Transformer layers L.")
flags.DEFINE_integer("hidden_dim", 768, "Hidden size d.")
flags.DEFINE_integer("num_heads", 12, "Attention heads.")
flags.DEFINE_integer("intermediate_dim", 3072, "Feed-forward size i.")
flags.DEFINE_integer("batch_size", 16, "Examples per batch B.")
flags.DEFINE_integer("seq_length", 128, "Tokens per example s.")
flags.DEFINE_integer("adapter_size", 64, "Adapter bottleneck size m; AdapterHub's reduction "
                     "factor is hidden_dim / adapter_size.")
flags.DEFINE_integer("drop_first_n", 5, "AdapterDrop depth n of the training arm and of the "
                     "second multi-task depth.", lower_bound=1)
flags.DEFINE_integer("tasks", 8, "Tasks T (adapters with heads) of the multi-task rows.",
                     lower_bound=1)
flags.DEFINE_integer("repeats", 5, "Timed rounds; rows compare medians.", lower_bound=1)
flags.DEFINE_integer("steps", 1, "Calls per arm, library and repeat (their mean is the "
                     "repeat's value).", lower_bound=1)
flags.DEFINE_integer("warmup", 1, "Untimed calls per arm after tracing (the first traces).",
                     lower_bound=1)
flags.DEFINE_integer("threads", 2, "Intra-op threads of both libraries.", lower_bound=1)
flags.DEFINE_integer("inter_op_threads", 0,
                     "Inter-op threads of both; 0 keeps each library's default (TensorFlow: "
                     "one per core, so two ops may run at once; PyTorch's eager mode runs one).")
flags.DEFINE_boolean("jit_compile", False, "Compile our side with XLA.")
flags.DEFINE_float("peak_gflops", 140.0, "This CPU's fp32 matmul peak, GFLOP/s.")
flags.DEFINE_integer("matmul_size", 2048, "N of the N x N x N matmul row.")
flags.DEFINE_boolean("memory", True, "Measure each training arm's peak memory afterwards.")
flags.DEFINE_boolean("check_outputs", True,
                     "At startup, check each library's parallel logits against its separate "
                     "passes.")
flags.DEFINE_list("arms", None, "Only these rows (default: all), e.g. "
                  "adapters,inference_bare,matmul for a quick look.")
flags.DEFINE_enum("worker", None, ["ours", "adapterhub"], "Internal: serve as this worker.")
flags.DEFINE_string("memory_arm", None, "Internal: with --worker, measure one training arm's "
                    "memory and exit.")

VOCABULARY = 30522
MAX_POSITIONS = 512
NUM_CLASSES = 2
LIBRARIES = ("ours", "adapterhub")
TRAIN_ARMS = ("full", "adapters", "adapters_layer_norms", "adapter_drop")
LEARNING_RATE = 1e-4
TOTAL_STEPS = 10**6  # Of the linear schedules; the rate only has to be nonzero.


def depths():
    return (0, FLAGS.drop_first_n)


def task_names():
    return [f"task{index}" for index in range(FLAGS.tasks)]


def row_names():
    """Every timed arm, in table order."""
    multi = [f"{kind}_n{n}" for n in depths() for kind in ("separate", "parallel")]
    rows = [*TRAIN_ARMS, "inference_bare", "inference_adapter", *multi, "matmul"]
    unknown = set(FLAGS.arms or ()) - set(rows)
    if unknown:
        raise app.UsageError(f"--arms: unknown rows {sorted(unknown)}; rows are {rows}.")
    return [row for row in rows if not FLAGS.arms or row in FLAGS.arms]


def train_arms():
    """The training rows run."""
    return [arm for arm in TRAIN_ARMS if arm in row_names()]


def train_arm_settings(arm):
    """`(layer norms train, AdapterDrop depth)` of an adapter training arm."""
    return {"adapters": (False, 0), "adapters_layer_norms": (True, 0),
            "adapter_drop": (False, FLAGS.drop_first_n)}[arm]


def batch():
    """One random batch as numpy: token ids, segment ids, padding mask, labels."""
    rng = np.random.default_rng(0)
    shape = (FLAGS.batch_size, FLAGS.seq_length)
    return (rng.integers(0, VOCABULARY, shape).astype("int32"), np.zeros(shape, "int32"),
            np.ones(shape, "int32"), rng.integers(0, NUM_CLASSES, FLAGS.batch_size))


def resident_gb(field):
    """This process's resident set now ("VmRSS") or at its peak ("VmHWM"), GiB.

    As `adapter_speed.resident_gb`: not `ru_maxrss`, which a child inherits.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 2**20
    raise RuntimeError(f"/proc/self/status has no {field} line.")


# === Our side (TensorFlow): imports stay inside, PyTorch's worker never loads them ===


class ArmsWorker:
    """A library's worker: `arms`, `{arm: (prepare, run)}`, built by `build_arms`."""

    def build_arms(self, arms):
        """Build the requested training arms, and all inference arms if any is requested."""
        self.trainable, self.adapter_sizes, self.arms = {}, {}, {}
        for arm in arms:
            if arm in TRAIN_ARMS:
                self.arms[arm] = self.training_arm(arm)
        if any(arm not in TRAIN_ARMS for arm in arms):
            self.arms.update(self.inference_arms())
            self.arms["matmul"] = self.matmul_arm()


class OursWorker(ArmsWorker):
    """Every arm on this library, built, traced and warmed up."""

    library = "ours"

    def __init__(self, arms):
        import keras
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        if FLAGS.inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
        self.tf, self.keras = tf, keras
        token_ids, segment_ids, padding_mask, labels = batch()
        self.features = {"token_ids": token_ids, "segment_ids": segment_ids,
                         "padding_mask": padding_mask}
        self.labels = labels
        self.inputs = {name: tf.constant(value) for name, value in self.features.items()}
        self.build_arms(arms)

    def adapter_config(self, train_layer_norms):
        from keras_adapters import AdapterConfig

        return AdapterConfig(adapter_size=FLAGS.adapter_size, placement="double_seq_bn",
                             activation="silu", train_layer_norms=train_layer_norms)

    def backbone(self, adapters=None, drop_first_n=0):
        """An `AdapterBertBackbone` with random weights, built directly (no copy)."""
        from keras_adapters import AdapterBertBackbone

        return AdapterBertBackbone(
            vocabulary_size=VOCABULARY, num_layers=FLAGS.num_layers, num_heads=FLAGS.num_heads,
            hidden_dim=FLAGS.hidden_dim, intermediate_dim=FLAGS.intermediate_dim,
            max_sequence_length=MAX_POSITIONS, hidden_activation="gelu",
            adapter_configs={name: c.to_dict() for name, c in (adapters or {}).items()},
            active_adapter=next(iter(adapters), None) if adapters else None,
            drop_first_n=drop_first_n)

    def head(self, name):
        from keras_adapters import ClassificationHead

        return ClassificationHead(NUM_CLASSES, dropout=0.1, layers=2, use_pooler=False,
                                  name=f"head_{name}")

    def training_model(self, arm):
        """The compiled model of a training arm."""
        from keras_adapters import AdapterModel, count_parameters, create_optimizer

        keras = self.keras
        keras.utils.set_random_seed(0)
        if arm == "full":
            backbone = self.backbone()
            inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name)
                      for name in backbone.input}
            model = keras.Model(inputs, self.head("full")(backbone.features(backbone(inputs))))
        else:
            layer_norms, drop = train_arm_settings(arm)
            backbone = self.backbone({"task": self.adapter_config(layer_norms)}, drop)
            model = AdapterModel(backbone)
            model.add_head("task", self.head("task"))
            model.train_adapter("task")  # Reads the AdapterDrop depth.
            part = backbone.layer_adapters("task")[FLAGS.num_layers - 1]
            self.adapter_sizes[arm] = part.feedforward_adapter.bottleneck_dim
        model.compile(optimizer=create_optimizer(LEARNING_RATE, TOTAL_STEPS),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=FLAGS.jit_compile)
        self.trainable[arm] = count_parameters(model).trainable
        return model

    def training_arm(self, arm):
        model = self.training_model(arm)
        return (lambda: None), lambda: model.train_on_batch(self.features, self.labels)

    def trace(self, function):
        """`function` of the batch as a traced `tf.function` (as `bench/multi_task.py`)."""
        tf = self.tf
        spec = {name: tf.TensorSpec((FLAGS.batch_size, FLAGS.seq_length), tf.int32)
                for name in self.inputs}
        graph_function = tf.function(function, input_signature=[spec],
                                     jit_compile=FLAGS.jit_compile)
        graph_function.get_concrete_function()
        return graph_function

    def inference_arms(self):
        """`{arm: (prepare, run)}` of the inference and multi-task rows, on one model."""
        from keras_adapters import AdapterModel

        self.keras.utils.set_random_seed(0)
        tasks = task_names()
        config = self.adapter_config(train_layer_norms=False)
        backbone = self.backbone({task: config for task in tasks})
        model = AdapterModel(backbone)
        for task in tasks:
            model.add_head(task, self.head(task))
        backbone.set_active_adapters(None)  # The graph keeps the adapter active now.
        bare = self.trace(lambda inputs: model.heads[tasks[0]](
            backbone.features(backbone(inputs, training=False)), training=False))
        singles = {}
        for task in tasks:
            model.set_active_adapters(task)
            singles[task] = self.trace(lambda inputs: model(inputs, training=False))
        parallels = {n: self.trace(model.parallel(tasks, drop_first_n=n)) for n in depths()}

        def at_depth(n):
            return lambda: backbone.set_drop_first_n(n)

        arms = {
            "inference_bare": (at_depth(0), lambda: bare(self.inputs).numpy()),
            "inference_adapter": (at_depth(0), lambda: singles[tasks[0]](self.inputs).numpy()),
        }
        for n in depths():
            arms[f"separate_n{n}"] = (at_depth(n), lambda: [
                run(self.inputs).numpy() for run in singles.values()])
            arms[f"parallel_n{n}"] = (at_depth(0), lambda run=parallels[n]: [
                logits.numpy() for logits in run(self.inputs).values()])
        if FLAGS.check_outputs:
            for n in depths():
                backbone.set_drop_first_n(n)
                for task, logits in parallels[n](self.inputs).items():
                    np.testing.assert_allclose(logits.numpy(), singles[task](self.inputs).numpy(),
                                               rtol=1e-4, atol=1e-4, err_msg=f"{task} at n={n}")
        return arms

    def matmul_arm(self):
        tf = self.tf
        a = tf.random.normal((FLAGS.matmul_size, FLAGS.matmul_size), seed=0)
        b = tf.random.normal((FLAGS.matmul_size, FLAGS.matmul_size), seed=1)
        return (lambda: None), lambda: tf.linalg.matmul(a, b).shape

    def threads(self):
        tf = self.tf
        return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                "jit_compile": FLAGS.jit_compile}


# === AdapterHub's side (PyTorch): imports stay inside, TensorFlow's worker never loads them ===


class AdapterHubWorker(ArmsWorker):
    """Every arm on AdapterHub, built and warmed up."""

    library = "adapterhub"

    def __init__(self, arms):
        import logging

        import torch

        torch.set_num_threads(FLAGS.threads)
        if FLAGS.inter_op_threads:
            torch.set_num_interop_threads(FLAGS.inter_op_threads)
        # Quiet "There are adapters available but none are activated", logged at every
        # forward pass of the bare model.
        logging.getLogger("adapters").setLevel(logging.ERROR)
        self.torch = torch
        token_ids, segment_ids, padding_mask, labels = batch()
        self.inputs = {"input_ids": torch.tensor(token_ids, dtype=torch.long),
                       "token_type_ids": torch.tensor(segment_ids, dtype=torch.long),
                       "attention_mask": torch.tensor(padding_mask, dtype=torch.long)}
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.build_arms(arms)

    def model(self):
        import adapters
        from transformers import BertConfig

        self.torch.manual_seed(0)
        return adapters.BertAdapterModel(BertConfig(
            vocab_size=VOCABULARY, hidden_size=FLAGS.hidden_dim,
            num_hidden_layers=FLAGS.num_layers, num_attention_heads=FLAGS.num_heads,
            intermediate_size=FLAGS.intermediate_dim, max_position_embeddings=MAX_POSITIONS,
            hidden_act="gelu"))

    def adapter_config(self):
        import adapters

        return adapters.DoubleSeqBnConfig(reduction_factor=FLAGS.hidden_dim / FLAGS.adapter_size)

    def training_model(self, arm):
        """`(model, step)`: a training arm's model and one training step."""
        import transformers

        torch = self.torch
        model = self.model()
        if arm != "full":
            model.add_adapter("task", config=self.adapter_config())
        model.add_classification_head("task", num_labels=NUM_CLASSES)
        if arm != "full":
            model.train_adapter("task")
            layer_norms, drop = train_arm_settings(arm)
            if layer_norms:
                for name, parameter in model.bert.encoder.named_parameters():
                    if "LayerNorm" in name:
                        parameter.requires_grad = True
            if drop:  # After train_adapter, which resets skip_layers.
                model.set_active_adapters("task", skip_layers=list(range(drop)))
            layer = model.bert.encoder.layer[FLAGS.num_layers - 1]
            self.adapter_sizes[arm] = layer.output.adapters["task"].adapter_up.in_features
        model.active_head = "task"
        model.train()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        no_decay = ("bias", "LayerNorm.weight")  # Hugging Face Trainer's groups.
        optimizer = torch.optim.AdamW([
            {"params": [p for n, p in named if not any(k in n for k in no_decay)],
             "weight_decay": 0.01},
            {"params": [p for n, p in named if any(k in n for k in no_decay)],
             "weight_decay": 0.0},
        ], lr=LEARNING_RATE, eps=1e-6, fused=True)
        schedule = transformers.get_linear_schedule_with_warmup(
            optimizer, TOTAL_STEPS // 10, TOTAL_STEPS)
        parameters = [p for _, p in named]
        counts = self.trainable[arm] = {"requires_grad": sum(p.numel() for p in parameters)}

        def step():
            loss = model(**self.inputs, labels=self.labels).loss
            loss.backward()
            if "got_gradient" not in counts:
                counts["got_gradient"] = sum(p.numel() for p in parameters if p.grad is not None)
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.item()

        return model, step

    def training_arm(self, arm):
        _, step = self.training_model(arm)
        return (lambda: None), step

    def inference_arms(self):
        """`{arm: (prepare, run)}` of the inference and multi-task rows, on one model."""
        from adapters.composition import Parallel

        torch = self.torch
        tasks = task_names()
        model = self.model()
        for task in tasks:
            model.add_adapter(task, config=self.adapter_config())
            model.add_classification_head(task, num_labels=NUM_CLASSES)
        model.eval()

        def forward():
            with torch.no_grad():
                return model(**self.inputs)

        def bare():
            model.set_active_adapters(None)
            model.active_head = tasks[0]

        def single(task, n):
            model.set_active_adapters(task, skip_layers=list(range(n)) if n else None)
            return forward().logits

        def parallel(n):
            model.set_active_adapters(Parallel(*tasks), skip_layers=list(range(n)) if n else None)

        arms = {
            "inference_bare": (bare, lambda: forward().logits),
            "inference_adapter": (lambda: model.set_active_adapters(tasks[0]),
                                  lambda: forward().logits),
        }
        for n in depths():
            arms[f"separate_n{n}"] = (lambda: None, lambda n=n: [single(t, n) for t in tasks])
            arms[f"parallel_n{n}"] = (lambda n=n: parallel(n),
                                      lambda: [out.logits for out in forward()])
        if FLAGS.check_outputs:
            for n in depths():
                parallel(n)
                together = [out.logits.numpy() for out in forward()]
                for task, logits in zip(tasks, together):
                    np.testing.assert_allclose(logits, single(task, n).numpy(), rtol=1e-4,
                                               atol=1e-4, err_msg=f"{task} at n={n}")
        return arms

    def matmul_arm(self):
        torch = self.torch
        generator = torch.Generator().manual_seed(0)
        a, b = (torch.randn(FLAGS.matmul_size, FLAGS.matmul_size, generator=generator)
                for _ in range(2))
        return (lambda: None), lambda: torch.mm(a, b).shape

    def threads(self):
        torch = self.torch
        return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}


WORKERS = {"ours": OursWorker, "adapterhub": AdapterHubWorker}


def serve():
    """Worker: build every arm, report, then time arms on request (JSON lines)."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # Anything else printed goes to stderr, not into the protocol.

    def send(message):
        protocol.write(json.dumps(message) + "\n")

    if FLAGS.memory_arm:  # A fresh process: this arm alone.
        worker = WORKERS[FLAGS.worker]([FLAGS.memory_arm])
        built = resident_gb("VmRSS")
        _, run = worker.arms[FLAGS.memory_arm]
        for _ in range(FLAGS.warmup + FLAGS.steps):
            run()
        return send({"built_gb": built, "peak_gb": resident_gb("VmHWM")})
    start = time.perf_counter()
    worker = WORKERS[FLAGS.worker](row_names())
    for prepare, run in worker.arms.values():
        prepare()
        for _ in range(FLAGS.warmup):
            run()
    send({"ready": True, "build_and_warmup_seconds": time.perf_counter() - start,
          "trainable": worker.trainable, "adapter_sizes": worker.adapter_sizes,
          "threads": worker.threads(), "pid": os.getpid()})
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("exit"):
            return
        prepare, run = worker.arms[request["arm"]]
        prepare()
        seconds = []
        for _ in range(request["steps"]):
            begin = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - begin)
        send({"seconds": seconds})


# === The parent: orchestration, FLOPs, the table ===


def worker_command(library, memory_arm=None):
    passed = [a for a in sys.argv[1:] if not a.startswith(("--worker", "--memory_arm"))]
    command = [sys.executable, os.path.abspath(__file__), f"--worker={library}", *passed]
    return command + ([f"--memory_arm={memory_arm}"] if memory_arm else [])


def worker_env(library):
    threads = str(FLAGS.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1")}
    if library == "adapterhub":  # transformers would import TensorFlow too.
        env.update(USE_TF="0", USE_TORCH="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


class Worker:
    """The parent's handle on one persistent worker process."""

    def __init__(self, library):
        self.library = library
        self.process = subprocess.Popen(worker_command(library), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1,
                                        env=worker_env(library))

    def receive(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"The {self.library} worker exited ({self.process.wait()}); "
                               "its error is above.")
        return json.loads(line)

    def time(self, arm):
        self.process.stdin.write(json.dumps({"arm": arm, "steps": FLAGS.steps}) + "\n")
        return self.receive()["seconds"]

    def close(self):
        self.process.stdin.write(json.dumps({"exit": True}) + "\n")
        self.process.stdin.close()
        self.process.wait()


def check_like_for_like(ready):
    """Raise unless both sides have the same adapters and train the same parameters.

    Returns:
        {arm: {"ours": trainable, "adapterhub_got_gradient": ...,
        "adapterhub_requires_grad": ...}}.
    """
    ours, theirs = ready["ours"], ready["adapterhub"]
    if ours["adapter_sizes"] != theirs["adapter_sizes"]:
        raise AssertionError(f"Adapter sizes differ: ours {ours['adapter_sizes']}, "
                             f"AdapterHub's {theirs['adapter_sizes']}.")
    counts = {}
    for arm in train_arms():
        mine, hub = ours["trainable"][arm], theirs["trainable"][arm]
        counts[arm] = {"ours": mine, "adapterhub_got_gradient": hub["got_gradient"],
                       "adapterhub_requires_grad": hub["requires_grad"]}
        # Ours keeps the unused pooler trainable under full fine-tuning, as
        # requires_grad does; everywhere else both train exactly what gets a gradient.
        expected = hub["requires_grad"] if arm == "full" else hub["got_gradient"]
        if mine != expected:
            raise AssertionError(f"{arm}: we train {mine:,} parameters, AdapterHub {hub}.")
    return counts


def flops(arm, library):
    """Matmul FLOPs of one call of `arm` (see the module docstring)."""
    d, i, s, m = FLAGS.hidden_dim, FLAGS.intermediate_dim, FLAGS.seq_length, FLAGS.adapter_size
    layers, tasks = FLAGS.num_layers, FLAGS.tasks
    if arm == "matmul":
        return 2 * FLAGS.matmul_size**3
    projections, attention, adapters = 2 * (4 * d * d + 2 * d * i), 4 * s * d, 8 * d * m
    layer = projections + attention
    if arm == "full":
        per_token = layers * 3 * layer
    elif arm in TRAIN_ARMS:
        first = train_arm_settings(arm)[1]
        per_token = layers * layer + (layers - first) * adapters  # forward
        per_token += (layers - 1 - first) * (projections + 2 * attention + 2 * adapters)
        per_token += 4 * d * i + 8 * d * m + 6 * d * m  # the lowest trained layer
    elif arm == "inference_bare":
        per_token = layers * layer
    elif arm == "inference_adapter":
        per_token = layers * (layer + adapters)
    else:
        kind, n = arm.split("_n")
        n = int(n)
        if kind == "separate":
            per_token = tasks * (layers * layer + (layers - n) * adapters)
        else:
            shared = n * layer
            if library == "adapterhub":  # Copied after layer n's attention output projection.
                shared += 8 * d * d + attention
            per_token = shared + tasks * ((layers - n) * (layer + adapters) - (shared - n * layer))
    return per_token * FLAGS.batch_size * s


def timed(workers):
    """{arm: {library: [seconds per call, one per repeat]}}, alternating."""
    arms = row_names()
    seconds = {arm: {library: [] for library in LIBRARIES} for arm in arms}
    for repeat in range(FLAGS.repeats):
        shift = repeat % len(arms)
        for index, arm in enumerate(arms[shift:] + arms[:shift]):
            order = LIBRARIES if (repeat + index) % 2 == 0 else LIBRARIES[::-1]
            for library in order:
                time.sleep(0.2)  # Let the other worker's spinning threads go to sleep.
                calls = workers[library].time(arm)
                seconds[arm][library].append(float(np.mean(calls)))
        print(f"repeat {repeat + 1}/{FLAGS.repeats} done", file=sys.stderr, flush=True)
    return seconds


def memory():
    """{arm: {library: {"built_gb", "peak_gb"}}}, a fresh process each."""
    result = {arm: {} for arm in train_arms()}
    for index, arm in enumerate(train_arms()):
        for library in (LIBRARIES if index % 2 == 0 else LIBRARIES[::-1]):
            output = subprocess.run(worker_command(library, arm), capture_output=True,
                                    text=True, env=worker_env(library))
            if output.returncode:
                raise RuntimeError(f"{library} memory of {arm} failed:\n{output.stderr[-3000:]}")
            result[arm][library] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine():
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0))}
    with open("/proc/cpuinfo") as cpuinfo:
        lines = cpuinfo.read().splitlines()
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            info["cpu"] = value.strip()
        if key.strip() == "flags":
            cpu_flags = value.split()
            info["avx2"], info["avx512f"] = "avx2" in cpu_flags, "avx512f" in cpu_flags
            break
    with open("/proc/meminfo") as meminfo:
        info["memory_gb"] = int(meminfo.readline().split()[1]) / 2**20
    return info


def git_state():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        return subprocess.run(["git", "-C", root, *args], capture_output=True,
                              text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def print_table(rows, speedups, memory_rows, counts):
    peak = "measured_peak" if "matmul" in rows else "peak"
    print(f"{'row':22s} {'ours s':>9s} {'AH s':>9s} {'ours/AH':>8s} "
          f"{'ours GF/s':>10s} {'AH GF/s':>9s} {'ours pk':>8s} {'AH pk':>7s}  ({peak})")
    for arm, row in rows.items():
        print(f"{arm:22s} {row['ours_seconds']:9.4f} {row['adapterhub_seconds']:9.4f} "
              f"{row['ratio_ours_over_adapterhub']:7.3f}x "
              f"{row['ours_gflops']:10.1f} {row['adapterhub_gflops']:9.1f} "
              f"{row[f'ours_fraction_of_{peak}']:8.1%} "
              f"{row[f'adapterhub_fraction_of_{peak}']:7.1%}")
    for n, speedup in speedups.items():
        print(f"separate / parallel at n={n}: ours {speedup['ours']:.2f}x, "
              f"AdapterHub {speedup['adapterhub']:.2f}x")
    if memory_rows:
        print(f"{'peak memory GiB':22s} {'ours':>9s} {'AH':>9s} {'ours/AH':>8s} "
              f"{'ours +train':>12s} {'AH +train':>10s}")
        for arm, row in memory_rows.items():
            print(f"{arm:22s} {row['ours']['peak_gb']:9.2f} {row['adapterhub']['peak_gb']:9.2f} "
                  f"{row['ratio_ours_over_adapterhub']:7.3f}x "
                  f"{row['ours']['peak_gb'] - row['ours']['built_gb']:12.2f} "
                  f"{row['adapterhub']['peak_gb'] - row['adapterhub']['built_gb']:10.2f}")
    print(f"{'trained parameters':22s} {'ours':>12s} {'AH got grad':>12s} {'AH req grad':>12s}")
    for arm, count in counts.items():
        print(f"{arm:22s} {count['ours']:12,d} {count['adapterhub_got_gradient']:12,d} "
              f"{count['adapterhub_requires_grad']:12,d}")


def main(argv):
    del argv
    if FLAGS.drop_first_n >= FLAGS.num_layers:
        raise app.UsageError("--drop_first_n must be below --num_layers.")
    if FLAGS.hidden_dim % FLAGS.adapter_size:
        raise app.UsageError("--adapter_size must divide --hidden_dim (AdapterHub's "
                             "reduction factor).")
    if FLAGS.worker:
        return serve()
    start = time.perf_counter()
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(f"WARNING: load average {load_before[0]:.2f} before starting: other processes "
              "share the cores, which slows PyTorch's OpenMP threads far more than "
              "TensorFlow's (module docstring).", file=sys.stderr, flush=True)
    workers = {library: Worker(library) for library in LIBRARIES}  # They build at once.
    ready = {library: worker.receive() for library, worker in workers.items()}
    counts = check_like_for_like(ready)
    print(f"workers ready (build and warm-up: ours {ready['ours']['build_and_warmup_seconds']:.0f}"
          f" s, AdapterHub {ready['adapterhub']['build_and_warmup_seconds']:.0f} s); "
          f"trained parameters {counts}", file=sys.stderr, flush=True)
    seconds = timed(workers)
    for worker in workers.values():
        worker.close()
    rows = {}
    for arm, by_library in seconds.items():
        row = {}
        for library in LIBRARIES:
            median = float(np.median(by_library[library]))
            row[f"{library}_seconds"] = median
            row[f"{library}_flops"] = flops(arm, library)
            row[f"{library}_gflops"] = flops(arm, library) / median / 1e9
            row[f"{library}_fraction_of_peak"] = row[f"{library}_gflops"] / FLAGS.peak_gflops
            row[f"{library}_seconds_by_repeat"] = by_library[library]
        row["ratio_ours_over_adapterhub"] = row["ours_seconds"] / row["adapterhub_seconds"]
        rows[arm] = row
    if "matmul" in rows:  # This CPU's own peak: the faster library's large matmul.
        peak = max(rows["matmul"][f"{library}_gflops"] for library in LIBRARIES)
        for row in rows.values():
            for library in LIBRARIES:
                row[f"{library}_fraction_of_measured_peak"] = row[f"{library}_gflops"] / peak
    speedups = {n: {library: rows[f"separate_n{n}"][f"{library}_seconds"]
                    / rows[f"parallel_n{n}"][f"{library}_seconds"] for library in LIBRARIES}
                for n in depths() if f"parallel_n{n}" in rows and f"separate_n{n}" in rows}
    memory_rows = {}
    if FLAGS.memory:
        for arm, by_library in memory().items():
            memory_rows[arm] = {**by_library, "ratio_ours_over_adapterhub":
                                by_library["ours"]["peak_gb"] / by_library["adapterhub"]["peak_gb"]}
    result = {
        "config": {name: FLAGS[name].value for name in (
            "num_layers", "hidden_dim", "num_heads", "intermediate_dim", "batch_size",
            "seq_length", "adapter_size", "drop_first_n", "tasks", "repeats", "steps", "warmup",
            "threads", "inter_op_threads", "jit_compile", "peak_gflops", "matmul_size",
            "check_outputs", "arms")}
        | {"vocabulary_size": VOCABULARY, "max_sequence_length": MAX_POSITIONS,
           "hidden_activation": "gelu (exact erf)", "adapterhub_adapter_config":
           f"double_seq_bn, reduction_factor={FLAGS.hidden_dim / FLAGS.adapter_size}, swish",
           "ours_adapter_config": f"AdapterConfig(adapter_size={FLAGS.adapter_size}, "
           "placement='double_seq_bn', activation='silu')"},
        "method": (
            "Each library in its own persistent worker process, same intra-op threads. Per "
            "repeat every arm runs --steps calls on both sides (which goes first alternates, "
            "arm order rotates); a repeat's value is the mean of its calls, a row's the median "
            "over repeats. Training arms: seconds per step; inference: per batch; multi-task: "
            "per batch through all tasks. FLOPs are matmul FLOPs counted analytically (module "
            "docstring); fraction_of_peak = GFLOP/s / peak_gflops; fraction_of_measured_peak "
            "= GFLOP/s / the faster library's matmul row. Memory: VmHWM of a fresh "
            "process per arm and library after --warmup + --steps steps; built_gb its VmRSS "
            "once the model is built."),
        "rows": rows,
        "separate_over_parallel": speedups,
        "train_peak_memory_gb": memory_rows,
        "trained_parameters": counts,
        "adapter_sizes": ready["ours"]["adapter_sizes"],
        "threads": {library: ready[library]["threads"] for library in LIBRARIES},
        "build_and_warmup_seconds": {library: ready[library]["build_and_warmup_seconds"]
                                     for library in LIBRARIES},
        "versions": {package: version(package) for package in (
            "tensorflow", "keras", "keras-hub", "keras-adapters", "torch", "transformers",
            "adapters", "numpy")},
        "machine": machine(),
        "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
        "git": git_state(),
        "wall_seconds": time.perf_counter() - start,
    }
    from keras_adapters.utils.atomic import write_json  # Loads TensorFlow: only now.

    write_json(FLAGS.output, result)
    print_table(rows, speedups, memory_rows, counts)
    print(f"wall time {result['wall_seconds']:.0f} s; JSON in {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
