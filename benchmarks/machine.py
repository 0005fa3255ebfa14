"""Where a benchmark ran, in one format, and a timer that keeps the timed call's result.

Scripts in this folder import it as a sibling (``python benchmarks/x.py`` puts the folder on
the path), so the raw results that name their machine in one string name it the same way.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def describe() -> str:
    """``x86_64, 2 cores, Python 3.11.9``: enough to tell two benchmark machines apart."""
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()``'s result and its wall-clock seconds (rounded to 0.1 ms)."""
    t = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t, 4)
