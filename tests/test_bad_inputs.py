"""Every bad input gets a clear error naming the file, line and field, or the flag.

`CASES` is the table the README's "Bad input" section lists: each row makes
one bad input and names the error it must raise. The scripts turn these
exceptions into a non-zero exit (absl prints the message); two subprocess
runs check that too. A NaN loss is tested with real training in
`test_resume.py`.
"""

import json
import subprocess
import sys

import pytest
from absl import flags
from absl.testing import flagsaver

import run_classifier
from keras_adapters.configuration.adapter_config import AdapterConfig
from keras_adapters.models.adapter_model import AdapterModel
from keras_adapters.saving.adapter_files import load_adapter, save_adapter
from keras_adapters.saving.checkpoints import from_pretrained
from keras_adapters.tasks.glue import data as glue
from keras_adapters.tasks.squad import data as squad
from keras_adapters.training import cli, distribute
from keras_adapters.training.resume import TrainingState
from tests.helpers import GLUE_DIR, REPO_ROOT, script_flags, write_hf_folder
from tests.helpers import TINY_HF_CONFIG as TINY
from tests.helpers import tiny_hf_tensors as tiny_tensors

MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"


def _tsv(tmp_path, folder, text, split="train"):
    (tmp_path / folder).mkdir(exist_ok=True)
    (tmp_path / folder / f"{split}.tsv").write_text(text, encoding="utf-8")
    return tmp_path


def _read(task, folder, text):
    return lambda tmp: glue.read_tsv_split(_tsv(tmp, folder, text), task, "train")


def _squad(paragraph_edit=None, qa_edit=None, training=True, data=None):
    def make(tmp):
        qa = {"id": "q1", "question": "Who sat?",
              "answers": [{"text": "the cat", "answer_start": 0}]}
        paragraph = {"context": "the cat sat on the mat", "qas": [qa]}
        (qa_edit or (lambda q: None))(qa)
        (paragraph_edit or (lambda p: None))(paragraph)
        path = tmp / "squad.json"
        content = {"data": [{"paragraphs": [paragraph]}]} if data is None else data
        path.write_text(content if isinstance(content, str) else json.dumps(content),
                        encoding="utf-8")
        return squad.read_squad(str(path), training=training)
    return make


def _flags(*argv, call=cli.validate_flags):
    def make(tmp):
        with script_flags(tmp, *argv):
            return call()
    return make


def _real_glue():
    if not GLUE_DIR.is_dir():
        pytest.skip(f"real GLUE data not found at {GLUE_DIR}")
    return GLUE_DIR


def _tiny(tmp, seed=0):
    return write_hf_folder(tmp / f"tiny{seed}", tiny_tensors(seed=seed))


def _adapter_from_other_backbone(config_change=None, seed=1):
    """Save an adapter on one tiny backbone, load it on another."""
    def make(tmp):
        source, _ = from_pretrained(_tiny(tmp, 0))
        model = AdapterModel(source)
        model.add_adapter("a", AdapterConfig(adapter_size=2))
        save_adapter(model, str(tmp / "adapter"), "a")
        other_config = dict(TINY, **(config_change or {}))
        other = write_hf_folder(tmp / "other", tiny_tensors(other_config, seed=seed),
                                config=other_config)
        target, _ = from_pretrained(other)
        return load_adapter(AdapterModel(target), str(tmp / "adapter"))
    return make


def _backup_from_other_backbone(tmp):
    backbone, _ = from_pretrained(_tiny(tmp, 0))
    model = AdapterModel(backbone)
    model.compile(optimizer="adam")
    TrainingState(model, str(tmp), {"backbone": "checkpoint A"}).save(3)
    return TrainingState(model, str(tmp), {"backbone": "checkpoint B"}).restore()


def _vocabulary_too_large(tmp):
    folder = tmp / "tiny"
    write_hf_folder(folder, tiny_tensors())
    with open(folder / "vocab.txt", "a", encoding="utf-8") as f:
        f.write("extra\n")
    return from_pretrained(str(folder))


