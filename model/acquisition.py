"""Acquisition (query) strategies: which unlabeled items to label next.

One class per strategy with a common base, after small-text's layout. Each works on a
score matrix ``(n_items, n_classes)`` (SVM decision values or logits) so the same
strategy ranks for any model, and returns the ``k`` most informative items, best first,
in O(n * n_classes + k log k): no sort of the whole pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QueryResult:
    """Ranked batch: positions into the candidates, and each one's strategy score (lower = ask first)."""

    indices: np.ndarray
    scores: np.ndarray


def _softmax(scores: np.ndarray) -> np.ndarray:
    s = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


def _smallest(values: np.ndarray, k: int) -> np.ndarray:
    k = min(int(k), len(values))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < len(values):
        part = np.argpartition(values, k - 1)[:k]
        cut = values[part].max()
        if not np.isnan(cut):  # argpartition keeps arbitrary members of a tie at the cut: keep the lowest indices
            below = np.flatnonzero(values < cut)
            part = np.concatenate([below, np.flatnonzero(values == cut)[:k - len(below)]])
    else:
        part = np.arange(len(values))
    return part[np.lexsort((part, values[part]))]


class QueryStrategy:
    """Base: ``query`` ranks rows of ``scores`` by :meth:`uncertainty` (ascending).

    :meth:`to_score` maps the same values into [0, 1] without changing their order; the
    service writes it as each prediction's ``score``, so Label Studio's "lowest score
    first" view shows exactly the order this strategy ranks in.
    """

    name = "base"

    def uncertainty(self, scores: np.ndarray) -> np.ndarray:
        """Per-item value; smaller means more worth labeling."""
        raise NotImplementedError

    def to_score(self, values: np.ndarray, n_classes: int) -> np.ndarray:
        """A strictly increasing map of :meth:`uncertainty` values into [0, 1]."""
        v = np.asarray(values, dtype=np.float64)
        return v / (1.0 + np.abs(v)) * 0.5 + 0.5

    def query(self, scores: np.ndarray, k: int) -> QueryResult:
        return rank(self, scores, k).top


class MarginSampling(QueryStrategy):
    """The paper's guided labeling: smallest gap between the top-1 and top-2 class scores."""

    name = "margin"

    def uncertainty(self, scores: np.ndarray) -> np.ndarray:
        if scores.shape[1] < 2:
            return np.zeros(len(scores))
        top2 = -np.partition(-scores, 1, axis=1)[:, :2]
        return top2[:, 0] - top2[:, 1]

    def to_score(self, values: np.ndarray, n_classes: int) -> np.ndarray:
        v = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
        return v / (1.0 + v)


class LeastConfidence(QueryStrategy):
    """Lowest top-class probability (softmax of the scores)."""

    name = "least-confidence"

    def uncertainty(self, scores: np.ndarray) -> np.ndarray:
        return _softmax(scores).max(axis=1)

    def to_score(self, values: np.ndarray, n_classes: int) -> np.ndarray:
        return np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)


class EntropySampling(QueryStrategy):
    """Highest entropy of the softmax of the scores (returned negated: lower = ask first)."""

    name = "entropy"

    def uncertainty(self, scores: np.ndarray) -> np.ndarray:
        p = _softmax(scores)
        return np.sum(p * np.log(np.clip(p, 1e-12, None)), axis=1)

    def to_score(self, values: np.ndarray, n_classes: int) -> np.ndarray:
        """1 + (sum p log p) / log K: 0 at the uniform distribution, 1 when one class has it all."""
        scale = np.log(max(int(n_classes), 2))
        return np.clip(1.0 + np.asarray(values, dtype=np.float64) / scale, 0.0, 1.0)


class RandomSampling(QueryStrategy):
    """Uniform random order: the baseline every other strategy must beat."""

    name = "random"

    def __init__(self, random_state: int | None = None) -> None:
        self.rng = np.random.default_rng(random_state)

    def uncertainty(self, scores: np.ndarray) -> np.ndarray:
        return self.rng.random(len(scores))

    def to_score(self, values: np.ndarray, n_classes: int) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)


STRATEGIES: dict[str, type[QueryStrategy]] = {
    s.name: s for s in (MarginSampling, LeastConfidence, EntropySampling, RandomSampling)
}


@dataclass(frozen=True)
class Ranking:
    """The top of a ranking, and every item's strategy value and view score (lower = ask first)."""

    top: QueryResult
    values: np.ndarray
    view: np.ndarray


def rank(strategy: QueryStrategy, scores: np.ndarray, k: int, candidates: np.ndarray | None = None) -> Ranking:
    """The one ranking the simulator and the service share.

    ``top`` holds the ``k`` rows among ``candidates`` (a boolean mask; all rows by default)
    that ``strategy`` most wants labeled, best first, as row positions into ``scores``;
    ``view`` is, for every row, the value written as a prediction's ``score``, ordered
    exactly as the ranking. The strategy's values are computed once, so a random strategy's
    view and top agree.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (n_items, n_classes), got shape {scores.shape}")
    values = strategy.uncertainty(scores)
    pool = np.arange(len(values)) if candidates is None else np.flatnonzero(candidates)
    idx = pool[_smallest(values[pool], k)]
    return Ranking(QueryResult(idx, values[idx]), values, strategy.to_score(values, scores.shape[1]))


def get_strategy(name: str, random_state: int | None = None) -> QueryStrategy:
    """Strategy by its name, e.g. ``margin`` or ``random``."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: choose from {', '.join(STRATEGIES)}")
    cls = STRATEGIES[name]
    return cls(random_state) if cls is RandomSampling else cls()
