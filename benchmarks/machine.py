"""Where a benchmark ran, in one format, and a timer that keeps the timed call's result.

Scripts in this folder import it as a sibling (``python benchmarks/x.py`` puts the folder on
the path), so the raw results that name their machine in one string name it the same way.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The processor's model name where the system names it (Linux), else the architecture.

    Two machines with the same architecture and core count gave different training results, so
    a result that can differ between machines names the processor too.
    """
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    """``x86_64, 2 cores, Python 3.11.9``: enough to tell two benchmark machines apart."""
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def where() -> dict:
    """Machine, processor, torch and its CPU kernels, GPU: what a training result depends on.

    Training reproduces to the digit on one machine but not across machines (CPU kernels
    differ), so label-efficiency results carry this record. ``python benchmarks/machine.py``
    prints it, for results written before it was recorded.
    """
    import torch

    return {"machine": describe(), "processor": cpu_model(), "torch": torch.__version__,
            "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write_rows(path: str | None, rows: list[dict]) -> dict:
    """A benchmark's rows with the machine they ran on, written as JSON to ``path`` (when given)."""
    result = {"machine": describe(), "processor": cpu_model(), "rows": rows}
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=1))
    return result


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()``'s result and its wall-clock seconds (rounded to 0.1 ms)."""
    t = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t, 4)


if __name__ == "__main__":
    import json

    print(json.dumps(where(), indent=1))
