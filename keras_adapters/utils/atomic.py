"""Atomic writes: a crash never leaves a half-written file where users load it."""

import contextlib
import json
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary sibling path; on success rename it onto `path`.

    Works for a file or a directory written at the yielded path. The rename
    is atomic on one file system. A directory already at `path` is replaced
    (it is moved aside first, then deleted). On an exception the temporary
    output is removed and `path` is left as it was.

    Args:
        path: str or os.PathLike, the final location.
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=parent)
    temporary = os.path.join(scratch, "output")
    try:
        yield temporary
        if os.path.isfile(temporary):
            # Some writers create files 0600; give the umask's usual mode.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)
        if os.path.isdir(path) and not os.path.islink(path):
            stale = os.path.join(scratch, "stale")
            os.rename(path, stale)
        os.replace(temporary, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_json(path, obj):
    """Write `obj` as indented JSON to `path` atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
