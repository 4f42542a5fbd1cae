"""Atomic writes leave either the old artefact or the new one, never half of one."""

import json
import os

import pytest

from keras_adapters.utils.atomic import atomic_path, write_json


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "eval_results.json"
    write_json(target, {"f1": 0.5})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            with open(temporary, "w") as f:
                f.write('{"f1": 0.9')  # half written
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"f1": 0.5}
    assert os.listdir(tmp_path) == ["eval_results.json"]


def test_written_files_get_the_umask_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "weights.bin") as temporary:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
    finally:
        os.umask(umask)
    assert (tmp_path / "weights.bin").stat().st_mode & 0o777 == 0o644
