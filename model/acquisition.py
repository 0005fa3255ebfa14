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
    needs_labeled = False  # True: select also reads the codes of the rows outside the candidates (the labeled)

    def uncertainty(self, scores: np.ndarray) -> np.ndarray:
        """Per-item value; smaller means more worth labeling."""
        raise NotImplementedError

    def to_score(self, values: np.ndarray, n_classes: int) -> np.ndarray:
        """A strictly increasing map of :meth:`uncertainty` values into [0, 1]."""
        v = np.asarray(values, dtype=np.float64)
        return v / (1.0 + np.abs(v)) * 0.5 + 0.5

    def select(self, values: np.ndarray, codes: np.ndarray | None, k: int, pool: np.ndarray,
               labeled: np.ndarray | None = None, n_labeled: int | None = None) -> np.ndarray:
        """The ``k`` rows of ``pool`` to ask first, best first (default: smallest values).

        ``labeled`` holds the codes of the items already labeled, for strategies with ``needs_labeled``
        (a sample of them on a large pool); ``n_labeled`` is how many there are in all (default: ``len(labeled)``).
        """
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

    def select(self, values: np.ndarray, codes: np.ndarray | None, k: int, pool: np.ndarray,
               labeled: np.ndarray | None = None, n_labeled: int | None = None) -> np.ndarray:
        k = min(int(k), len(pool))
        if codes is None:
            raise ValueError(f"{self.name} needs the items' latent codes")
        cand = pool[_smallest(values[pool], int(self.candidates) * k)]
        finite = np.isfinite(np.asarray(codes, dtype=np.float64)[cand]).all(axis=1)
        if not finite.all():  # an item whose code is not finite is clustered with none and asked last
            return np.concatenate([self.select(values, codes, k, cand[finite]), cand[~finite]])[:k]
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
    """Labels where the data is dense and not yet covered (after Hacohen et al. 2022, TypiClust).

    Clusters the latent codes of the unlabeled and the ``labeled`` items into
    ``len(labeled) + k`` groups (at most ``max_clusters``) and takes, one at a time, the most
    typical unlabeled item (the inverse of the mean distance to its ``neighbours`` nearest
    neighbours in its group) of the group with the fewest labels, the largest group first among
    equals. Without labels this is the cold start: the most typical item of each of ``k``
    groups, largest group first. Pools above ``max_items`` are subsampled first, so the cost is
    bounded.
    """

    name = "typicality"
    needs_codes = True
    needs_labeled = True

    def __init__(self, neighbours: int = 20, max_items: int = 50_000, max_clusters: int = 500,
                 random_state: int | None = 0) -> None:
        self.neighbours = neighbours
        self.max_items = max_items
        self.max_clusters = max_clusters
        self.random_state = random_state

    def uncertainty(self, scores: np.ndarray) -> np.ndarray:
        return np.zeros(len(scores))

    def to_score(self, values: np.ndarray, n_classes: int) -> np.ndarray:
        return np.ones(len(values))

    def first(self, codes: np.ndarray, k: int) -> np.ndarray:
        """The cold start: positions of the ``k`` items to label first, before any label or score exists."""
        return self.select(np.zeros(len(codes)), codes, k, np.arange(len(codes)))

    def select(self, values: np.ndarray, codes: np.ndarray | None, k: int, pool: np.ndarray,
               labeled: np.ndarray | None = None, n_labeled: int | None = None) -> np.ndarray:
        k = min(int(k), len(pool))
        if codes is None:
            raise ValueError(f"{self.name} needs the items' latent codes")
        if k <= 0:
            return np.zeros(0, np.int64)
        items = self.shortlist(values, k, pool)
        z = np.asarray(codes, dtype=np.float64)[items]
        finite = np.isfinite(z).all(axis=1)  # an item whose code is not finite has no place among the clusters
        items, z = items[finite], z[finite]
        k = min(k, len(items))
        if k <= 0:
            return np.zeros(0, np.int64)
        lab = np.zeros((0, z.shape[1])) if labeled is None else np.asarray(labeled, np.float64).reshape(-1, z.shape[1])
        lab = lab[np.isfinite(lab).all(axis=1)]
        if len(items) < len(pool) and len(lab):  # labeled items sampled at the pool's rate: densities comparable
            keep = round(len(lab) * len(items) / len(pool))
            lab = lab[np.sort(np.random.default_rng(self.random_state).choice(len(lab), keep, replace=False))]
        both = np.vstack([z, lab])
        n_groups = min(len(lab) + k, len(both), max(k, int(self.max_clusters)))
        groups = _kmeans(both, n_groups, self.random_state) if n_groups > 1 else np.zeros(len(both), np.int64)
        sizes = np.bincount(groups, minlength=n_groups)
        covered = np.bincount(groups[len(z):], minlength=n_groups)
        typical = np.zeros(len(both))
        for g in np.flatnonzero(sizes):
            members = np.flatnonzero(groups == g)
            m = min(int(self.neighbours), len(members) - 1)
            if m > 0:
                dist, _ = NearestNeighbors(n_neighbors=m + 1).fit(both[members]).kneighbors(both[members])
                typical[members] = 1.0 / (dist[:, 1:].mean(axis=1) + 1e-12)
        # each group's unlabeled members, most typical first
        queue = {g: list(members[np.lexsort((items[members], -typical[members]))])
                 for g in range(n_groups) if len(members := np.flatnonzero(groups[:len(z)] == g))}
        chosen: list[int] = []
        while len(chosen) < k and queue:
            g = min(queue, key=lambda g: (covered[g], -sizes[g], items[queue[g][0]]))
            chosen.append(queue[g].pop(0))
            covered[g] += 1
            if not queue[g]:
                del queue[g]
        return items[np.asarray(chosen, np.int64)]

    def shortlist(self, values: np.ndarray, k: int, pool: np.ndarray) -> np.ndarray:
        """A uniform subsample of at most ``max_items`` (shards of a pool subsample independently)."""
        if len(pool) <= self.max_items:
            return pool
        return np.sort(np.random.default_rng(self.random_state).choice(pool, self.max_items, replace=False))


