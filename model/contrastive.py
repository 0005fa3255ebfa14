"""A contrastive term for the codes: each item's two augmented views are told apart from every other item's.

Reconstruction rewards codes that keep pixels; with a hundred labels the structure term fixes
only a hundred points, so where the unlabeled items of a class land is left to pixel
similarity. Instance discrimination over random crops (SimCLR, Chen et al. 2020) rewards codes
that keep what survives a crop and separates items, which is closer to what separates
classes. As in SimCLR the loss is taken on a small projection of the code, not on the code
itself, so the code stays free to sit at its class position.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

TEMPERATURE = 0.5  # the temperature SimCLR used on CIFAR-10's small images
PROJECTION = (128, 64)  # hidden and output width of the projection head


def projection_head(latent_dim: int) -> nn.Module:
    """The small MLP the contrastive loss reads the codes through (discarded after training)."""
    hidden, out = PROJECTION
    return nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, out))


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """Normalised-temperature cross entropy: row i of ``a`` must pick row i of ``b`` among all 2n - 1 other rows."""
    n = len(a)
    z = functional.normalize(torch.cat([a, b]).float(), dim=1)
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = (torch.arange(2 * n, device=z.device) + n) % (2 * n)
    return functional.cross_entropy(sim, partner)
