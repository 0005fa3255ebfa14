"""Other classifiers on the SAE's latent codes, read on the very model a learning curve trains.

The SVM's ``C`` was never tuned: it was left at scikit-learn's 1.0. A head costs nothing to
refit, so every round of one curve reads several heads on the same codes and the same labels;
the curve's own acquisition still runs on the model's SVM (``C=1``), so a head that wins here is
a first-order reading, confirmed only by a protocol run that also acquires with it.
``label_efficiency.py --probe-heads`` stores the readings under each point's ``probe``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

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


def probe_heads(model, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                x_test: np.ndarray, y_test: np.ndarray) -> dict:
    """Validation and test error of every head, fitted on the labeled items' codes."""
    labeled = y >= 0
    z = model.transform(x[labeled])
    z_val = model.transform(x_val) if len(x_val) else None
    z_test = model.transform(x_test)
    out: dict[str, dict[str, float]] = {}
    for name, fit in heads(int(model.n_classes_)).items():
        predict = fit(z, y[labeled])
        row = {"test_error": round(float(np.mean(predict(z_test) != y_test)), 5)}
        if z_val is not None:
            row["val_error"] = round(float(np.mean(predict(z_val) != y_val)), 5)
        out[name] = row
    return out
