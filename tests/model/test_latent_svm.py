"""Linear SVM on codes: normalised confidence, classes without labels, binary case."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from model.latent_svm import ABSENT, LatentSVM

CENTRES_3 = np.array([[0.0, 0.0], [4.0, 0.0], [1.0, 3.5]])


def clusters(centres: np.ndarray, per_class: int = 40, noise: float = 0.3, seed: int = 0,
             labels: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = list(range(len(centres))) if labels is None else labels
    z = np.concatenate([c + noise * rng.standard_normal((per_class, centres.shape[1])) for c in centres])
    y = np.repeat(labels, per_class)
    return z, y


def boundary_point(svm: LatentSVM, a: np.ndarray, b: np.ndarray, ca: int, cb: int) -> np.ndarray:
    """Bisect the segment a -> b for the point where the scores of classes ca and cb are equal."""
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        s = svm.decision_function((a + mid * (b - a))[None])[0]
        if s[ca] > s[cb]:
            lo = mid
        else:
            hi = mid
    return a + (lo + hi) / 2 * (b - a)


@pytest.fixture(scope="module")
def svm3() -> LatentSVM:
    z, y = clusters(CENTRES_3)
    return LatentSVM().fit(z, y)


def test_fits_and_predicts_separable_clusters(svm3: LatentSVM) -> None:
    z, y = clusters(CENTRES_3, seed=1)
    assert np.mean(svm3.predict(z) == y) > 0.97
    assert svm3.decision_function(z).shape == (len(z), 3)
    np.testing.assert_array_equal(svm3.classes_, [0, 1, 2])


def test_confidence_is_in_unit_interval(svm3: LatentSVM) -> None:
    rng = np.random.default_rng(2)
    z = rng.uniform(-20, 20, size=(2000, 2))
    conf = svm3.confidence(z)
    assert conf.shape == (2000,)
    assert conf.min() >= 0.0
    assert conf.max() <= 1.0
    assert conf.min() < 0.05  # the range is really used, not a constant
    assert (conf == 1.0).mean() > 0.1  # far beyond a centre the confidence saturates


def test_confidence_is_one_at_class_centres(svm3: LatentSVM) -> None:
    np.testing.assert_allclose(svm3.confidence(svm3.centres_), 1.0, atol=1e-9)
    np.testing.assert_array_equal(svm3.predict(svm3.centres_), [0, 1, 2])


def test_confidence_is_zero_on_the_boundary_between_two_centres(svm3: LatentSVM) -> None:
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        p = boundary_point(svm3, svm3.centres_[a], svm3.centres_[b], a, b)
        s = svm3.decision_function(p[None])[0]
        assert set(np.argsort(s)[-2:]) == {a, b}  # the two classes are the top two there
        assert svm3.confidence(p[None])[0] < 1e-6
        # and it rises monotonically from the boundary to the centre
        path = p + np.linspace(0, 1, 6)[:, None] * (svm3.centres_[a] - p)
        conf = svm3.confidence(path)
        assert np.all(np.diff(conf) > 0)
        assert conf[-1] == pytest.approx(1.0)


def test_confidence_from_scores_matches_confidence(svm3: LatentSVM) -> None:
    z, _ = clusters(CENTRES_3, seed=3)
    np.testing.assert_array_equal(svm3.confidence_from_scores(svm3.decision_function(z)), svm3.confidence(z))
    assert svm3.confidence_from_scores(np.zeros((0, 3))).shape == (0,)


def test_classes_without_labels_never_win() -> None:
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [1.0, 3.5]])
    z, y = clusters(centres, labels=[0, 2, 3])  # classes 1 and 4 have no labels
    svm = LatentSVM(n_classes=5).fit(z, y)
    assert svm.n_classes_ == 5
    np.testing.assert_array_equal(svm.present_, [0, 2, 3])
    far = np.random.default_rng(0).uniform(-1e4, 1e4, size=(5000, 2))
    scores = svm.decision_function(far)
    assert scores.shape == (5000, 5)
    assert np.all(scores[:, [1, 4]] == ABSENT)
    assert set(np.unique(svm.predict(far))) <= {0, 2, 3}
    assert np.isnan(svm.centres_[[1, 4]]).all()
    assert not np.isnan(svm.centres_[[0, 2, 3]]).any()
    conf = svm.confidence(far)
    assert conf.min() >= 0.0
    assert conf.max() <= 1.0
    np.testing.assert_allclose(svm.confidence(svm.centres_[[0, 2, 3]]), 1.0, atol=1e-9)


def test_binary_case_with_two_present_classes_of_three() -> None:
    centres = np.array([[-2.0, 1.0], [3.0, 0.0]])
    z, y = clusters(centres, labels=[0, 2])
    svm = LatentSVM(n_classes=3).fit(z, y)
    np.testing.assert_array_equal(svm.predict(z), y)
    scores = svm.decision_function(z)
    assert np.all(scores[:, 1] == ABSENT)
    np.testing.assert_allclose(scores[:, 0], -scores[:, 2])  # one binary SVM, both signs
    np.testing.assert_allclose(svm.confidence(svm.centres_[[0, 2]]), 1.0, atol=1e-9)
    p = boundary_point(svm, svm.centres_[0], svm.centres_[2], 0, 2)
    assert svm.confidence(p[None])[0] < 1e-6
    far = np.random.default_rng(0).uniform(-100, 100, size=(1000, 2))
    assert set(np.unique(svm.predict(far))) == {0, 2}


def test_n_classes_defaults_to_largest_label_plus_one() -> None:
    z, y = clusters(CENTRES_3[:2], labels=[0, 3])
    svm = LatentSVM().fit(z, y)
    assert svm.n_classes_ == 4
    assert set(np.unique(svm.predict(z))) == {0, 3}


@pytest.mark.parametrize("labels", [[1, 1, 1, 1], []])
def test_needs_two_classes(labels: list[int]) -> None:
    z = np.zeros((len(labels), 2))
    with pytest.raises(ValueError, match="at least two classes"):
        LatentSVM(n_classes=3).fit(z, np.array(labels, dtype=int))


def test_a_near_tie_reads_as_low_confidence_even_when_the_reference_margin_is_not_positive(svm3: LatentSVM) -> None:
    """Overlapping classes can leave a centre that does not beat the runner-up; a tie there is not certainty."""
    svm = copy.deepcopy(svm3)
    svm.centre_margins_[0, 1] = -0.5
    p = boundary_point(svm, svm.centres_[0], svm.centres_[1], 0, 1)
    near = p + 1e-3 * (svm.centres_[0] - p)
    scores = svm.decision_function(near[None])
    assert np.argmax(scores[0]) == 0 and np.argsort(scores[0])[-2] == 1
    assert svm.confidence(near[None])[0] < 0.01


def test_calibrated_probability_is_honest_where_the_confidence_is_not() -> None:
    from model.calibration import expected_calibration_error

    rng = np.random.default_rng(0)

    def blobs(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 3, n)
        centres = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 1.7]])
        return centres[y] + rng.normal(scale=0.9, size=(n, 2)), y  # overlapping classes

    z, y = blobs(600)
    svm = LatentSVM(n_classes=3).fit(z, y)
    zt, yt = blobs(4000)
    scores = svm.decision_function(zt)
    right = np.argmax(scores, axis=1) == yt
    conf = svm.confidence_from_scores(scores)
    prob = svm.probability_from_confidence(conf)
    assert expected_calibration_error(prob, right) < 0.05
    assert expected_calibration_error(prob, right) < expected_calibration_error(conf, right)
    order = np.argsort(conf)
    assert np.all(np.diff(prob[order]) >= -1e-12), "calibration keeps the order of the confidence"


def test_a_class_with_one_label_sits_out_of_the_calibration_instead_of_switching_it_off() -> None:
    rng = np.random.default_rng(0)
    z = np.vstack([rng.normal(0, 0.9, (50, 2)), rng.normal((2, 0), 0.9, (50, 2)), [[1.0, 5.0]]])
    y = np.array([0] * 50 + [1] * 50 + [2])
    svm = LatentSVM(n_classes=3).fit(z, y)
    assert svm.calibration_ is not None and svm.calibration_.shape[1] > 0
    conf = svm.confidence(np.array([[1.0, 0.0]]))
    assert svm.probability_from_confidence(conf)[0] != conf[0], "the map applies"


def test_too_few_labels_leave_the_confidence_uncalibrated() -> None:
    z = np.array([[0.0, 0.0], [0.1, 0.0], [3.0, 3.0], [3.1, 3.0]])
    svm = LatentSVM(n_classes=2).fit(z, np.array([0, 0, 1, 1]))
    assert svm.calibration_ is None
    np.testing.assert_array_equal(svm.probability_from_confidence(np.array([0.2, 0.9])), [0.2, 0.9])


def test_the_fit_does_not_depend_on_numpy_s_global_random_state() -> None:
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(40, 50)), np.arange(40) % 4  # fewer items than features: liblinear's dual solver
    fits = []
    for seed in (1, 2):
        np.random.seed(seed)
        fits.append(LatentSVM(n_classes=4).fit(z, y).coef_)
    np.testing.assert_array_equal(fits[0], fits[1])


@pytest.mark.parametrize(("labels", "n_classes"), [([0, 1, 3], 3), ([-1, 0, 1], 3), ([-1, 0, 1], None)])
def test_labels_must_be_class_indices(labels: list[int], n_classes: int | None) -> None:
    z, y = clusters(CENTRES_3, labels=labels)
    with pytest.raises(ValueError, match="class indices"):
        LatentSVM(n_classes=n_classes).fit(z, y)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_a_non_finite_code_gets_zero_confidence(svm3: LatentSVM) -> None:
    z, _ = clusters(CENTRES_3, per_class=2, seed=3)
    bad = z.copy()
    bad[1, 0], bad[3, 1], bad[4] = np.nan, np.inf, -np.inf
    conf = svm3.confidence(bad)
    assert conf[1] == conf[3] == conf[4] == 0.0
    np.testing.assert_array_equal(conf[[0, 2, 5]], svm3.confidence(z[[0, 2, 5]]))


def test_not_fitted() -> None:
    for call in (LatentSVM().predict, LatentSVM().decision_function, LatentSVM().confidence):
        with pytest.raises(NotFittedError):
            call(np.zeros((1, 2)))


def test_the_confidence_map_is_fitted_on_the_items_it_is_told_and_on_all_when_they_are_too_few() -> None:
    rng = np.random.default_rng(0)
    z = np.vstack([rng.normal(0, 0.9, (200, 2)), rng.normal((2, 0), 0.9, (200, 2))])
    y = np.array([0] * 200 + [1] * 200)
    y_noisy = y.copy()
    on = np.zeros(400, bool)
    on[::4] = True
    y_noisy[on & (rng.random(400) < 0.5)] ^= 1  # the calibration items are right half as often
    every = LatentSVM(n_classes=2).fit(z, y_noisy)
    chosen = LatentSVM(n_classes=2).fit(z, y_noisy, calibrate_on=on)
    q = np.array([[3.0, 0.0]])
    p_every = every.probability_from_confidence(every.confidence(q))[0]
    p_chosen = chosen.probability_from_confidence(chosen.confidence(q))[0]
    assert p_chosen < p_every - 0.1, "the map learned where its items are right only half the time"
    few = np.zeros(400, bool)
    few[:5] = True
    np.testing.assert_array_equal(LatentSVM(n_classes=2).fit(z, y_noisy, calibrate_on=few).calibration_,
                                  every.calibration_)


def test_no_map_is_learned_from_held_out_predictions_without_mistakes() -> None:
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(-5, 0.1, (13, 2)), rng.normal(5, 0.1, (13, 2))])
    y = np.repeat([0, 1], 13)
    svm = LatentSVM(n_classes=3).fit(z, y)  # easy classes, one class not labeled yet: every held-out guess right
    assert svm.calibration_ is None
    conf = np.array([0.0003, 0.5, 0.99])
    np.testing.assert_array_equal(svm.probability_from_confidence(conf), conf)  # the least sure is not made 1.0


def _overlapping(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(0, 0.9, (n, 2)), rng.normal((2, 0), 0.9, (n, 2))]), np.repeat([0, 1], n)


@pytest.mark.parametrize("name", ["isotonic", "logistic", "beta"])
def test_the_map_named_by_calibration_is_the_one_fitted_on_the_out_of_fold_readings(name: str) -> None:
    from model.calibration import MAPS

    z, y = _overlapping()
    svm = LatentSVM(n_classes=2, calibration=name).fit(z, y)
    conf, right, kept = svm.out_of_fold(z, y)
    assert kept.all() and conf.shape == right.shape == (400,) and 0.05 < 1 - right.mean() < 0.4
    np.testing.assert_array_equal(svm.calibration_, MAPS[name](conf, right))


def test_the_smooth_maps_never_say_certain_where_the_classes_overlap() -> None:
    z, y = _overlapping(15, seed=5)
    probabilities = {name: LatentSVM(n_classes=2, calibration=name).fit(z, y).probability_from_confidence(
        np.array([1.0]))[0] for name in ("isotonic", "logistic", "beta")}
    assert probabilities["isotonic"] == 1.0, "30 labels: the step map's top step says certain"
    assert probabilities["logistic"] < 0.95 and probabilities["beta"] < 1.0


def test_out_of_fold_leaves_out_a_class_with_one_label_and_reads_none_below_the_minimum() -> None:
    z, y = _overlapping(30)
    z, y = np.vstack([z, [[1.0, 5.0]]]), np.append(y, 2)
    conf, _, kept = LatentSVM(n_classes=3).fit(z, y).out_of_fold(z, y)
    assert not kept[-1] and kept[:-1].all() and len(conf) == 60
    assert LatentSVM(n_classes=3).fit(z, y).out_of_fold(z[:8], np.array([0, 0, 0, 0, 1, 1, 1, 1])) is None


def test_an_unknown_calibration_is_refused() -> None:
    z, y = _overlapping(10)
    with pytest.raises(ValueError, match="isotonic, logistic, beta"):
        LatentSVM(calibration="platt").fit(z, y)


def test_the_served_map_is_the_logistic_one_on_the_held_items_and_on_every_label() -> None:
    """The map chosen on validation (README: "Which map turns the confidence into a probability")."""
    from model.calibration import MAPS

    z, y = _overlapping()
    on = np.zeros(400, bool)
    on[::4] = True
    every = LatentSVM(n_classes=2).fit(z, y)
    conf, right, _ = every.out_of_fold(z, y)
    np.testing.assert_array_equal(every.calibration_, MAPS["logistic"](conf, right))
    held = LatentSVM(n_classes=2).fit(z, y, calibrate_on=on)
    np.testing.assert_array_equal(held.calibration_, MAPS["logistic"](conf[on], right[on]))
    few = on & (np.arange(400) < 40)  # 10 held: too few, every label calibrates
    np.testing.assert_array_equal(LatentSVM(n_classes=2).fit(z, y, calibrate_on=few).calibration_, every.calibration_)
