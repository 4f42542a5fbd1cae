"""The README's commands and example stay true."""

import re

from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_install_and_test_commands():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    install, tests = _blocks("bash")[:2]
    assert 'pip install -e ".[test]"' in install and 'pip install -e ".[test]"' in ci
    assert tests.strip() in ci


def test_python_example_runs_and_trains_only_adapters():
    example = next(block for block in _blocks("python") if "add_adapters" in block)
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    model, backbone = namespace["model"], namespace["backbone"]
    assert backbone.drop_first_n == 3
    trainable = {w.path for w in model.trainable_weights}
    assert trainable and all(
        "adapter" in p or "layer_norm" in p or p.startswith("logits") for p in trainable)
