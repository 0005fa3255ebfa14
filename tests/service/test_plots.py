"""Pictures render from the data they are given."""

from __future__ import annotations

import numpy as np

from model.calibration import reliability
from service.plots import learning_curve_png, reliability_png

PNG = b"\x89PNG\r\n\x1a\n"


def _point(conf: np.ndarray, correct: np.ndarray) -> dict:
    return {"labeled": 100, "test_reliability": reliability(conf, correct)}


def test_reliability_diagram_from_binned_points() -> None:
    rng = np.random.default_rng(0)
    conf = rng.random(500)
    honest = [_point(conf, rng.random(500) < conf) for _ in range(3)]
    over = [_point(np.full(500, 0.95), rng.random(500) < 0.6)]  # all in one bin, the others empty
    a = reliability_png({"honest": honest, "overconfident": over}, title="t")
    b = reliability_png({"honest": honest})
    assert a.startswith(PNG) and b.startswith(PNG) and a != b


def test_learning_curve_png() -> None:
    runs = [{"model": "sae", "strategy": "margin", "seed": s,
             "curve": [{"labeled": 10, "test_error": 0.3}, {"labeled": 20, "test_error": 0.2}]} for s in (0, 1)]
    assert learning_curve_png(runs, title="x").startswith(PNG)


def test_class_names_with_dollar_signs_are_drawn_as_written() -> None:
    from service.plots import latent_png, morph_png

    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(60, 4)), np.arange(60) % 3
    names = ["$_$", "$%$", "price $5 (50%)"]  # matplotlib would read $...$ as a formula, and fail on these
    assert latent_png(z, y, names, np.arange(3), title="t", centres=rng.normal(size=(3, 4))).startswith(PNG)
    assert morph_png(rng.random((4, 1, 8, 8)), f"{names[2]} -> {names[0]}").startswith(PNG)


def test_pictures_are_drawn_without_pyplot_s_global_figures_so_threads_can_draw_at_once() -> None:
    import subprocess
    import sys

    code = ("import sys; from service.plots import learning_curve_png; "
            "learning_curve_png([{'model': 'sae', 'strategy': 'margin', "
            "'curve': [{'labeled': 10, 'test_error': 0.5}]}]); "
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_class_has_its_legend_entry_and_a_colour_of_its_own() -> None:
    from matplotlib.figure import Figure

    from service.plots import _class_colours, _plain

    ax = Figure().subplots()
    for name in ("_other", "a$b$c", "cat"):
        ax.scatter([0], [0], label=_plain(name))
    assert len(ax.get_legend_handles_labels()[1]) == 3, "a name starting with _ is not left out"
    colours = [tuple(np.round(c, 6)) for c in _class_colours(25)]
    assert len(set(colours)) == 25 and len(set(map(tuple, _class_colours(10)))) == 10
    for k in (8, 10, 20):  # none of them grey like the unlabeled codes
        assert len(set(map(tuple, _class_colours(k)))) == k
        assert all(np.ptp(np.asarray(c)[:3]) > 0.05 for c in _class_colours(k))


def test_a_nan_code_is_left_undrawn_in_either_projection() -> None:
    """Two labeled classes draw a PCA of the codes, three or more draw anchors: neither fails on a NaN code."""
    from service.plots import latent_png

    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 4))
    z[7] = np.nan
    labels = np.full(50, -1)
    labels[:2] = [0, 1]
    centres = np.stack([z[0], z[1], np.full(4, np.nan)])
    assert latent_png(z, labels, ["a", "b", "c"], centres=centres).startswith(PNG)
    labels[:6] = [0, 1, 2, 0, 1, 2]
    assert latent_png(z, labels, ["a", "b", "c"], centres=z[:3]).startswith(PNG)
    from service.plots import _project_2d

    labeled = z[[0, 7, 7]]  # three labeled codes, two of them NaN: the basis comes from every finite code
    assert len({tuple(np.round(p, 9)) for p in _project_2d(z, labeled)[np.isfinite(z).all(1)]}) == 49


def test_anchored_positions_are_computed_in_slices_as_they_were_whole() -> None:
    """Many classes and long codes must not make a points x classes x code-size table per request."""
    from service import plots

    rng = np.random.default_rng(1)
    z, centres = rng.normal(size=(3000, 4)), rng.normal(size=(400, 4))
    sliced = plots._anchored_2d(z, centres)
    k = len(centres)
    d2c = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    sigma = max(float(np.median(d2c[np.triu_indices(k, 1)])) / 3.0, 1e-6)
    logits = -((z[:, None, :] - centres[None]) ** 2).sum(-1) / (2 * sigma ** 2)
    w = np.exp(logits - logits.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    j = np.eye(k) - 1.0 / k
    vals, vecs = np.linalg.eigh(-0.5 * j @ d2c ** 2 @ j)
    plane = vecs[:, -2:] * np.sqrt(np.clip(vals[-2:], 0, None))
    angles = np.empty(k)
    angles[np.argsort(np.arctan2(plane[:, 1], plane[:, 0]))] = np.linspace(0, 2 * np.pi, k, endpoint=False)
    np.testing.assert_allclose(sliced, w @ np.stack([np.cos(angles), np.sin(angles)], 1), atol=1e-9)
    assert (8 << 20) // (8 * (k + 4)) < len(z), "more than one slice was taken"


def test_a_thinned_picture_keeps_every_marked_point() -> None:
    import unittest.mock

    from matplotlib.figure import Figure

    from service import plots

    drawn = {}
    real = Figure.subplots

    def spy(self, *a, **k):
        ax = real(self, *a, **k)
        scatter = ax.scatter

        def record(x, y, **kw):
            drawn[kw.get("label")] = {tuple(p) for p in np.column_stack([x, y])}
            return scatter(x, y, **kw)

        ax.scatter = record
        return ax

    z = np.random.default_rng(2).normal(size=(300, 2))
    marked = np.arange(0, 300, 30)
    with unittest.mock.patch.object(Figure, "subplots", spy):
        plots.latent_png(z, np.full(300, -1), ["a", "b"], marked=marked, max_points=50)
    assert len(drawn["unlabeled"]) == 50 + len(marked)
    assert drawn["pushed for labeling"] <= drawn["unlabeled"], "each ring is drawn around its point"


def test_the_title_says_how_the_codes_were_laid_out() -> None:
    import unittest.mock

    from matplotlib.axes import Axes

    from service.plots import latent_png

    z = np.random.default_rng(3).normal(size=(40, 3))
    labels = np.where(np.arange(40) < 6, np.arange(40) % 3, -1)
    titles = []
    real = Axes.set_title
    with unittest.mock.patch.object(Axes, "set_title", lambda self, t, *a, **k: (titles.append(t), real(self, t))):
        latent_png(z, labels, ["a", "b", "c"], title="v1", centres=z[:3])
        latent_png(z, labels, ["a", "b", "c"], title="v1", centres=np.vstack([z[:2], np.full(3, np.nan)]))
    assert titles == ["v1: codes among class anchors", "v1: a linear projection (PCA) of the codes"]
