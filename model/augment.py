"""Random translation of image batches: the cheapest augmentation that keeps the class.

With a few hundred labels the structure term (or a classifier's loss) fits the labeled
images exactly; shifting every batch by a few pixels makes it fit their neighbourhoods
instead. Flips and crops are left out on purpose: a flipped digit can change class.
"""

from __future__ import annotations

import torch
from torch.nn import functional


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image of an ``(n, c, h, w)`` batch by up to ``max_shift`` pixels, zero-filled.

    Anything that is not a 4-d batch (vectors) is returned unchanged.
    """
    if max_shift <= 0 or x.dim() != 4:
        return x
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator).to(x.device)
    padded = functional.pad(x, (max_shift, max_shift, max_shift, max_shift))
    rows = offsets[0][:, None] + torch.arange(h, device=x.device)
    cols = offsets[1][:, None] + torch.arange(w, device=x.device)
    b = torch.arange(n, device=x.device)[:, None, None, None]
    ch = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[b, ch, rows[:, None, :, None], cols[:, None, None, :]]