CASES = {
    # ---- data files
    "missing GLUE file": (
        lambda tmp: glue.read_tsv_split(tmp, "mrpc", "train"),
        FileNotFoundError, r"GLUE mrpc train file not found: .*MRPC/train\.tsv"),
    "empty GLUE file": (
        _read("mrpc", "MRPC", ""), glue.GlueFormatError, r"MRPC/train\.tsv:1: empty file"),
    "GLUE header only": (
        _read("mrpc", "MRPC", MRPC_HEADER), glue.GlueFormatError,
        r"train\.tsv:2: no examples after the header"),
    "GLUE row with too few columns": (
        _read("mrpc", "MRPC", MRPC_HEADER + "1\t1\t2\ta\tb\n0\t3\ta\n"), glue.GlueFormatError,
        r"train\.tsv:3: expected 5 tab-separated fields .*found 3"),
    "GLUE unknown label": (
        _read("mrpc", "MRPC", MRPC_HEADER + "2\t1\t2\ta\tb\n"), glue.GlueFormatError,
        r"train\.tsv:2: field 'Quality' has unknown label '2'"),
    "STS-B non-numeric score": (
        _read("stsb", "STS-B",
              "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
              "sentence2\tscore\n0\tg\tf\ty\t0\ts\ts\ta\tb\thigh\n"),
        glue.GlueFormatError, r"STS-B/train\.tsv:2: field 'score' must be a finite number, "
                              r"got 'high'"),
    "SQuAD missing file": (
        lambda tmp: squad.read_squad(str(tmp / "absent.json"), training=True),
        FileNotFoundError, r"absent\.json"),
    "SQuAD empty file": (
        _squad(data=""), squad.SquadFormatError, r"squad\.json: invalid JSON"),
    "SQuAD without questions": (
        _squad(data={"data": []}), squad.SquadFormatError, r"squad\.json: no questions"),
    "SQuAD answer_start off the answer": (
        _squad(qa_edit=lambda qa: qa["answers"][0].update(answer_start=4)),
        squad.SquadFormatError,
        r"data\[0\]\.paragraphs\[0\]\.qas\[0\] \(id 'q1'\)\.answers\[0\]: field "
        r"'answer_start' 4 does not point at 'the cat'"),
    "SQuAD negative answer_start": (
        _squad(qa_edit=lambda qa: qa["answers"][0].update(answer_start=-22)),
        squad.SquadFormatError, r"field 'answer_start' -22 does not point at"),
    "SQuAD missing field": (
        _squad(qa_edit=lambda qa: qa.pop("question")), squad.SquadFormatError,
        r"qas\[0\] \(id 'q1'\): missing field 'question'"),
    "SQuAD empty question": (
        _squad(qa_edit=lambda qa: qa.update(question="  ")), squad.SquadFormatError,
        r"\(id 'q1'\): field 'question' is empty"),
    "SQuAD empty context": (
        _squad(paragraph_edit=lambda p: p.update(context="")), squad.SquadFormatError,
        r"paragraphs\[0\]: field 'context' is empty"),
    # ---- flags
    "unknown task": (
        _flags("--task=mrcp", call=lambda: run_classifier.main([])), ValueError,
        r"Unknown GLUE task 'mrcp'"),
    "classifier_dropout outside [0, 1)": (
        _flags("--classifier_dropout=1", call=lambda: run_classifier.main([])),
        flags.ValidationError, r"--classifier_dropout must be in \[0, 1\); got 1\.0"),
    "adapter_size <= 0": (
        _flags("--adapter_size=0"), flags.ValidationError, r"--adapter_size must be > 0"),
    "reduction_factor <= 0": (
        _flags("--reduction_factor=-2"), flags.ValidationError,
        r"--reduction_factor must be > 0"),
    "AdapterDrop with full fine-tuning": (
        _flags("--tuning=full", "--drop_first_n=1"), flags.ValidationError,
        r"--drop_first_n and --robust_adapter_drop need --tuning=adapters or fusion"),
    "AdapterDrop with LoRA": (
        _flags("--tuning=lora", "--robust_adapter_drop"), flags.ValidationError,
        r"--drop_first_n and --robust_adapter_drop need --tuning=adapters or fusion"),
    "lora_rank <= 0": (
        _flags("--tuning=lora", "--lora_rank=0"), flags.ValidationError,
        r"--lora_rank must be > 0; got 0"),
    "eval_drop_first_n not an integer": (
        _flags("--eval_drop_first_n=0,x", call=lambda: run_classifier.main([])),
        flags.ValidationError, r"--eval_drop_first_n takes integers >= 0.*got 'x'"),
    "eval_drop_first_n with full fine-tuning": (
        _flags("--tuning=full", "--eval_drop_first_n=1", call=lambda: run_classifier.main([])),
        flags.ValidationError, r"--eval_drop_first_n needs --tuning=adapters or fusion"),
    "eval_drop_first_n beyond the layers": (
        lambda tmp: _flags(f"--init_from={_tiny(tmp)}", "--max_seq_length=16",
                           f"--data_dir={_real_glue()}", "--eval_drop_first_n=0,3",
                           call=lambda: run_classifier.main([]))(tmp),
        flags.ValidationError, r"--eval_drop_first_n: \[3\] exceed\(s\) this backbone's 2 layers"),
    "fusion without adapters": (
        _flags("--tuning=fusion"), flags.ValidationError,
        r"--tuning=fusion needs --fusion_adapters"),
    "fusion adapters that are not there": (
        lambda tmp: _flags(f"--init_from={_tiny(tmp)}", "--tuning=fusion", "--max_seq_length=16",
                           f"--fusion_adapters={tmp}/none", call=lambda: cli.build_backbone("mrpc"))(tmp),
        FileNotFoundError, r"none/adapter_config.json"),
    "batch_size <= 0": (
        _flags("--batch_size=0"), flags.ValidationError, r"--batch_size must be > 0"),
    "save_every_steps <= 0": (
        _flags("--save_every_steps=0"), flags.ValidationError, r"--save_every_steps must be > 0"),
    "steps_per_execution <= 0": (
        _flags("--steps_per_execution=0"), flags.ValidationError,
        r"--steps_per_execution must be > 0"),
    "--strategy=tpu without --tpu": (
        _flags("--strategy=tpu"), flags.ValidationError, r"--strategy=tpu needs --tpu"),
    "drop_first_n >= layers": (
        lambda tmp: _flags(f"--init_from={_tiny(tmp)}", "--drop_first_n=2", "--max_seq_length=16",
                           call=lambda: cli.build_backbone("mrpc"))(tmp),
        flags.ValidationError, r"--drop_first_n must be in \[0, 1\] for this 2-layer backbone"),
    "max_seq_length beyond the position embeddings": (
        lambda tmp: _flags(f"--init_from={_tiny(tmp)}", "--max_seq_length=64",
                           call=lambda: cli.build_backbone("mrpc"))(tmp),
        flags.ValidationError, r"--max_seq_length=64 exceeds the backbone's 16"),
    "vocabulary larger than the model's": (
        _vocabulary_too_large, ValueError,
        r"vocab\.txt has 13 tokens, but config\.json's vocab_size is 12"),
    "--tpu address where no TPU answers": (
        lambda tmp: distribute.check_tpu_reachable("grpc://127.0.0.1:9", timeout=2.0),
        ConnectionError, r"--tpu=grpc://127\.0\.0\.1:9: no TPU answers there"),
    "missing checkpoint folder": (
        lambda tmp: from_pretrained(str(tmp / "nowhere")), FileNotFoundError,
        r"No checkpoint folder at '.*nowhere'"),
    # ---- models from elsewhere
    "adapter from a backbone of another size": (
        _adapter_from_other_backbone({"hidden_size": 12, "num_attention_heads": 2}),
        ValueError, r"adapter_config\.json: field 'backbone\.hidden_dim' is 8, but this "
                    r"backbone has 12"),
    "adapter from another vocabulary / checkpoint": (
        _adapter_from_other_backbone(), ValueError,
        r"adapter_config\.json: field 'backbone\.vocabulary_sha256' is '[0-9a-f]+', but"),
    "training backup from another run": (
        _backup_from_other_backbone, ValueError,
        r"state\.safetensors: the backup's backbone='checkpoint A' differs from this run's "
        r"'checkpoint B'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_named(case, tmp_path):
    make, error, message = CASES[case]
    with flagsaver.flagsaver():
        with pytest.raises(error, match=message):
            make(tmp_path)


@pytest.mark.parametrize("argv,message", [
    (["--task=mrcp"], "Unknown GLUE task 'mrcp'"),
    (["--data_dir=/nonexistent"], "GLUE mrpc train file not found: /nonexistent/MRPC/train.tsv"),
])
def test_scripts_exit_non_zero_with_the_message(argv, message, tmp_path):
    command = [sys.executable, str(REPO_ROOT / "run_classifier.py"), f"--model_dir={tmp_path}",
               "--data_dir=/nonexistent", *argv]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert message in result.stderr

