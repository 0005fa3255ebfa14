"""Query strategies: exact rankings on hand-made scores, ties, k bounds, large pools."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from model.acquisition import (
    STRATEGIES,
    ClusterMarginSampling,
    EntropySampling,
    LeastConfidence,
    MarginSampling,
    QueryResult,
    RandomSampling,
    TypicalitySampling,
    TypicalityThenMargin,
    get_strategy,
    merge_ranking,
    rank,
    rank_part,
)

SCORES = np.array([
    [0.9, 0.1, 0.0],    # margin 0.8
    [0.5, 0.45, 0.05],  # margin 0.05
    [0.3, 0.3, 0.4],    # margin 0.1 (top class last)
    [2.0, -1.0, -1.0],  # margin 3.0
    [-1.0, -0.8, -5.0],  # margin 0.2 (all negative, as OvR SVM scores often are)
])


def test_margin_ranking_exact_order() -> None:
    res = MarginSampling().query(SCORES, 5)
    assert isinstance(res, QueryResult)
    np.testing.assert_array_equal(res.indices, [1, 2, 4, 0, 3])
    np.testing.assert_allclose(res.scores, [0.05, 0.1, 0.2, 0.8, 3.0])


def test_margin_top_k() -> None:
    res = MarginSampling().query(SCORES, 2)
    np.testing.assert_array_equal(res.indices, [1, 2])
    np.testing.assert_allclose(res.scores, [0.05, 0.1])


def test_margin_with_single_class_column_is_all_zero() -> None:
    res = MarginSampling().query(np.array([[3.0], [1.0], [2.0]]), 2)
    np.testing.assert_array_equal(res.indices, [0, 1])
    np.testing.assert_array_equal(res.scores, [0.0, 0.0])


def test_ties_broken_by_position() -> None:
    # margins 0.5, 0.25, 0.25, 0.75, 0.25, 0.25 (exact in binary, so the ties are real)
    scores = np.array([[1.5, 1.0], [1.25, 1.0], [0.0, 0.25], [0.75, 0.0], [5.25, 5.0], [2.0, 2.25]])
    s = MarginSampling()
    np.testing.assert_array_equal(s.query(scores, 3).indices, [1, 2, 4])
    np.testing.assert_array_equal(s.query(scores, 6).indices, [1, 2, 4, 5, 0, 3])
    # same answer every time
    for _ in range(3):
        np.testing.assert_array_equal(s.query(scores, 3).indices, [1, 2, 4])


def test_ties_at_the_cut_keep_the_lowest_positions() -> None:
    # 99 equal margins after one smaller one: the next k - 1 must be the first of the tied rows
    scores = np.zeros((100, 2))
    scores[:, 0] = 1.0
    scores[37, 0] = 0.5
    res = MarginSampling().query(scores, 5)
    np.testing.assert_array_equal(res.indices, [37, 0, 1, 2, 3])
    rng = np.random.default_rng(0)
    for _ in range(50):
        values = rng.integers(0, 4, size=int(rng.integers(2, 2000))).astype(float)
        k = int(rng.integers(1, len(values)))
        scores = np.stack([values, np.zeros_like(values)], axis=1)
        scores[values == 0, 0] = 0.0
        expected = np.argsort(np.abs(values), kind="stable")[:k]
        np.testing.assert_array_equal(MarginSampling().query(scores, k).indices, expected)


def test_k_larger_than_pool_returns_everything_ranked() -> None:
    res = MarginSampling().query(SCORES, 50)
    np.testing.assert_array_equal(res.indices, [1, 2, 4, 0, 3])


@pytest.mark.parametrize("k", [0, -3])
def test_k_zero_or_negative_returns_nothing(k: int) -> None:
    res = MarginSampling().query(SCORES, k)
    assert res.indices.shape == (0,)
    assert res.scores.shape == (0,)


def test_empty_pool() -> None:
    res = MarginSampling().query(np.zeros((0, 3)), 5)
    assert len(res.indices) == 0


def test_scores_must_be_a_matrix() -> None:
    with pytest.raises(ValueError, match="n_items, n_classes"):
        MarginSampling().query(np.array([0.1, 0.2]), 1)


def test_least_confidence_on_hand_made_scores() -> None:
    scores = np.array([[0.0, 0.0], [10.0, 0.0], [1.0, 0.0], [0.0, 0.5]])
    # top softmax probabilities: 0.5, ~1.0, 0.731, 0.622
    res = LeastConfidence().query(scores, 4)
    np.testing.assert_array_equal(res.indices, [0, 3, 2, 1])
    np.testing.assert_allclose(res.scores[:3], [0.5, 1 / (1 + np.exp(-0.5)), 1 / (1 + np.exp(-1.0))])


def test_least_confidence_is_shift_invariant_and_stable_for_large_scores() -> None:
    scores = np.array([[1000.0, 999.0], [1e6, 0.0]])
    values = LeastConfidence().uncertainty(scores)
    assert np.all(np.isfinite(values))
    np.testing.assert_allclose(values, [1 / (1 + np.exp(-1.0)), 1.0])


def test_entropy_on_hand_made_scores() -> None:
    scores = np.array([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [100.0, 0.0, 0.0]])
    res = EntropySampling().query(scores, 4)
    np.testing.assert_array_equal(res.indices, [1, 2, 0, 3])
    assert res.scores[0] == pytest.approx(-np.log(3))
    p = np.exp([1.0, 1.0, 0.0]) / np.exp([1.0, 1.0, 0.0]).sum()
    assert res.scores[1] == pytest.approx(np.sum(p * np.log(p)))
    assert res.scores[3] == pytest.approx(0.0, abs=1e-9)


def test_random_is_reproducible_with_a_seed() -> None:
    scores = np.random.default_rng(0).normal(size=(500, 4))
    a = RandomSampling(random_state=3).query(scores, 20).indices
    b = RandomSampling(random_state=3).query(scores, 20).indices
    c = RandomSampling(random_state=4).query(scores, 20).indices
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(np.unique(a)) == 20
    assert a.min() >= 0
    assert a.max() < 500
    # the scores do not matter to it
    d = RandomSampling(random_state=3).query(np.zeros((500, 4)), 20).indices
    np.testing.assert_array_equal(a, d)


def test_get_strategy_by_name() -> None:
    assert set(STRATEGIES) == {"margin", "least-confidence", "entropy", "random", "cluster-margin", "typicality",
                               "typicality-margin"}
    assert isinstance(get_strategy("margin"), MarginSampling)
    assert isinstance(get_strategy("least-confidence"), LeastConfidence)
    assert isinstance(get_strategy("entropy"), EntropySampling)
    r1, r2 = get_strategy("random", random_state=5), get_strategy("random", random_state=5)
    assert isinstance(r1, RandomSampling)
    np.testing.assert_array_equal(r1.query(np.zeros((50, 2)), 10).indices, r2.query(np.zeros((50, 2)), 10).indices)


def test_get_strategy_with_options() -> None:
    assert get_strategy("typicality-margin", 3, {"until": 500}).until == 500
    assert get_strategy("typicality-margin", 3, {"until": 500}).random_state == 3
    assert get_strategy("cluster-margin", options={"candidates": 4}).candidates == 4
    with pytest.raises(ValueError, match="no option 'until'"):
        get_strategy("margin", options={"until": 5})


def test_get_strategy_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown strategy 'bald'.*margin.*random"):
        get_strategy("bald")


@pytest.mark.parametrize("name", ["margin", "least-confidence", "entropy"])
@pytest.mark.parametrize("k", [1, 100, 5000, 49_999])
def test_large_pool_matches_full_sort_reference(name: str, k: int) -> None:
    scores = np.random.default_rng(k).normal(size=(50_000, 10))
    if name == "margin":
        s = np.sort(scores, axis=1)
        reference = s[:, -1] - s[:, -2]
    else:
        p = np.exp(scores - scores.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        reference = p.max(1) if name == "least-confidence" else np.sum(p * np.log(p), axis=1)
    expected = np.argsort(reference, kind="stable")[:k]
    res = get_strategy(name).query(scores, k)
    np.testing.assert_array_equal(res.indices, expected)
    np.testing.assert_allclose(res.scores, reference[expected], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_the_view_score_keeps_the_ranking_order_within_zero_and_one(name: str) -> None:
    rng = np.random.default_rng(1)
    scores, codes = rng.normal(size=(300, 4)) * 3, rng.normal(size=(300, 3))
    for k in (300, 20):
        r = rank(get_strategy(name, random_state=0), scores, k, codes=codes)
        assert np.all((r.view >= 0) & (r.view <= 1))
        assert np.all(np.diff(r.view[r.top.indices]) >= 0), "lowest score first = the ranking's order"
        rest = np.setdiff1d(np.arange(300), r.top.indices)
        assert len(rest) == 0 or r.view[r.top.indices].max() <= r.view[rest].min()
        np.testing.assert_array_equal(r.values[r.top.indices], r.top.scores)


def test_rank_picks_the_top_among_candidates_only() -> None:
    scores = np.random.default_rng(2).normal(size=(50, 3))
    candidates = np.zeros(50, bool)
    candidates[::2] = True
    r = rank(MarginSampling(), scores, 5, candidates)
    assert np.all(r.top.indices % 2 == 0) and len(r.view) == 50
    expected = MarginSampling().query(scores[::2], 5).indices * 2
    np.testing.assert_array_equal(r.top.indices, expected)


def _blobs(n_per: int = 50, centres: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hand-made codes: tight clusters far apart; returns codes and each item's cluster."""
    rng = np.random.default_rng(seed)
    c = np.arange(centres)
    where = np.repeat(c, n_per)
    codes = np.stack([where * 10.0, np.zeros(len(where))], 1) + rng.normal(scale=0.3, size=(len(where), 2))
    return codes, where


