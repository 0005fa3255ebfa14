"""Acquisition (query) strategies: which unlabeled items to label next.

One class per strategy with a common base, after small-text's layout. Each works on a
score matrix ``(n_items, n_classes)`` (SVM decision values or logits) so the same
strategy ranks for any model, and returns the ``k`` most informative items, best first,
in O(n * n_classes + k log k): no sort of the whole pool. Batch-aware strategies also read
the items' latent codes (``codes``) to spread one batch over the latent space; they touch
a bounded number of candidates, never the pool squared.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.neighbors import NearestNeighbors


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
    needs_codes = False

    def uncertainty(self, scores: np.ndarray) -> np.ndarray:
        """Per-item value; smaller means more worth labeling."""
        raise NotImplementedError

    def to_score(self, values: np.ndarray, n_classes: int) -> np.ndarray:
        """A strictly increasing map of :meth:`uncertainty` values into [0, 1]."""
        v = np.asarray(values, dtype=np.float64)
        return v / (1.0 + np.abs(v)) * 0.5 + 0.5

    def select(self, values: np.ndarray, codes: np.ndarray | None, k: int, pool: np.ndarray) -> np.ndarray:
        """The ``k`` rows of ``pool`` to ask first, best first (default: smallest values)."""
        return pool[_smallest(values[pool], k)]

    def shortlist(self, values: np.ndarray, k: int, pool: np.ndarray) -> np.ndarray:
        """Rows of ``pool`` that :meth:`select` may pick for a batch of ``k``, in ascending value order.

        A shard of a pool sends only its shortlist (and those rows' codes) to the merge, so
        a pool scored in parallel pieces is ranked as if it were scored whole.
        """
        return pool[_smallest(values[pool], k)]

    def query(self, scores: np.ndarray, k: int, codes: np.ndarray | None = None) -> QueryResult:
        return rank(self, scores, k, codes=codes).top


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


def _kmeans(codes: np.ndarray, n_clusters: int, random_state: int | None) -> np.ndarray:
    """Cluster labels; mini-batch k-means above 10k items keeps a large pool linear."""
    est = (KMeans(n_clusters, n_init=3, random_state=random_state) if len(codes) <= 10_000
           else MiniBatchKMeans(n_clusters, n_init=3, batch_size=4096, random_state=random_state))
    return est.fit_predict(np.asarray(codes, dtype=np.float64))


class ClusterMarginSampling(MarginSampling):
    """Margin sampling spread over the latent space (after Citovsky et al. 2021, cluster-margin).

    Top-k margin picks near-duplicates: the items closest to one stretch of the boundary
    look alike. This takes the ``candidates * k`` smallest-margin items, clusters their
    latent codes into ``k`` groups (at most ``max_clusters``, which bounds the cost of a
    long ranking head), and goes round-robin over the groups (each group's smallest margin
    first), so one batch covers as many regions of the boundary as it can.
    """

    name = "cluster-margin"
    needs_codes = True

    def __init__(self, candidates: int = 10, max_clusters: int = 100, random_state: int | None = 0) -> None:
        self.candidates = candidates
        self.max_clusters = max_clusters
        self.random_state = random_state

    def select(self, values: np.ndarray, codes: np.ndarray | None, k: int, pool: np.ndarray) -> np.ndarray:
        k = min(int(k), len(pool))
        if codes is None:
            raise ValueError(f"{self.name} needs the items' latent codes")
        cand = pool[_smallest(values[pool], int(self.candidates) * k)]
        if k <= 1 or len(cand) <= k:
            return cand[:k]
        n_groups = min(k, int(self.max_clusters))
        groups = _kmeans(np.asarray(codes)[cand], n_groups, self.random_state)
        # cand is in ascending value order, so a member's rank inside its group is its round
        round_of = np.zeros(len(cand), np.int64)
        seen = np.zeros(n_groups, np.int64)
        for i, g in enumerate(groups):
            round_of[i] = seen[g]
            seen[g] += 1
        order = np.lexsort((np.arange(len(cand)), round_of))
        return cand[order[:k]]

    def shortlist(self, values: np.ndarray, k: int, pool: np.ndarray) -> np.ndarray:
        return pool[_smallest(values[pool], int(self.candidates) * int(k))]


class TypicalitySampling(QueryStrategy):
    """Cold start without labels (after Hacohen et al. 2022, TypiClust).

    The first labels are worth most where the data is dense: clusters the latent codes into
    ``k`` groups and picks from each its most typical item (the inverse of the mean distance
    to its ``neighbours`` nearest neighbours in the group), largest group first. Pools above
    ``max_items`` are subsampled first, so the cost is bounded.
    """

    name = "typicality"
    needs_codes = True

    def __init__(self, neighbours: int = 20, max_items: int = 50_000, random_state: int | None = 0) -> None:
        self.neighbours = neighbours
        self.max_items = max_items
        self.random_state = random_state

    def uncertainty(self, scores: np.ndarray) -> np.ndarray:
        return np.zeros(len(scores))

    def to_score(self, values: np.ndarray, n_classes: int) -> np.ndarray:
        return np.ones(len(values))

    def select(self, values: np.ndarray, codes: np.ndarray | None, k: int, pool: np.ndarray) -> np.ndarray:
        k = min(int(k), len(pool))
        if codes is None:
            raise ValueError(f"{self.name} needs the items' latent codes")
        if k <= 0:
            return np.zeros(0, np.int64)
        items = self.shortlist(values, k, pool)
        z = np.asarray(codes, dtype=np.float64)[items]
        n_groups = min(k, len(items))
        groups = _kmeans(z, n_groups, self.random_state) if n_groups > 1 else np.zeros(len(items), np.int64)
        typical = np.zeros(len(items))
        picks, sizes = [], []
        for g in range(n_groups):
            members = np.flatnonzero(groups == g)
            if len(members) == 0:
                continue
            m = min(int(self.neighbours), len(members) - 1)
            if m > 0:
                dist, _ = NearestNeighbors(n_neighbors=m + 1).fit(z[members]).kneighbors(z[members])
                typical[members] = 1.0 / (dist[:, 1:].mean(axis=1) + 1e-12)
            best = members[np.argmax(typical[members])]
            picks.append(best)
            sizes.append(len(members))
        order = np.lexsort((items[picks], -np.asarray(sizes)))
        chosen = list(np.asarray(picks)[order])
        if len(chosen) < k:  # empty clusters (duplicate codes): the most typical items not taken yet
            taken = np.zeros(len(items), bool)
            taken[chosen] = True
            spare = np.flatnonzero(~taken)
            chosen += list(spare[np.lexsort((spare, -typical[spare]))][: k - len(chosen)])
        return items[np.asarray(chosen, np.int64)]

    def shortlist(self, values: np.ndarray, k: int, pool: np.ndarray) -> np.ndarray:
        """A uniform subsample of at most ``max_items`` (shards of a pool subsample independently)."""
        if len(pool) <= self.max_items:
            return pool
        return np.sort(np.random.default_rng(self.random_state).choice(pool, self.max_items, replace=False))


STRATEGIES: dict[str, type[QueryStrategy]] = {
    s.name: s for s in (MarginSampling, LeastConfidence, EntropySampling, RandomSampling,
                        ClusterMarginSampling, TypicalitySampling)
}


@dataclass(frozen=True)
class Ranking:
    """The top of a ranking, and every item's strategy value and view score (lower = ask first)."""

    top: QueryResult
    values: np.ndarray
    view: np.ndarray


def _head_first(view: np.ndarray, top: np.ndarray) -> np.ndarray:
    """``view`` with the ``top`` rows moved below every other row, in ``top``'s order."""
    rest = np.ones(len(view), bool)
    rest[top] = False
    out = view.copy()
    if rest.any():
        out[rest] = np.maximum(out[rest], 1e-6)  # room below the rest even when its lowest score is 0
    low = float(out[rest].min()) if rest.any() else 1.0
    out[top] = low * np.arange(len(top)) / max(len(top), 1)
    return out


@dataclass(frozen=True)
class PartialRanking:
    """One shard's share of a ranking: every row's value and view score, and its shortlist with their codes."""

    values: np.ndarray
    view: np.ndarray
    rows: np.ndarray
    codes: np.ndarray | None


def rank_part(strategy: QueryStrategy, scores: np.ndarray, k: int, candidates: np.ndarray | None = None,
              codes: np.ndarray | None = None) -> PartialRanking:
    """What one shard of a pool contributes to :func:`merge_ranking`: O(shard) values, a bounded shortlist."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (n_items, n_classes), got shape {scores.shape}")
    values = strategy.uncertainty(scores)
    pool = np.arange(len(values)) if candidates is None else np.flatnonzero(candidates)
    rows = strategy.shortlist(values, k, pool)
    if strategy.needs_codes and codes is None:
        raise ValueError(f"{strategy.name} needs the items' latent codes")
    return PartialRanking(values, strategy.to_score(values, scores.shape[1]), rows,
                          np.asarray(codes)[rows] if strategy.needs_codes else None)


def merge_ranking(strategy: QueryStrategy, parts: list[PartialRanking], k: int) -> Ranking:
    """The ranking of the shards' rows in order, as :func:`rank` would give for the whole pool at once."""
    offsets = np.cumsum([0, *(len(p.values) for p in parts)])
    values = np.concatenate([p.values for p in parts]) if parts else np.zeros(0)
    view = np.concatenate([p.view for p in parts]) if parts else np.zeros(0)
    rows = np.concatenate([p.rows + o for p, o in zip(parts, offsets, strict=False)]).astype(np.int64) \
        if parts else np.zeros(0, np.int64)
    codes = np.concatenate([p.codes for p in parts]) if strategy.needs_codes and parts else None
    idx = rows[strategy.select(values[rows], codes, k, np.arange(len(rows)))]
    if strategy.needs_codes:
        view = _head_first(view, idx)
    return Ranking(QueryResult(idx, values[idx]), values, view)


def rank(strategy: QueryStrategy, scores: np.ndarray, k: int, candidates: np.ndarray | None = None,
         codes: np.ndarray | None = None) -> Ranking:
    """The one ranking the simulator and the service share.

    ``top`` holds the ``k`` rows among ``candidates`` (a boolean mask; all rows by default)
    that ``strategy`` most wants labeled, best first, as row positions into ``scores``;
    ``view`` is, for every row, the value written as a prediction's ``score``, ordered
    exactly as the ranking. The strategy's values are computed once, so a random strategy's
    view and top agree. A batch-aware strategy (one that reads ``codes``) may order its
    top differently from its values; its view then puts the top first, in that order.
    """
    return merge_ranking(strategy, [rank_part(strategy, scores, k, candidates, codes)], k)


def get_strategy(name: str, random_state: int | None = None) -> QueryStrategy:
    """Strategy by its name, e.g. ``margin`` or ``random``."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: choose from {', '.join(STRATEGIES)}")
    cls = STRATEGIES[name]
    if random_state is None or "random_state" not in inspect.signature(cls).parameters:
        return cls()  # the strategy's own default seed: a batch-aware ranking is reproducible unless asked otherwise
    return cls(random_state=random_state)
