"""Random shifts: every output image is its input translated, zero-filled, within the bound."""

from __future__ import annotations

import torch

from model.augment import random_shift


def _translate(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    out = torch.zeros_like(img)
    h, w = img.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        img[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_each_image_is_a_translation_within_the_bound() -> None:
    x = torch.rand(64, 3, 9, 7) + 0.1  # no zeros, so the zero border identifies the shift
    out = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    seen = set()
    for img, shifted in zip(x, out, strict=True):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.equal(_translate(img, dy, dx), shifted)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 10  # images get their own shifts, not one for the batch


def test_same_generator_seed_gives_same_shifts() -> None:
    x = torch.rand(16, 1, 8, 8)
    a = random_shift(x, 1, torch.Generator().manual_seed(3))
    b = random_shift(x, 1, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_no_shift_and_vectors_are_left_alone() -> None:
    x = torch.rand(8, 1, 8, 8)
    assert random_shift(x, 0) is x
    v = torch.rand(8, 64)
    assert random_shift(v, 2) is v