class TypicalityThenMargin(MarginSampling):
    """Typicality while labels are few, margin sampling after.

    With few labels the model's uncertainty is itself unreliable and covering the dense regions
    pays more; once a few labels per class exist, the boundary is worth more (the phase change
    Hacohen et al. 2022 report). Below ``until`` labeled items this ranks as
    :class:`TypicalitySampling` (covering what is labeled), from then on as :class:`MarginSampling`.
    On the Fashion-MNIST protocol it was behind margin sampling after the first 100 labels, so
    margin stays the default; data sets with more classes may switch later.
    """

    name = "typicality-margin"
    needs_codes = True
    needs_labeled = True

    def __init__(self, until: int = 300, neighbours: int = 20, max_items: int = 50_000, max_clusters: int = 500,
                 random_state: int | None = 0) -> None:
        self.until = until
        self.neighbours = neighbours
        self.max_items = max_items
        self.max_clusters = max_clusters
        self.random_state = random_state

    def _typicality(self) -> TypicalitySampling:
        return TypicalitySampling(self.neighbours, self.max_items, self.max_clusters, self.random_state)

    def select(self, values: np.ndarray, codes: np.ndarray | None, k: int, pool: np.ndarray,
               labeled: np.ndarray | None = None, n_labeled: int | None = None) -> np.ndarray:
        count = n_labeled if n_labeled is not None else (0 if labeled is None else len(labeled))
        if count < int(self.until):  # the labels there are, not the sample of their codes
            return self._typicality().select(values, codes, k, pool, labeled)
        return pool[_smallest(values[pool], k)]

    def shortlist(self, values: np.ndarray, k: int, pool: np.ndarray) -> np.ndarray:
        """Typicality's subsample and the ``k`` smallest margins: enough for either phase."""
        return np.union1d(self._typicality().shortlist(values, k, pool), pool[_smallest(values[pool], k)])


STRATEGIES: dict[str, type[QueryStrategy]] = {
    s.name: s for s in (MarginSampling, LeastConfidence, EntropySampling, RandomSampling,
                        ClusterMarginSampling, TypicalitySampling, TypicalityThenMargin)
}


@dataclass(frozen=True)
class Ranking:
    """The top of a ranking, and every item's strategy value and view score (lower = ask first)."""

    top: QueryResult
    values: np.ndarray
    view: np.ndarray


def view_scores(strategy: QueryStrategy, values: np.ndarray, n_classes: int) -> np.ndarray:
    """The strategy's view scores, an item without a finite value (a code that is not finite) last at 1:
    a NaN score would leave Label Studio's view unordered, and is no valid JSON."""
    view = strategy.to_score(values, n_classes)
    return np.where(np.isnan(view), 1.0, view)


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
    """One shard's share of a ranking: every row's value and view score, its shortlist with their codes,
    and (for strategies that read them) the codes of its rows outside the candidates, at most ``MAX_LABELED``."""

    values: np.ndarray
    view: np.ndarray
    rows: np.ndarray
    codes: np.ndarray | None
    labeled: np.ndarray | None = None
    n_labeled: int = 0  # labeled rows of the shard, however few of their codes ``labeled`` carries


