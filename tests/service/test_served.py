"""The served snapshot: the head is the ranking for every strategy, new items merge by view score."""

from __future__ import annotations

import numpy as np
import pytest

from connectors.datasets import load_digits_dataset
from model.acquisition import get_strategy
from model.sae_classifier import SAEClassifier
from service.served import ServedVersion, decision_scores, load_served, save_served, score, score_shard


@pytest.fixture(scope="module")
def fitted() -> tuple[SAEClassifier, np.ndarray, dict[int, int], np.ndarray]:
    ds = load_digits_dataset()
    x, y_true = ds.x_train[:400], ds.y_train[:400]
    y = np.full(len(x), -1)
    y[:60] = y_true[:60]
    model = SAEClassifier(class_names=[str(i) for i in range(10)], epochs=3, device="cpu").fit(x, y)
    ids = np.arange(len(x)) * 2 + 5
    return model, x, {int(ids[i]): int(y[i]) for i in range(60)}, ids


@pytest.mark.parametrize("strategy", ["margin", "cluster-margin", "entropy", "typicality-margin"])
def test_the_head_is_the_view_order(fitted, strategy: str) -> None:
    model, x, labels, ids = fitted
    served = ServedVersion.build(1, "sae-v1", model, strategy, labels, ids, x, keep=40)
    assert len(served.head_ids) == 40 and not set(served.head_ids.tolist()) & set(labels)
    view = served.score[served.lookup(served.head_ids)]
    assert np.all(np.diff(view) >= 0), "lowest score first shows the head in its order"
    rest = np.setdiff1d(served.ids, np.concatenate([served.head_ids, list(labels)]))
    assert view.max() <= served.score[served.lookup(rest)].min()


def test_cluster_margin_head_differs_from_plain_margin_and_spreads(fitted) -> None:
    model, x, labels, ids = fitted
    plain = ServedVersion.build(1, "sae-v1", model, "margin", labels, ids, x, keep=20)
    spread = ServedVersion.build(1, "sae-v1", model, "cluster-margin", labels, ids, x, keep=20)
    assert set(plain.head_ids.tolist()) != set(spread.head_ids.tolist())
    z = model.transform(x)
    pos = {int(t): i for i, t in enumerate(ids)}

    def spread_of(head: np.ndarray) -> float:
        c = z[[pos[int(t)] for t in head]]
        return float(np.mean(np.linalg.norm(c[:, None] - c[None], axis=2)))

    assert spread_of(spread.head_ids) > spread_of(plain.head_ids)


