"""The benchmark's command line: a bad setting ends in one clear line, before any data is read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("args", "message"), [
    (["--lr", "0"], "--lr must be positive"),
    (["--typical-param", "epochs=-1", "--initial-strategy", "typicality"], "--typical-param: epochs"),
    (["--init-features-only"], "--init-features-only needs --init-from-start")])
def test_a_bad_setting_is_one_line(tmp_path, args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "benchmarks/label_efficiency.py", "--dataset", "digits",
                           "--out", str(tmp_path / "out"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("label_efficiency.py: ") and message in lines[0]
    assert not (tmp_path / "out").exists(), "nothing written"
