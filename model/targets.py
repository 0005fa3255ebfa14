"""Structural targets: class positions from a class-distance matrix, aligned to the codes.

Every labeled item of class k gets the same target, so item-level MDS reduces to K class
positions (classical MDS, refined by weighted SMACOF when the embedding is not exact), and
the orthogonal Procrustes alignment needs only count-weighted class means. Nothing here
is larger than K x K or touches more than one pass over the codes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def equal_distances(n_classes: int, distance: float = 1.0) -> np.ndarray:
    """The default: every pair of classes equally far apart (a regular simplex)."""
    d = np.full((n_classes, n_classes), float(distance))
    np.fill_diagonal(d, 0.0)
    return d


def check_distance_matrix(d: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """Return ``d`` as float64 after checking it is a usable class-distance matrix."""
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"class-distance matrix must be square, got shape {d.shape}")
    if n_classes is not None and d.shape[0] != n_classes:
        raise ValueError(f"class-distance matrix is {d.shape[0]}x{d.shape[0]} but there are {n_classes} classes")
    if not np.all(np.isfinite(d)):
        raise ValueError("class-distance matrix has non-finite entries")
    if not np.allclose(d, d.T):
        raise ValueError("class-distance matrix must be symmetric")
    if np.any(np.diag(d) != 0):
        raise ValueError("class-distance matrix must have zeros on the diagonal")
    if np.any(d < 0):
        raise ValueError("class distances must be non-negative")
    return d


def load_distance_matrix(path: str | Path, class_names: Sequence[str]) -> np.ndarray:
    """Read class distances from JSON keyed by class name.

    Accepted forms: ``{"A": {"B": 2.0, ...}, ...}`` (missing pairs are taken from the
    other direction) or ``{"classes": [...], "distances": [[...], ...]}``.
    """
    raw = json.loads(Path(path).read_text())
    names = list(class_names)
    k = len(names)
    if not isinstance(raw, dict):
        raise ValueError(f"distance file must hold a JSON object, got {type(raw).__name__}")
    if "distances" in raw:
        order = [str(c) for c in raw.get("classes", names)]
        if sorted(order) != sorted(names):
            raise ValueError(f"distance file classes {order} do not match the classes {names}")
        m = np.asarray(raw["distances"], dtype=np.float64)
        if m.shape != (len(order), len(order)):
            raise ValueError(f"distances must be {len(order)}x{len(order)} for the classes listed, got shape {m.shape}")
        idx = [order.index(n) for n in names]
        return check_distance_matrix(m[np.ix_(idx, idx)], k)
    unknown = set(raw) - set(names)
    if unknown:
        raise ValueError(f"distance file names unknown classes: {sorted(unknown)}")
    d = np.full((k, k), np.nan)
    np.fill_diagonal(d, 0.0)
    for a, row in raw.items():
        if not isinstance(row, dict):
            raise ValueError(f"distance file: {a!r} must map to {{class: distance}}, got {type(row).__name__}")
        for b, v in row.items():
            if b not in names:
                raise ValueError(f"distance file names unknown class {b!r}")
            i, j = names.index(a), names.index(b)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError(f"distance file: the distance {a!r}-{b!r} must be a number, got {v!r}")
            d[i, j] = d[j, i] = float(v)
    missing = [(names[i], names[j]) for i, j in zip(*np.where(np.isnan(d)), strict=True) if i < j]
    if missing:
        raise ValueError(f"distance file lacks the pairs {missing[:5]}")
    return check_distance_matrix(d, k)


def classical_mds(d: np.ndarray, dim: int) -> tuple[np.ndarray, bool]:
    """Torgerson MDS of a K x K matrix; returns ``(positions K x dim, exact)``.

    ``exact`` is False when ``dim`` is too small for the positive spectrum or when the
    distances are not Euclidean (clearly negative eigenvalues).
    """
    k = d.shape[0]
    j = np.eye(k) - np.ones((k, k)) / k
    b = -0.5 * j @ (d ** 2) @ j
    vals, vecs = np.linalg.eigh(b)
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    tol = 1e-9 * max(1.0, float(np.abs(vals).max()))
    n_pos = int(np.sum(vals > tol))
    exact = n_pos <= dim and not np.any(vals < -1e-6 * max(1.0, float(np.abs(vals).max())))
    use = min(dim, n_pos)
    pos = np.zeros((k, dim))
    pos[:, :use] = vecs[:, :use] * np.sqrt(vals[:use])
    return pos, exact


def stress(x: np.ndarray, d: np.ndarray, w: np.ndarray | None = None) -> float:
    """Weighted raw stress: sum over pairs of w_ij (||x_i - x_j|| - d_ij)^2."""
    w = np.ones_like(d) if w is None else w
    dist = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
    return float(np.sum(np.triu(w * (dist - d) ** 2, 1)))


def weighted_smacof(d: np.ndarray, init: np.ndarray, weights: np.ndarray | None = None,
                    max_iter: int = 500, tol: float = 1e-9) -> np.ndarray:
    """Minimise weighted stress by Guttman transforms (de Leeuw's SMACOF), from ``init``.

    Used on the K class positions only, so the K x K pseudo-inverse is trivial.
    """
    k = d.shape[0]
    w = np.ones((k, k)) if weights is None else np.asarray(weights, dtype=np.float64).copy()
    np.fill_diagonal(w, 0.0)
    v = np.diag(w.sum(1)) - w
    v_pinv = np.linalg.pinv(v)
    x = init.astype(np.float64).copy()
    prev = stress(x, d, w)
    for _ in range(max_iter):
        dist = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(dist > 1e-12, d / dist, 0.0)
        bmat = -w * ratio
        np.fill_diagonal(bmat, 0.0)
        np.fill_diagonal(bmat, -bmat.sum(1))
        x = v_pinv @ bmat @ x
        cur = stress(x, d, w)
        if prev - cur < tol * max(prev, 1e-12):
            break
        prev = cur
    return x


def class_positions(d: np.ndarray, dim: int, counts: np.ndarray | None = None,
                    seed: int = 0) -> np.ndarray:
    """K class positions in ``dim`` dimensions whose distances match ``d`` best.

    Exact classical MDS when it fits; otherwise weighted SMACOF with pair weights
    n_i * n_j, so the classes that hold the labels are placed most faithfully.
    """
    d = check_distance_matrix(d)
    pos, exact = classical_mds(d, dim)
    if exact:
        return pos
    k = d.shape[0]
    if counts is None:
        w = np.ones((k, k))
    else:
        c = np.asarray(counts, dtype=np.float64) + 1.0
        w = np.outer(c, c)
        w /= w.mean()
    rng = np.random.default_rng(seed)
    init = pos + 1e-3 * float(d.max() or 1.0) * rng.standard_normal(pos.shape)
    return weighted_smacof(d, init, w)


def procrustes_targets(positions: np.ndarray, means: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Rotate/reflect and shift ``positions`` (K x d) onto the class means of the codes.

    Minimises sum_k n_k ||R p_k + t - mu_k||^2, which equals the item-level Procrustes
    objective up to a constant: R from the SVD of the count-weighted cross-covariance.
    Classes without labels still get a target (the rotation places them too).
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        return positions.copy()
    w = counts / counts.sum()
    p_bar = w @ positions
    m_bar = w @ np.where(present[:, None], means, 0.0)
    if present.sum() < 2:
        return positions - p_bar + m_bar
    pc = positions - p_bar
    mc = np.where(present[:, None], means - m_bar, 0.0)
    cov = (mc * counts[:, None]).T @ pc
    u, _, vt = np.linalg.svd(cov)
    r = u @ vt
    return pc @ r.T + m_bar
