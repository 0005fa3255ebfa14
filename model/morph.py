"""Class morphing: decode along the vector between two class centres in latent space."""

from __future__ import annotations

import numpy as np

from model.sae_classifier import SAEClassifier


def morph(model: SAEClassifier, source: int, target: int, steps: int = 8,
          start: np.ndarray | None = None) -> np.ndarray:
    """Decode ``steps`` points from class ``source`` towards class ``target``.

    Without ``start`` the path runs from one class centre to the other; with an item
    ``start`` the same centre-to-centre vector is added to that item's code, which keeps
    its other factors (the paper's "pose stays fixed").
    """
    if steps < 2:
        raise ValueError("steps must be at least 2")
    latent = int(model.sae_.latent_dim)  # an ensemble's codes sit side by side: the first member's decoder draws
    centres = model.class_centres_[:, :latent]
    for c in (source, target):
        if not 0 <= c < len(centres) or np.isnan(centres[c]).any():
            raise ValueError(f"class {c} has no labeled items, so it has no centre to morph from or to")
    direction = centres[target] - centres[source]
    # the item's own code as the centres were taken: flip-averaged under test_time_flip, the first member's
    origin = centres[source] if start is None else model.transform(start[None])[0, :latent]
    t = np.linspace(0.0, 1.0, steps)[:, None]
    return model.sae_.inverse_transform((origin[None] + t * direction[None]).astype(np.float32))