def test_cluster_margin_spreads_a_batch_over_the_clusters() -> None:
    codes, where = _blobs()
    margins = np.where(where == 0, 0.01, 1.0) + np.random.default_rng(1).random(len(where)) * 0.01
    scores = np.stack([margins, np.zeros(len(margins))], 1)
    plain = rank(MarginSampling(), scores, 4).top.indices
    assert set(where[plain]) == {0}, "top-k margin takes the one cluster of near-ties"
    spread = rank(ClusterMarginSampling(candidates=50), scores, 4, codes=codes).top.indices
    assert sorted(where[spread]) == [0, 1, 2, 3]
    assert spread[0] == plain[0], "the round starts with the smallest margin"
    for g in range(4):
        inside = np.flatnonzero(where == g)
        assert spread[where[spread] == g][0] == inside[np.argmin(margins[inside])]


def test_cluster_margin_only_looks_at_low_margin_candidates() -> None:
    codes, where = _blobs()
    margins = np.where(where == 3, 5.0, 0.0) + np.arange(len(where)) * 1e-3
    scores = np.stack([margins, np.zeros(len(margins))], 1)
    picked = rank(ClusterMarginSampling(candidates=2), scores, 6, codes=codes).top.indices
    assert 3 not in set(where[picked])
    assert len(set(picked.tolist())) == 6