MAX_LABELED = 50_000  # labeled codes a shard sends at most: a uniform subsample beyond that


def _labeled_codes(codes: np.ndarray, candidates: np.ndarray | None, rate: float = 1.0) -> np.ndarray:
    """The labeled rows' codes, sampled at ``rate``: the rate the candidates were shortlisted at, so the
    labeled and unlabeled densities a batch-aware strategy compares stay in proportion."""
    codes = np.asarray(codes)
    rows = np.zeros(0, np.int64) if candidates is None else np.flatnonzero(~np.asarray(candidates, bool))
    keep = min(MAX_LABELED, round(len(rows) * min(rate, 1.0)))
    if keep < len(rows):
        rows = np.sort(np.random.default_rng(0).choice(rows, keep, replace=False))
    return codes[rows]


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
    rate = len(rows) / len(pool) if len(pool) else 1.0
    return PartialRanking(values, view_scores(strategy, values, scores.shape[1]), rows,
                          np.asarray(codes)[rows] if strategy.needs_codes else None,
                          _labeled_codes(codes, candidates, rate) if strategy.needs_labeled else None,
                          len(values) - len(pool))


def merge_ranking(strategy: QueryStrategy, parts: list[PartialRanking], k: int) -> Ranking:
    """The ranking of the shards' rows in order, as :func:`rank` would give for the whole pool at once."""
    offsets = np.cumsum([0, *(len(p.values) for p in parts)])
    values = np.concatenate([p.values for p in parts]) if parts else np.zeros(0)
    view = np.concatenate([p.view for p in parts]) if parts else np.zeros(0)
    rows = np.concatenate([p.rows + o for p, o in zip(parts, offsets, strict=False)]).astype(np.int64) \
        if parts else np.zeros(0, np.int64)
    codes = np.concatenate([p.codes for p in parts]) if strategy.needs_codes and parts else None
    labeled = np.concatenate([p.labeled for p in parts]) if strategy.needs_labeled and parts else None
    n_labeled = sum(p.n_labeled for p in parts)
    idx = rows[strategy.select(values[rows], codes, k, np.arange(len(rows)), labeled, n_labeled=n_labeled)]
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


def strategy_options(name: str) -> list[str]:
    """The settings a strategy takes besides its seed (its constructor's parameters)."""
    return [k for k in inspect.signature(STRATEGIES[name]).parameters if k != "random_state"]


def parse_option(pair: str) -> tuple[str, float] | None:
    """``"until=500"`` -> ``("until", 500)`` (whole numbers as ints); None when it is not KEY=NUMBER."""
    key, sep, value = pair.partition("=")
    try:
        number = float(value)
    except ValueError:
        return None
    if not sep or not key.strip():
        return None
    return key.strip(), int(number) if number.is_integer() else number


def parse_spec(spec: str) -> tuple[str, dict[str, float]]:
    """``"typicality-margin:until=500"`` -> ``("typicality-margin", {"until": 500})``: a strategy with its options
    in one string, so a setting or a saved snapshot that holds a strategy's name can hold its options too."""
    name, _, rest = str(spec).partition(":")
    options: dict[str, float] = {}
    for pair in filter(None, (p.strip() for p in rest.split(","))):
        parsed = parse_option(pair)
        if parsed is None:
            raise ValueError(f"strategy option {pair!r} is not KEY=NUMBER (e.g. typicality-margin:until=500)")
        options[parsed[0]] = parsed[1]
    return name.strip(), options


def get_strategy(name: str, random_state: int | None = None, options: dict | None = None) -> QueryStrategy:
    """Strategy by its name, e.g. ``margin`` or ``random``, or a spec with options (``typicality-margin:until=500``);
    ``options`` set further parameters."""
    name, spec_options = parse_spec(name)
    options = {**spec_options, **(options or {})}
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: choose from {', '.join(STRATEGIES)}")
    cls = STRATEGIES[name]
    options = dict(options or {})
    bad = sorted(set(options) - set(strategy_options(name)))
    if bad:
        raise ValueError(f"strategy {name!r} has no option {bad[0]!r}: it takes "
                         f"{', '.join(strategy_options(name)) or 'none'}")
    if random_state is not None and "random_state" in inspect.signature(cls).parameters:
        options["random_state"] = random_state
    return cls(**options)  # without a seed, the strategy's own default: a batch-aware ranking is reproducible
