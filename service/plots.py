"""Pictures: learning curves and the latent space. Rendered off-screen to PNG bytes.

Each picture is its own ``Figure``, never pyplot's: routes run in a thread pool, and pyplot's global
registry of figures is not safe across threads.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def learning_curve_png(runs: Sequence[dict], title: str = "") -> bytes:
    """Test error vs labels: mean over seeds with min-max band, one line per model/strategy."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in runs:
        groups[(r["model"], r["strategy"])].append(r)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for (model, strategy), rs in sorted(groups.items()):
        n = min(len(r["curve"]) for r in rs)
        labels = np.array([p["labeled"] for p in rs[0]["curve"][:n]])
        err = np.array([[p["test_error"] for p in r["curve"][:n]] for r in rs]) * 100
        line, = ax.plot(labels, err.mean(0), marker="o", ms=3, label=f"{model}+{strategy} (n={len(rs)})")
        if len(rs) > 1:
            ax.fill_between(labels, err.min(0), err.max(0), color=line.get_color(), alpha=0.15)
    return _finish(fig, ax, "labeled items", "test error (%)", title)


def _finish(fig: Figure, ax: Axes, xlabel: str, ylabel: str, title: str) -> bytes:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _png(fig)


def reliability_png(curves: dict[str, list[dict]], title: str = "") -> bytes:
    """Reliability diagram: accuracy against confidence per bin, bins summed over the given seeds' points.

    ``curves`` maps a line label to curve points carrying ``test_reliability`` (count,
    confidence and accuracy per bin); the diagonal is a perfectly honest confidence.
    """
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="calibrated")
    for label, points in curves.items():
        bins = [p["test_reliability"] for p in points]
        count = np.sum([b["count"] for b in bins], axis=0)

        def total(key: str, bins: list[dict] = bins) -> np.ndarray:
            return np.sum([np.nan_to_num(np.asarray(b[key], float)) * np.asarray(b["count"]) for b in bins], axis=0)

        seen = count > 0
        ax.plot(total("confidence")[seen] / count[seen], total("accuracy")[seen] / count[seen], marker="o", ms=4,
                label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    return _finish(fig, ax, "confidence (bin mean)", "accuracy", title)


def _project_2d(z: np.ndarray, basis_from: np.ndarray | None = None) -> np.ndarray:
    """PCA to 2-D (fitted on ``basis_from`` when given): linear, so the class structure stays readable."""
    finite = None if basis_from is None else basis_from[np.isfinite(basis_from).all(1)]
    ref = finite if finite is not None and len(finite) >= 2 else z[np.isfinite(z).all(1)]  # a NaN code: undrawn
    if len(ref) < 2:
        xy = np.zeros((len(z), 2))
        xy[~np.isfinite(z).all(1)] = np.nan
        return xy
    mean = ref.mean(0)
    _, _, vt = np.linalg.svd(ref - mean, full_matrices=False)
    basis = vt[:2].T if vt.shape[0] >= 2 else np.eye(z.shape[1], 2)
    return (z - mean) @ basis


def _anchored_2d(z: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Place each code among class anchors on a circle, weighted by closeness to each class centre.

    A linear 2-D projection of a 10-class simplex piles most classes on top of each other;
    here an item near a centre sits at that class's anchor and an uncertain item sits between
    the anchors of the classes it is torn between. O(N * K).
    """
    k = len(centres)
    d2c = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    sigma = max(float(np.median(d2c[np.triu_indices(k, 1)])) / 3.0, 1e-6)
    j = np.eye(k) - 1.0 / k
    vals, vecs = np.linalg.eigh(-0.5 * j @ d2c ** 2 @ j)
    plane = vecs[:, -2:] * np.sqrt(np.clip(vals[-2:], 0, None))
    order = np.argsort(np.arctan2(plane[:, 1], plane[:, 0]))
    angles = np.empty(k)
    angles[order] = np.linspace(0, 2 * np.pi, k, endpoint=False)
    anchors = np.stack([np.cos(angles), np.sin(angles)], 1)
    out = np.empty((len(z), 2))
    c2 = (centres ** 2).sum(1)
    step = max(1, (8 << 20) // (8 * (k + z.shape[1])))  # a few MB at a time, whatever the classes and the code size
    for s in range(0, len(z), step):
        part = np.asarray(z[s:s + step], np.float64)
        dist2 = (part ** 2).sum(1)[:, None] - 2 * part @ centres.T + c2[None]
        logits = -dist2 / (2 * sigma ** 2)
        w = np.exp(logits - logits.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
        out[s:s + step] = w @ anchors
    return out


def latent_png(z: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
               marked: np.ndarray | None = None, title: str = "", max_points: int = 20000,
               seed: int = 0, centres: np.ndarray | None = None) -> bytes:
    """Labeled codes by class colour, unlabeled grey (subsampled), marked items as black rings.

    With class ``centres`` (K x d, NaN rows for classes without labels) the codes are drawn
    among class anchors (:func:`_anchored_2d`); without, as a PCA of the codes.
    """
    labels = np.asarray(labels)
    lab = labels >= 0
    valid = None if centres is None else ~np.isnan(centres).any(1)
    if valid is not None and valid.sum() >= 3:
        xy, how = _anchored_2d(z, centres[valid]), "codes among class anchors"
    else:
        xy, how = _project_2d(z, z[lab] if lab.sum() >= 3 else None), "a linear projection (PCA) of the codes"
    rng = np.random.default_rng(seed)
    unl = np.flatnonzero(~lab)
    if len(unl) > max_points:  # the marked items stay: each ring keeps its point
        kept = np.isin(unl, marked) if marked is not None else np.zeros(len(unl), bool)
        rest = unl[~kept]
        unl = np.sort(np.concatenate([unl[kept], rng.choice(rest, min(len(rest), max_points), replace=False)]))
    fig = Figure(figsize=(6.5, 6))
    ax = fig.subplots()
    ax.scatter(xy[unl, 0], xy[unl, 1], s=3, c="#bbbbbb", label="unlabeled", rasterized=True)
    colours = _class_colours(len(class_names))
    for k, name in enumerate(class_names):
        sel = np.flatnonzero(labels == k)
        if len(sel):
            ax.scatter(xy[sel, 0], xy[sel, 1], s=10, color=colours[k], label=_plain(str(name)))
    if marked is not None and len(marked):
        ax.scatter(xy[marked, 0], xy[marked, 1], s=40, facecolors="none", edgecolors="black",
                   linewidths=1.0, label="pushed for labeling")
    ax.legend(fontsize=7, markerscale=1.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title}: {how}" if title else how)
    return _png(fig)


def morph_png(images: np.ndarray, title: str = "") -> bytes:
    """A strip of decoded images (N, C, H, W) in [0, 1]."""
    n = len(images)
    fig = Figure(figsize=(1.2 * n, 1.5))
    axes = fig.subplots(1, n)
    for ax, img in zip(np.atleast_1d(axes), images, strict=True):
        ax.imshow(img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0)),
                  cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=1)
        ax.axis("off")
    if title:
        fig.suptitle(_plain(title), fontsize=9)
    return _png(fig)


def _plain(text: str) -> str:
    """A team's class name as written: matplotlib reads text between two ``$`` as a formula (and can fail on it),
    and leaves a label starting with ``_`` out of the legend."""
    text = text.replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


def _class_colours(k: int) -> list:
    """One colour per class: the qualitative maps up to 20 classes, then evenly spread hues (no two alike).

    Their greys are swapped for colours of ``tab20b``: the unlabeled codes are the grey ones.
    """
    if k <= 20:
        cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20"]
        spare = iter(matplotlib.colormaps["tab20b"](i) for i in range(0, 20, 4))
        return [c if np.ptp(c[:3]) > 0.05 else next(spare) for c in (cmap(i) for i in range(k))]
    return list(matplotlib.colormaps["turbo"](np.linspace(0.0, 1.0, k)))
