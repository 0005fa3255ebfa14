"""Linear SVM on latent codes, with the paper's normalised confidence."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted

from model.calibration import MAPS, SERVED_MAP

ABSENT = -1e9
MIN_CALIBRATION = 20  # items a confidence map is fitted on, at the least
MIN_OUTCOMES = 2  # out-of-fold predictions right, and wrong, a map needs at the least


def fit_map(conf: np.ndarray, right: np.ndarray, on: np.ndarray, name: str) -> np.ndarray | None:
    """Knots of map ``name`` (one of :data:`MAPS`) fitted on the out-of-fold readings ``on``, or None where they hold
    fewer than ``MIN_OUTCOMES`` mistakes or successes: a map of all right (or all wrong) would say 1.0 (or 0.0) for
    every item, the least sure included, so the confidence stands."""
    wrong = np.count_nonzero(right[on] == 0)
    if wrong < MIN_OUTCOMES or np.count_nonzero(on) - wrong < MIN_OUTCOMES:
        return None
    return MAPS[name](np.asarray(conf[on], np.float64), np.asarray(right[on], np.float64))


class LatentSVM(ClassifierMixin, BaseEstimator):
    """One-vs-rest linear SVM over ``n_classes`` classes, some of which may have no labels yet.

    Scores of classes without labels are a large negative constant, so they never win and
    never count as runner-up while a labeled class remains. ``confidence`` is the margin
    between the top two classes divided by the same margin measured at the predicted
    class's centre (the mean code of its labeled items): 0 on the decision boundary, 1 at
    the centre or beyond. This is the paper's "scores normalised between the class centres".
    Where a class's centre does not itself beat the runner-up (reference margin <= 0, which
    happens for overlapping classes), the median reference margin of the model is used, so
    a near-tie still reads as low confidence.
    """

    def __init__(self, n_classes: int | None = None, C: float = 1.0, max_iter: int = 5000,
                 calibrate: bool = True, calibration: str = SERVED_MAP) -> None:
        self.n_classes = n_classes
        self.C = C
        self.max_iter = max_iter
        self.calibrate = calibrate
        self.calibration = calibration

    def fit(self, Z: np.ndarray, y: np.ndarray, calibrate_on: np.ndarray | None = None) -> LatentSVM:
        """``calibrate_on``: the items the confidence map is fitted on (out of fold), when at least
        ``MIN_CALIBRATION`` of them; else every item."""
        if self.calibration not in MAPS:
            raise ValueError(f"calibration must be one of {', '.join(MAPS)}, got {self.calibration!r}")
        z = np.asarray(Z, dtype=np.float64)
        y = np.asarray(y, dtype=np.int64)
        present = np.unique(y)
        if len(present) < 2:
            raise ValueError(f"the SVM needs labels of at least two classes, got {len(present)}")
        k = int(self.n_classes) if self.n_classes is not None else int(present.max() + 1)
        if present.min() < 0 or present.max() >= k:
            raise ValueError(f"labels must be class indices in 0..{k - 1}, got {present.min()}..{present.max()}")
        svc = LinearSVC(C=float(self.C), max_iter=int(self.max_iter), dual="auto", random_state=0).fit(z, y)
        coef, intercept = svc.coef_, svc.intercept_
        if len(present) == 2:
            coef = np.vstack([-coef[0], coef[0]])
            intercept = np.array([-intercept[0], intercept[0]])
        self.n_classes_ = k
        self.classes_ = np.arange(k)
        self.n_features_in_ = z.shape[1]
        self.present_ = present
        self.coef_ = np.zeros((k, z.shape[1]))
        self.intercept_ = np.full(k, ABSENT)
        self.coef_[present] = coef
        self.intercept_[present] = intercept
        self.centres_ = np.full((k, z.shape[1]), np.nan)
        for c in present:
            self.centres_[c] = z[y == c].mean(0)
        s = self.decision_function(self.centres_[present])
        self.centre_margins_ = np.ones((k, k))
        for row, c in enumerate(present):
            self.centre_margins_[c] = s[row, c] - s[row]
        self.calibration_ = self._fit_calibration(z, y, calibrate_on) if self.calibrate else None
        return self

    def _fit_calibration(self, z: np.ndarray, y: np.ndarray, on: np.ndarray | None = None) -> np.ndarray | None:
        """Map normalised confidence to the chance of being right, learned out of fold on the labeled codes.

        The normalised confidence ranks items well but is no probability (measured: right far
        more often than it says). A monotone map (``calibration``, one of :data:`MAPS`) of held-out correctness on
        held-out confidence keeps the order and makes the number honest. Returns ``(2, m)`` knots (confidence,
        probability), or None with too few labels per class, or too few held-out mistakes (or successes) to learn a
        map from.
        """
        on = np.ones(len(y), bool) if on is None or np.count_nonzero(on) < MIN_CALIBRATION else np.asarray(on, bool)
        oof = self.out_of_fold(z, y)
        if oof is None:
            return None
        conf, right, kept = oof
        return fit_map(conf, right, on[kept], self.calibration)

    def out_of_fold(self, z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Each labeled code's confidence and whether it was right, from SVMs that did not see it (stratified, up
        to 5 folds: as many as the smallest class has labels), and which items those are: a class with one label sits
        out. None where too few labels. Needs the fitted SVM's class count."""
        from sklearn.model_selection import StratifiedKFold

        kept = np.bincount(y)[y] >= 2  # a class with one label cannot be held out and kept: it sits out
        z, y = z[kept], y[kept]
        counts = np.bincount(y)
        if len(y) < MIN_CALIBRATION or np.count_nonzero(counts) < 2:
            return None
        folds = int(min(5, counts[counts > 0].min()))
        conf, right = np.zeros(len(y)), np.zeros(len(y))
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=0).split(z, y):
            if len(np.unique(y[train])) < 2:
                return None
            fold = LatentSVM(self.n_classes_, self.C, self.max_iter, calibrate=False).fit(z[train], y[train])
            scores = fold.decision_function(z[test])
            conf[test] = fold.confidence_from_scores(scores)
            right[test] = np.argmax(scores, axis=1) == y[test]
        return conf, right, kept

    def probability_from_confidence(self, confidence: np.ndarray) -> np.ndarray:
        """The calibrated chance that the predicted class is right (the confidence itself when uncalibrated)."""
        c = np.asarray(confidence, dtype=np.float64)
        knots = getattr(self, "calibration_", None)
        if knots is None or knots.shape[1] == 0:
            return c
        return np.interp(c, knots[0], knots[1])

    def _margin_scale(self) -> float:
        """Median positive reference margin between labeled classes (derived, so saved models need nothing new)."""
        p = self.present_
        pairs = self.centre_margins_[np.ix_(p, p)][~np.eye(len(p), dtype=bool)]
        positive = pairs[pairs > 0]
        return float(np.median(positive)) if positive.size else 1.0

    def decision_function(self, Z: np.ndarray) -> np.ndarray:
        """One-vs-rest scores, shape ``(n, n_classes)``."""
        check_is_fitted(self, "coef_")
        return np.asarray(Z, dtype=np.float64) @ self.coef_.T + self.intercept_

    def predict(self, Z: np.ndarray) -> np.ndarray:
        return np.argmax(self.decision_function(Z), axis=1)

    def confidence_from_scores(self, scores: np.ndarray) -> np.ndarray:
        """Normalised confidence in [0, 1] for the top class of each row of ``scores``.

        A row with a NaN or infinite score (an item whose code is not finite) gets 0, not NaN, so
        the other items of a request still get their answers.
        """
        check_is_fitted(self, "centre_margins_")
        if scores.shape[0] == 0:
            return np.zeros(0)
        top2 = np.argpartition(-scores, 1, axis=1)[:, :2]
        s2 = np.take_along_axis(scores, top2, axis=1)
        swap = s2[:, 1] > s2[:, 0]
        first = np.where(swap, top2[:, 1], top2[:, 0])
        second = np.where(swap, top2[:, 0], top2[:, 1])
        margin = np.abs(s2[:, 0] - s2[:, 1])
        ref = self.centre_margins_[first, second]
        ref = np.where(ref > 0, ref, self._margin_scale())
        finite = np.isfinite(scores).all(axis=1)
        return np.where(finite, np.clip(np.where(finite, margin, 0.0) / ref, 0.0, 1.0), 0.0)

    def confidence(self, Z: np.ndarray) -> np.ndarray:
        return self.confidence_from_scores(self.decision_function(Z))