def test_cluster_margin_needs_codes() -> None:
    with pytest.raises(ValueError, match="latent codes"):
        rank(ClusterMarginSampling(), np.zeros((10, 2)), 3)


def test_typicality_picks_cluster_centres_largest_first() -> None:
    rng = np.random.default_rng(0)
    sizes = [80, 40, 20]
    # each cluster: a dense core of half its items and a sparse halo around it
    codes = np.concatenate([rng.normal(loc=(30.0 * i, 0.0), scale=np.repeat([0.2, 3.0], n // 2)[:, None],
                                       size=(n, 2)) for i, n in enumerate(sizes)])
    where = np.repeat(np.arange(3), sizes)
    picked = rank(TypicalitySampling(neighbours=5), np.zeros((len(codes), 0)), 3, codes=codes).top.indices
    assert where[picked].tolist() == [0, 1, 2], "one per cluster, largest cluster first"
    for p, g in zip(picked, range(3), strict=True):
        assert np.linalg.norm(codes[p] - (30.0 * g, 0.0)) < 0.6, "typical = inside the dense core"
    np.testing.assert_array_equal(TypicalitySampling(neighbours=5).first(codes, 3), picked,
                                  err_msg="the cold start picks what the ranking does with nothing labeled")


def test_typicality_respects_candidates_and_subsamples_large_pools() -> None:
    codes, where = _blobs(n_per=300)
    candidates = where != 0
    strategy = TypicalitySampling(max_items=200)
    r = rank(strategy, np.zeros((len(codes), 0)), 3, candidates, codes=codes)
    assert len(set(r.top.indices.tolist())) == 3 and 0 not in set(where[r.top.indices])
    assert set(r.top.indices) <= set(strategy.shortlist(np.zeros(len(codes)), 3, np.flatnonzero(candidates)))
    alone = rank(strategy, np.zeros((900, 0)), 3, codes=codes[candidates]).top.indices
    assert sorted(where[candidates][alone]) == [1, 2, 3], "nothing labeled: one per cluster"


def test_typicality_asks_first_where_nothing_is_labeled_yet() -> None:
    codes, where = _blobs(n_per=60)
    first = [np.flatnonzero(where == g)[:n] for g, n in enumerate([2, 1, 1, 1])]
    labeled = np.zeros(len(codes), bool)
    labeled[np.concatenate(first[:2])] = True  # two labels in cluster 0, one in cluster 1: 3 + 1 groups
    r = rank(TypicalitySampling(neighbours=5), np.zeros((len(codes), 0)), 1, ~labeled, codes=codes)
    assert where[r.top.indices].tolist() == [2], "a cluster without labels (the first of the equal ones)"
    assert np.linalg.norm(codes[r.top.indices[0]] - (20.0, 0.0)) < 0.3, "its typical item"
    labeled[np.concatenate(first)] = True  # now 2, 1, 1, 1 labels; four groups at most
    r = rank(TypicalitySampling(neighbours=5, max_clusters=4), np.zeros((len(codes), 0)), 2, ~labeled, codes=codes)
    assert where[r.top.indices].tolist() == [1, 2], "the clusters with the fewest labels, one each"


def test_typicality_then_margin_switches_at_the_label_count() -> None:
    codes, where = _blobs(n_per=60)
    margins = np.where(where == 0, 0.01, 1.0) + np.linspace(0, 0.001, len(where))  # cluster 0: the boundary
    scores = np.stack([margins, np.zeros(len(margins))], 1)
    labeled = np.zeros(len(codes), bool)
    labeled[np.flatnonzero(where == 0)[:10]] = True  # ten labels, all in cluster 0
    early = rank(TypicalityThenMargin(until=11), scores, 3, ~labeled, codes=codes).top.indices
    assert sorted(where[early]) == [1, 2, 3], "below the switch: the clusters without labels"
    late = rank(TypicalityThenMargin(until=10), scores, 3, ~labeled, codes=codes).top.indices
    assert late.tolist() == np.flatnonzero(where == 0)[10:13].tolist(), "from the switch on: smallest margins"
    hybrid = TypicalityThenMargin(until=100, neighbours=5, max_clusters=2, random_state=1)
    alone = TypicalitySampling(neighbours=5, max_clusters=2, random_state=1)
    np.testing.assert_array_equal(rank(hybrid, scores, 3, ~labeled, codes=codes).top.indices,
                                  rank(alone, scores, 3, ~labeled, codes=codes).top.indices)
    assert get_strategy("typicality-margin", options={"max_clusters": 2}).max_clusters == 2


def test_cluster_margin_caps_the_clusters_and_still_goes_round_robin() -> None:
    codes, where = _blobs(n_per=100)
    margins = np.random.default_rng(3).random(len(where))
    scores = np.stack([margins, np.zeros(len(margins))], 1)
    picked = rank(ClusterMarginSampling(candidates=4, max_clusters=4), scores, 40, codes=codes).top.indices
    assert len(set(picked.tolist())) == 40
    first_round = where[picked[:4]]
    assert sorted(first_round) == [0, 1, 2, 3], "each round takes one item of every cluster"
    assert np.all(np.bincount(where[picked], minlength=4) == 10)


def test_the_view_keeps_the_batch_first_when_the_rest_scores_zero() -> None:
    codes, _ = _blobs()
    scores = np.zeros((len(codes), 2))  # every margin 0: every view score 0 before the batch is put first
    r = rank(ClusterMarginSampling(), scores, 5, codes=codes)
    rest = np.setdiff1d(np.arange(len(codes)), r.top.indices)
    assert np.all(np.diff(r.view[r.top.indices]) > 0) and r.view[r.top.indices].max() < r.view[rest].min()


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")
def test_typicality_returns_k_items_even_with_duplicate_codes_and_k_above_the_items() -> None:
    codes = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0]]), 20, axis=0)  # two distinct codes only
    picked = rank(TypicalitySampling(), np.zeros((40, 0)), 6, codes=codes).top.indices
    assert len(picked) == 6 and len(set(picked.tolist())) == 6
    small = rank(TypicalitySampling(max_items=10), np.zeros((40, 0)), 25, codes=codes).top.indices
    assert len(small) == 10, "never more than the items it looked at"


