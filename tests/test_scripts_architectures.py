"""The training scripts take every architecture through --init_from (real data, tiny models),
with every step compiled by XLA (--jit_compile), as on a TPU, and once in mixed_bfloat16.

RoBERTa (byte-level BPE, no segment ids, keras-hub's RobertaTextClassifier)
and ELECTRA (WordPiece, no keras-hub classifier: ClassificationHead) on MRPC;
DistilBERT (WordPiece, no segment ids) on SQuAD. Each from a keras-hub preset
folder saved here.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import (
    ARCHITECTURES,
    REPO_ROOT,
    SQUAD_DEV,
    SQUAD_TRAIN,
    TEXTS_A,
    TEXTS_B,
    backup_step,
    require_squad,
    saved_model_cli_show,
    serve_in_fresh_process,
)

ARCH = {arch.name: arch for arch in ARCHITECTURES}
TINY_RUN = ["--num_epochs=1", "--batch_size=16", "--max_seq_length=32", "--save_every_steps=1"]


def _preset(arch, folder):
    arch.backbone().save_to_preset(str(folder))
    arch.make_tokenizer().save_to_preset(str(folder))
    return folder


def _run(script, *flags):
    result = subprocess.run([sys.executable, str(REPO_ROOT / script), *flags],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("name, dtype_policy", [("roberta", "float32"),
                                               ("electra", "mixed_bfloat16")])
def test_run_classifier_trains_scores_and_exports(name, dtype_policy, tmp_path, glue_dir):
    preset = _preset(ARCH[name], tmp_path / "preset")
    _run("run_classifier.py", "--task=mrpc", f"--data_dir={glue_dir}", f"--init_from={preset}",
         f"--model_dir={tmp_path / 'run'}", "--max_train_examples=32",
         "--max_eval_examples=16", "--jit_compile", f"--dtype_policy={dtype_policy}",
         "--steps_per_execution=2", *TINY_RUN)
    results = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert 0 <= results["dev"]["accuracy"] <= 1
    assert backup_step(tmp_path / "run") == 2  # 32 examples in batches of 16.
    (served,) = serve_in_fresh_process((tmp_path / "run" / "saved_model", "serving_default",
                                        {"sentence1": TEXTS_A, "sentence2": TEXTS_B}))
    assert served["probabilities"].shape == (3, 2)
    signatures = saved_model_cli_show(tmp_path / "run" / "saved_model")
    assert "DT_FLOAT" in signatures and "DT_BFLOAT16" not in signatures  # float32 outputs.
    np.testing.assert_allclose(served["probabilities"].sum(1), 1.0, rtol=1e-5)


def test_run_squad_with_distil_bert(tmp_path):
    require_squad()
    preset = _preset(ARCH["distil_bert"], tmp_path / "preset")
    _run("run_squad.py", f"--train_file={SQUAD_TRAIN}", f"--predict_file={SQUAD_DEV}",
         f"--init_from={preset}", f"--model_dir={tmp_path / 'run'}", "--max_train_examples=16",
         "--max_predict_examples=8", "--doc_stride=8", "--max_query_length=8", "--jit_compile",
         *TINY_RUN)
    predictions = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert len(predictions) == 8


def test_run_squad_refuses_a_tokenizer_without_offsets(tmp_path):
    require_squad()
    preset = _preset(ARCH["roberta"], tmp_path / "preset")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run_squad.py"), f"--train_file={SQUAD_TRAIN}",
         f"--predict_file={SQUAD_DEV}", f"--init_from={preset}",
         f"--model_dir={tmp_path / 'run'}", "--max_train_examples=4", *TINY_RUN],
        capture_output=True, text=True, timeout=900)
    assert result.returncode != 0
    assert "SQuAD features need a WordPiece tokenizer" in result.stderr
