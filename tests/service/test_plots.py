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
