"""One backend process per ``MODEL_DIR``.

Two processes on one directory (a second replica, or the old container still running during
a redeploy) would each append to the same item pools and cut the other's rows, delete the
other's half-saved versions at start-up, and both write to Label Studio, each blind to the
other's newer version. An OS lock, held for the life of the process, refuses the second one;
the kernel drops it however the holder dies. Managers within one process share it.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

LOCK_NAME = ".sae-backend.lock"
_held: dict[Path, list] = {}  # lock file -> [open file, managers holding it]
_guard = threading.Lock()


class ModelDirInUseError(RuntimeError):
    """Another process serves this ``MODEL_DIR``."""


def acquire(directory: Path | str, wait_seconds: float = 60.0) -> Path:
    """Take the directory's lock, waiting up to ``wait_seconds`` for a holder that is shutting down."""
    path = Path(directory).resolve() / LOCK_NAME
    with _guard:
        if path in _held:
            _held[path][1] += 1
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")  # noqa: SIM115 - held open for the life of the process
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    owner = f.read().strip()
                    f.close()
                    raise ModelDirInUseError(
                        f"MODEL_DIR {Path(directory)} is in use by another sae-backend process"
                        f"{f' (pid {owner})' if owner else ''}; give each backend its own MODEL_DIR") from None
                time.sleep(0.2)
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        _held[path] = [f, 1]
    return path


def release(path: Path) -> None:
    with _guard:
        entry = _held.get(path)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            entry[0].close()
            del _held[path]
