"""Other classifiers on the SAE's latent codes, read on the very model a learning curve trains.

The SVM's ``C`` was never tuned: it was left at scikit-learn's 1.0. A head costs nothing to
refit, so every round of one curve reads several heads on the same codes and the same labels;
the curve's own acquisition still runs on the model's SVM (``C=1``), so a head that wins here is
a first-order reading, confirmed only by a protocol run that also acquires with it.
``label_efficiency.py --probe-heads`` stores the readings under each point's ``probe``.
The pool heads also see the unlabeled pool's codes (transductive, as the served model sees its
pool): label spreading over a nearest-neighbour graph (Zhou et al. 2004), and an SVM refitted
with its own confident guesses on the pool; they ask whether the pool's cluster structure in the
codes carries labels further than the labeled codes alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.semi_supervised import LabelSpreading

from model.latent_svm import LatentSVM


def _nearest_centre(z: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    classes = np.unique(y)
    centres = np.stack([z[y == c].mean(0) for c in classes])
    return lambda q: classes[np.argmin(((q[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)]


def heads(n_classes: int) -> dict[str, Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]]:
    """Name -> (codes, labels) -> predict function; ``svm C=1`` is the model's own head, a check."""
    def svm(c: float):
        return lambda z, y: LatentSVM(n_classes=n_classes, C=c, calibrate=False).fit(z, y).predict

    def sk(make):
        return lambda z, y: make().fit(z, y).predict

    return {
        "svm C=0.01": svm(0.01), "svm C=0.1": svm(0.1), "svm C=1": svm(1.0), "svm C=10": svm(10.0),
        "svm C=100": svm(100.0),
        "svm standardised C=1": sk(lambda: make_pipeline(StandardScaler(),
                                                         LatentSVM(n_classes=n_classes, calibrate=False))),
        "logistic C=1": sk(lambda: LogisticRegression(C=1.0, max_iter=2000)),
        "knn 10": sk(lambda: KNeighborsClassifier(10)),
        "nearest centre": _nearest_centre,
    }


def _self_trained_svm(n_classes: int, threshold: float) -> Callable:
    def fit(z: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        labeled = y >= 0
        svm = LatentSVM(n_classes=n_classes, calibrate=False).fit(z[labeled], y[labeled])
        scores = svm.decision_function(z[~labeled])
        sure = svm.confidence_from_scores(scores) >= threshold
        guessed = np.argmax(scores, axis=1)[sure]
        z_all = np.concatenate([z[labeled], z[~labeled][sure]])
        return LatentSVM(n_classes=n_classes, calibrate=False).fit(z_all, np.concatenate([y[labeled], guessed])).predict
    return fit


def pool_heads(n_classes: int) -> dict[str, Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]]:
    """Name -> (pool codes, labels with -1 for unlabeled) -> predict function."""
    def spreading(alpha: float):
        return lambda z, y: LabelSpreading(kernel="knn", n_neighbors=10, alpha=alpha, max_iter=100).fit(z, y).predict

    return {"label spreading, 10 neighbours, α 0.5": spreading(0.5),
            "label spreading, 10 neighbours, α 0.9": spreading(0.9),
            "svm + its confident pool guesses (≥ 0.9)": _self_trained_svm(n_classes, 0.9)}


def probe_heads(model, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                x_test: np.ndarray, y_test: np.ndarray) -> dict:
    """Validation and test error of every head, fitted on the labeled items' codes (pool heads: the pool's)."""
    labeled = y >= 0
    z = model.transform(x[labeled])
    z_pool = model.transform(x)
    z_val = model.transform(x_val) if len(x_val) else None
    z_test = model.transform(x_test)
    out: dict[str, dict[str, float]] = {}
    k = int(model.n_classes_)
    fits = [(name, fit, (z, y[labeled])) for name, fit in heads(k).items()]
    fits += [(name, fit, (z_pool, y)) for name, fit in pool_heads(k).items()]
    for name, fit, data in fits:
        predict = fit(*data)
        row = {"test_error": round(float(np.mean(predict(z_test) != y_test)), 5)}
        if z_val is not None:
            row["val_error"] = round(float(np.mean(predict(z_val) != y_val)), 5)
        out[name] = row
    return out
