"""The contrastive loss: low when each row's partner is its most similar row, at chance when all rows agree."""

from __future__ import annotations

import math

import torch

from model.contrastive import nt_xent, projection_head


def test_identical_rows_give_the_loss_of_a_uniform_guess() -> None:
    a = torch.ones(6, 4)
    assert math.isclose(float(nt_xent(a, a.clone())), math.log(2 * 6 - 1), rel_tol=1e-5)


def test_matched_pairs_cost_less_than_shuffled_ones() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(32, 8, generator=gen)
    b = a + 0.1 * torch.randn(32, 8, generator=gen)
    matched, shuffled = float(nt_xent(a, b)), float(nt_xent(a, b[torch.randperm(32, generator=gen)]))
    # At temperature 0.5 even a perfect match costs about log(1 + 62 / e^2) = 2.2
    assert matched < math.log(63) - 1 < shuffled


def test_the_loss_is_symmetric_in_its_two_views() -> None:
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(10, 3, generator=gen), torch.randn(10, 3, generator=gen)
    assert math.isclose(float(nt_xent(a, b)), float(nt_xent(b, a)), rel_tol=1e-6)


def test_the_projection_head_maps_codes_to_its_output_width() -> None:
    assert projection_head(10)(torch.zeros(5, 10)).shape == (5, 64)