def test_new_tasks_that_enter_the_head_join_the_latent_picture_with_their_codes(fitted) -> None:
    """The picture rings the head's first tasks: a new task pushed to the team must have a point to ring."""
    model, x, labels, ids = fitted
    served = ServedVersion.build(1, "sae-v1", model, "margin", labels, ids[:300], x[:300], keep=30)
    d, z = decision_scores(model, x[300:][::-1])
    scored, _ = score(model, d, get_strategy("margin"), codes=z)
    merged = served.with_items(ids[300:][::-1], scored, keep=30, codes=z)
    entered = np.setdiff1d(merged.head_ids, served.head_ids)
    assert len(entered) and np.isin(merged.head_ids, merged.latent["ids"]).all(), "every head task has a point"
    at = {int(t): i for i, t in enumerate(merged.latent["ids"])}
    np.testing.assert_allclose(merged.latent["z"][[at[int(t)] for t in entered]],
                               model.transform(x[(entered - 5) // 2]), atol=1e-5)
    assert (merged.latent["y"][[at[int(t)] for t in entered]] == -1).all()
    outside = np.setdiff1d(ids[300:], merged.head_ids)
    assert not np.isin(outside, merged.latent["ids"]).any(), "only the head's: the grey sample is the version's"
    assert len(served.with_items(ids[300:][::-1], scored, keep=30).latent["ids"]) == len(served.latent["ids"])


def test_tasks_that_joined_the_picture_leave_it_with_the_head_so_it_never_grows_past_sample_and_head(fitted) -> None:
    """Weeks of new tasks and no training: each batch's head entrants join, and those pushed out go again."""
    model, x, labels, ids = fitted
    served = ServedVersion.build(1, "sae-v1", model, "margin", labels, ids[:200], x[:200], keep=10)
    sample = len(served.latent["ids"])
    for start in range(200, len(x), 20):
        d, z = decision_scores(model, x[start:start + 20])
        scored, _ = score(model, d, get_strategy("margin"), codes=z)
        served = served.with_items(ids[start:start + 20], scored, keep=10, codes=z)
        assert np.isin(served.head_ids, served.latent["ids"]).all(), "every head task keeps its point"
        assert len(served.latent["ids"]) <= sample + 10
    assert served.latent["joined"].sum() <= 10 and not np.isin(served.latent["ids"][~served.latent["joined"]],
                                                                 ids[200:]).any(), "the version's sample stays whole"


def test_new_items_merge_into_the_head_by_view_score(fitted) -> None:
    model, x, labels, ids = fitted
    served = ServedVersion.build(1, "sae-v1", model, "cluster-margin", labels, ids[:300], x[:300], keep=30)
    d, z = decision_scores(model, x[300:])
    scored, _ = score(model, d, get_strategy("cluster-margin"), codes=z)
    merged = served.with_items(ids[300:], scored, keep=30)
    assert len(merged.head_ids) == 30
    view = merged.score[merged.lookup(merged.head_ids)]
    assert np.all(np.diff(view) >= 0)
    np.testing.assert_array_equal(merged.head_view, view)


def test_save_and_load_keep_the_head_view(fitted, tmp_path) -> None:
    model, x, labels, ids = fitted
    served = ServedVersion.build(1, "sae-v1", model, "cluster-margin", labels, ids, x, keep=25)
    save_served(served, tmp_path / "s.npz")
    back = load_served(tmp_path / "s.npz", 1, "sae-v1", model)
    np.testing.assert_array_equal(back.head_view, served.head_view)
    np.testing.assert_array_equal(back.head_ids, served.head_ids)


def test_a_snapshot_saved_without_head_view_merges_on_the_view_scale(fitted, tmp_path) -> None:
    model, x, labels, ids = fitted
    served = ServedVersion.build(1, "sae-v1", model, "margin", labels, ids[:300], x[:300], keep=30)
    old = served.__class__(**{**served.__dict__, "head_view": None})
    d, z = decision_scores(model, x[300:])
    scored, _ = score(model, d, get_strategy("margin"), codes=z)
    a = served.with_items(ids[300:], scored, keep=30)
    b = old.with_items(ids[300:], scored, keep=30)
    np.testing.assert_array_equal(a.head_ids, b.head_ids)


def test_a_ranking_of_no_items_is_empty() -> None:
    ids = np.array([10, 11, 12])
    served = ServedVersion(1, "sae-v1", None, "margin", {}, ids, np.zeros(3, int), np.zeros(3), np.zeros(3),
                           ids, np.array([0.1, 0.2, 0.3]))
    assert served.ranking(0) == [] and served.ranking(-1) == []
    assert served.ranking(2) == [(10, 0.1), (11, 0.2)] and served.ranking(5, exclude={11}) == [(10, 0.1), (12, 0.3)]


def test_decision_scores_keep_the_precision_the_simulator_ranks_in(fitted) -> None:
    model, x = fitted[0], fitted[1]
    d, _ = decision_scores(model, x[:20])
    assert d.dtype == np.float64
    np.testing.assert_array_equal(d, model.svm_.decision_function(model.transform(x[:20])))


def _scored(model, x: np.ndarray):
    d, z = decision_scores(model, x)
    return score(model, d, get_strategy("margin"), codes=z)[0]


def _columns(v: ServedVersion) -> list[np.ndarray]:
    return [v.ids, v.pred, v.score, v.confidence, v.head_ids, v.head_view]


def test_new_tasks_past_every_id_append_in_place_and_answer_as_a_merge_would(fitted) -> None:
    model, x, labels, ids = fitted
    base = ServedVersion.build(1, "sae-v1", model, "margin", labels, ids[:200], x[:200], keep=30)
    one = base.with_items(ids[250:300][::-1], _scored(model, x[250:300][::-1]), keep=30)
    two = one.with_items(ids[300:], _scored(model, x[300:]), keep=30)
    whole = ServedVersion.build(1, "sae-v1", model, "margin", labels, np.concatenate([ids[:200], ids[250:]]),
                                np.concatenate([x[:200], x[250:]]), keep=30)
    for a, b in zip(_columns(two), _columns(whole), strict=True):
        np.testing.assert_allclose(a, b)
    assert two.ids.base is not None and two.ids.base is one.ids.base, "the second batch went into the same room"
    assert len(one.ids) == 250 and one.ids[-1] == ids[299], "the version before still answers for its own tasks"


def test_a_snapshot_extended_twice_from_the_same_one_keeps_both_apart(fitted) -> None:
    model, x, labels, ids = fitted
    base = ServedVersion.build(1, "sae-v1", model, "margin", labels, ids[:150], x[:150], keep=30)
    one = base.with_items(ids[150:200], _scored(model, x[150:200]), keep=30)
    a = one.with_items(ids[200:250], _scored(model, x[200:250]), keep=30)
    b = one.with_items(ids[300:350], _scored(model, x[300:350]), keep=30)  # a stale one: must not write over a
    assert a.ids[-1] == ids[249] and (a.lookup(ids[:250]) >= 0).all() and (a.lookup(ids[300:350]) < 0).all()
    np.testing.assert_array_equal(a.pred[a.lookup(ids[200:250])], _scored(model, x[200:250]).pred)
    assert b.ids[-1] == ids[349] and (b.lookup(ids[200:250]) < 0).all() and (b.lookup(ids[300:350]) >= 0).all()
    c = a.with_items(ids[250:300], _scored(model, x[250:300]), keep=30)
    assert (c.lookup(ids[:300]) >= 0).all() and a.ids[-1] == ids[249] and len(one.ids) == 200


def test_new_tasks_among_known_ids_are_merged_in_order(fitted) -> None:
    model, x, labels, ids = fitted
    base = ServedVersion.build(1, "sae-v1", model, "margin", labels, ids[100:], x[100:], keep=30)
    merged = base.with_items(ids[:100], _scored(model, x[:100]), keep=30, rows_mark=(7, 0, 400))
    assert np.all(np.diff(merged.ids) > 0) and (merged.lookup(ids) >= 0).all()
    np.testing.assert_array_equal(merged.pred[merged.lookup(ids[:100])], _scored(model, x[:100]).pred)
    assert merged.rows_mark == (7, 0, 400) and base.rows_mark is None


@pytest.mark.parametrize("name", ["margin", "cluster-margin"])  # the head from the sample, or from the shortlist
def test_the_picture_keeps_the_labeled_and_the_head_however_large_the_pool(fitted, monkeypatch, name: str) -> None:
    import service.served

    model, x, labels, ids = fitted
    monkeypatch.setattr(service.served, "LATENT_KEEP", 30)  # a pool far larger than the picture's sample
    labeled = np.isin(ids, list(labels))
    strategy = get_strategy(name)
    whole = ServedVersion.from_shards(1, "sae-v1", model, name, labels,
                                      [score_shard(model, ids, x, strategy, 20, labeled, 30)], 20)
    shards = [score_shard(model, ids[s], x[s], strategy, 20, labeled[s], 30) for s in (slice(0, 150), slice(150, None))]
    split = ServedVersion.from_shards(1, "sae-v1", model, name, labels, shards, 20)
    assert sum(len(s.latent_ids) for s in shards) <= 2 * (30 + 30 + 20), "a shard sends its samples, not its shortlist"
    shown = set(whole.latent["ids"].tolist())
    assert len(shown & set(labels)) == 30, "labeled apart: as many as the sample's size, not 60 in 400 of it"
    assert set(whole.head_ids.tolist()) <= shown, "the head the picture rings is in it"
    assert len(shown - set(labels) - set(whole.head_ids.tolist())) <= 30
    np.testing.assert_array_equal(np.sort(split.latent["ids"]), np.sort(whole.latent["ids"]))
    pos = {int(t): i for i, t in enumerate(ids)}
    for v in (whole, split):
        rows = [pos[int(t)] for t in v.latent["ids"]]
        np.testing.assert_allclose(v.latent["z"], model.transform(x[rows]), rtol=1e-4, atol=1e-5)
    assert (whole.latent["y"][np.isin(whole.latent["ids"], list(labels))] >= 0).all()