@pytest.mark.parametrize("name", ["margin", "entropy", "least-confidence", "cluster-margin", "typicality",
                                  "typicality-margin"])
def test_a_pool_ranked_in_shards_ranks_as_if_it_were_whole(name: str) -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=(900, 5)), 1)  # rounding makes ties across the shard borders
    codes = rng.normal(size=(900, 4))
    candidates = rng.random(900) < 0.8
    whole = rank(get_strategy(name), scores, 30, candidates, codes)
    cuts = [0, 250, 251, 700, 900]
    parts = [rank_part(get_strategy(name), scores[a:b], 30, candidates[a:b], codes[a:b])
             for a, b in itertools.pairwise(cuts)]
    merged = merge_ranking(get_strategy(name), parts, 30)
    assert merged.top.indices.tolist() == whole.top.indices.tolist()
    assert np.array_equal(merged.view, whole.view)
    assert sum(len(p.rows) for p in parts) < 900 or name.startswith("typicality")  # shortlists, not the pool


def test_typicality_through_rank_sees_the_labeled_at_the_rate_the_pool_was_subsampled() -> None:
    seen = []

    class Recording(TypicalitySampling):
        def select(self, values, codes, k, pool, labeled=None, n_labeled=None):
            seen.append(len(labeled))
            return super().select(values, codes, k, pool, labeled, n_labeled)

    rng = np.random.default_rng(0)
    codes = rng.normal(size=(4000, 3))
    candidates = np.arange(4000) < 3200  # 3,200 unlabeled, 800 labeled
    rank(Recording(max_items=1000, max_clusters=50), np.zeros((4000, 2)), 10, candidates, codes)
    assert seen == [round(800 * 1000 / 3200)], "a quarter of the pool is shortlisted: a quarter of the labeled"
    seen.clear()
    rank(Recording(max_items=5000, max_clusters=50), np.zeros((4000, 2)), 10, candidates, codes)
    assert seen == [800], "a pool under max_items keeps every labeled code"


