"""One backend process per MODEL_DIR: a second is refused with the reason, the same process shares it."""

from __future__ import annotations

import subprocess
import sys

from service import dir_lock

SECOND = """
import sys
from service import dir_lock
try:
    dir_lock.acquire(sys.argv[1], wait_seconds=float(sys.argv[2]))
except dir_lock.ModelDirInUseError as e:
    print(e); sys.exit(3)
print("acquired")
"""


def other_process(directory, wait: float = 0.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SECOND, str(directory), str(wait)], capture_output=True, text=True,
                          timeout=60)


def test_a_second_process_is_refused_until_the_first_lets_go(tmp_path) -> None:
    path = dir_lock.acquire(tmp_path)
    again = dir_lock.acquire(tmp_path)  # a second manager in this process (a restart in the tests) shares it
    refused = other_process(tmp_path)
    assert refused.returncode == 3, refused.stderr
    assert "in use by another sae-backend process" in refused.stdout and "pid" in refused.stdout
    dir_lock.release(again)
    assert other_process(tmp_path).returncode == 3, "still held by the first"
    dir_lock.release(path)
    assert other_process(tmp_path).stdout.strip() == "acquired"


def test_the_manager_takes_the_lock_and_shutdown_gives_it_back(tmp_path) -> None:
    from tests.service.test_app import make

    m, _, _ = make(tmp_path)
    assert other_process(tmp_path).returncode == 3
    m.shutdown()
    assert other_process(tmp_path).returncode == 0
