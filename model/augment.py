"""Random translations, mirror images, cutouts and crops of image batches: cheap augmentations that keep the class.

With a few hundred labels the structure term (or a classifier's loss) fits the labeled
images exactly; shifting every batch by a few pixels makes it fit their neighbourhoods
instead. Left-right flips are opt-in: they keep a garment's or a photo's class but can change
a digit's or a letter's. Cutout (DeVries & Taylor 2017) blanks a square of each image, so a
code cannot rest on any one part of it. Random resized crops are the contrastive term's views
(:mod:`model.contrastive`), not a training augmentation of their own.
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


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image of an ``(n, c, h, w)`` batch left-right with probability 1/2; vectors pass unchanged."""
    if x.dim() != 4:
        return x
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square of each image of an ``(n, c, h, w)`` batch; vectors pass unchanged.

    The square's centre is uniform over the image and the square is clipped at its edges (after
    the original cutout, which fills with the mean where this fills with 0), so at least a
    ``ceil(size/2)`` x ``ceil(size/2)`` corner of the square is blanked in every image.
    """
    if size <= 0 or x.dim() != 4:
        return x
    n, _, h, w = x.shape
    top = torch.randint(0, h, (n,), generator=generator).to(x.device) - size // 2
    left = torch.randint(0, w, (n,), generator=generator).to(x.device) - size // 2
    r, c = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    rows = (r[None, :] >= top[:, None]) & (r[None, :] < top[:, None] + size)
    cols = (c[None, :] >= left[:, None]) & (c[None, :] < left[:, None] + size)
    return x.masked_fill((rows[:, :, None] & cols[:, None, :])[:, None], 0.0)


def random_resized_crop(x: torch.Tensor, generator: torch.Generator | None = None,
                        min_area: float = 0.5) -> torch.Tensor:
    """A random square crop of each image of an ``(n, c, h, w)`` batch, scaled back to ``h`` x ``w``.

    The crop's area is uniform in ``[min_area, 1]`` of the image and its position uniform
    where it fits; vectors pass unchanged.
    """
    if x.dim() != 4:
        return x
    n = len(x)
    side = torch.sqrt(min_area + (1 - min_area) * torch.rand(n, generator=generator))
    room = 1 - side
    centre = room[:, None] * (2 * torch.rand(n, 2, generator=generator) - 1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = side
    theta[:, 1, 1] = side
    theta[:, :, 2] = centre
    grid = functional.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return functional.grid_sample(x, grid, align_corners=False)


def blend_pairs(x: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixup's blends ``a * x + (1 - a) * x[other]`` of a batch with a shuffled copy of itself.

    Returns the blends, the weights ``a`` (uniform in [0, 1], one per item) and ``other``, the
    partner positions, so a caller blends its targets or labels with the same weights.
    """
    a = torch.rand(len(x), generator=generator).to(x.device)
    other = torch.randperm(len(x), generator=generator).to(x.device)
    ax = a.view(-1, *([1] * (x.dim() - 1)))
    return ax * x + (1 - ax) * x[other], a, other


def augments(max_shift: int, flip: bool, cutout: int = 0) -> bool:
    """Whether :func:`augment` with these settings changes anything (and draws random numbers)."""
    return int(max_shift) > 0 or bool(flip) or int(cutout) > 0


def augment(x: torch.Tensor, max_shift: int, flip: bool, generator: torch.Generator | None = None,
            cutout: int = 0) -> torch.Tensor:
    """The training augmentation both models share: a shift of up to ``max_shift`` pixels, a flip if asked, a cutout."""
    x = random_shift(x, max_shift, generator)
    x = random_flip(x, generator) if flip else x
    return random_cutout(x, cutout, generator)
