"""When more labels stop paying: the stabilising-predictions rule (Bloodgood & Vijay-Shanker 2009).

Keep a fixed *stop set* of items, predict it with every new version, and measure Cohen's
kappa between successive versions' predictions. Once the mean kappa of the last
``window`` versions reaches ``threshold`` (0.99 in the paper), the model has stopped
changing its mind and further labels are unlikely to change accuracy much. Needs no
labels of its own, so it works on a live project.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import cohen_kappa_score

THRESHOLD = 0.99
WINDOW = 3


def stop_set(ids: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` ids with the smallest hash: a later superset keeps most of them (new ids displace a few)."""
    ids = np.asarray(ids, np.int64)
    key = (ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(11)
    return np.sort(ids[np.argsort(key, kind="stable")[:size]])


def agreement(previous: np.ndarray, current: np.ndarray) -> float:
    """Cohen's kappa of two versions' predictions on the same items (1.0 when both are identical)."""
    a, b = np.asarray(previous), np.asarray(current)
    if a.shape != b.shape:
        raise ValueError(f"the two versions predicted {a.shape} and {b.shape} items")
    if len(a) == 0:
        return float("nan")
    if np.array_equal(a, b):
        return 1.0
    return float(cohen_kappa_score(a, b))


def should_stop(kappas: Sequence[float], threshold: float = THRESHOLD, window: int = WINDOW) -> bool:
    """True once the mean of the last ``window`` kappas is at least ``threshold``."""
    last = [k for k in kappas if not np.isnan(k)][-window:]
    return len(last) == window and float(np.mean(last)) >= threshold