def test_a_strategy_spec_carries_its_options_in_one_string() -> None:
    s = get_strategy("typicality-margin:until=500,neighbours=10")
    assert (s.until, s.neighbours) == (500, 10)
    assert get_strategy("typicality-margin:until=500", options={"until": 200}).until == 200, "explicit options win"
    with pytest.raises(ValueError, match="not KEY=NUMBER"):
        get_strategy("typicality-margin:until")
    with pytest.raises(ValueError, match="has no option 'k'"):
        get_strategy("margin:k=3")


def test_typicality_then_margin_switches_on_the_labels_there_are_not_on_the_sample_of_their_codes() -> None:
    rng = np.random.default_rng(0)
    codes, scores = rng.normal(size=(4000, 3)), rng.normal(size=(4000, 2))
    candidates = np.arange(4000) >= 400  # 400 labeled; a quarter of the pool shortlisted sends ~100 codes
    switched = rank(TypicalityThenMargin(until=300, max_items=1000), scores, 10, candidates, codes)
    margin = rank(MarginSampling(), scores, 10, candidates)
    assert switched.top.indices.tolist() == margin.top.indices.tolist()
    before = rank(TypicalityThenMargin(until=500, max_items=1000), scores, 10, candidates, codes)
    assert before.top.indices.tolist() != margin.top.indices.tolist()


@pytest.mark.parametrize("name", ["margin", "cluster-margin", "typicality", "typicality-margin", "entropy",
                                  "least-confidence"])
def test_an_item_without_finite_scores_is_asked_last_and_every_view_score_is_a_number(name: str) -> None:
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(60, 3))
    scores = codes @ rng.normal(size=(3, 4))
    codes[7], scores[7] = np.nan, np.nan
    candidates = np.ones(60, bool)
    candidates[:10] = False  # labeled context for the strategies that read it
    candidates[7] = True
    r = rank(get_strategy(name, random_state=0), scores, 5, candidates=candidates, codes=codes)
    assert np.isfinite(r.view).all() and 7 not in r.top.indices
    assert r.view[7] == r.view[candidates].max(), "last of the candidates"


def test_cluster_margin_clusters_only_finite_codes_when_its_candidates_reach_one_that_is_not() -> None:
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(20, 2))
    scores = codes @ rng.normal(size=(2, 3))
    codes[3] = np.inf  # its scores stay finite: only the code is broken
    top = ClusterMarginSampling().select(MarginSampling().uncertainty(scores), codes, 5, np.arange(20))
    assert len(top) == 5 and len(set(top.tolist())) == 5 and 3 not in top
    everything = ClusterMarginSampling().select(MarginSampling().uncertainty(scores), codes, 20, np.arange(20))
    assert everything[-1] == 3 and sorted(everything.tolist()) == list(range(20))
