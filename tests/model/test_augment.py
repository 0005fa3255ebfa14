"""Random shifts, flips, cutouts and crops: each output image is its input moved, mirrored, blanked or zoomed."""

from __future__ import annotations

import torch

from model.augment import augment, augments, blend_pairs, random_cutout, random_flip, random_resized_crop, random_shift


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


def test_flip_mirrors_about_half_the_images_and_leaves_vectors_alone() -> None:
    x = torch.rand(200, 1, 5, 6)
    out = random_flip(x, torch.Generator().manual_seed(0))
    same = [torch.equal(a, b) for a, b in zip(x, out, strict=True)]
    mirrored = [torch.equal(a.flip(-1), b) for a, b in zip(x, out, strict=True)]
    assert all(s != m for s, m in zip(same, mirrored, strict=True)), "each image is itself or its mirror image"
    assert 70 < sum(mirrored) < 130
    v = torch.rand(10, 4)
    assert torch.equal(random_flip(v), v)


def test_augment_shifts_then_flips_only_when_asked() -> None:
    x = torch.rand(50, 1, 8, 8) + 0.1
    assert torch.equal(augment(x, 0, False), x)
    flipped = augment(x, 0, True, torch.Generator().manual_seed(1))
    assert not torch.equal(flipped, x) and all(torch.equal(a, b) or torch.equal(a.flip(-1), b)
                                               for a, b in zip(x, flipped, strict=True))
    moved = augment(x, 1, False, torch.Generator().manual_seed(1))
    assert torch.equal(moved, random_shift(x, 1, torch.Generator().manual_seed(1)))


def test_cutout_blanks_one_clipped_square_per_image_and_leaves_the_rest() -> None:
    x = torch.rand(300, 2, 10, 9) + 0.1  # no zeros, so the zeros are the cutout
    out = random_cutout(x, 4, torch.Generator().manual_seed(0))
    corners, full = set(), 0
    for img, cut in zip(x, out, strict=True):
        blank = cut == 0
        assert torch.equal(blank[0], blank[1]), "one square for all channels"
        assert torch.equal(cut[~blank], img[~blank])
        rows, cols = torch.nonzero(blank[0].any(1)).squeeze(1), torch.nonzero(blank[0].any(0)).squeeze(1)
        assert int(blank[0].sum()) == len(rows) * len(cols), "the blank pixels form a rectangle"
        assert 2 <= len(rows) <= 4 and 2 <= len(cols) <= 4, "a 4x4 square, clipped to no less than half a side"
        for line in (rows, cols):
            assert line.tolist() == list(range(line[0], line[-1] + 1)), "no gaps"
        corners.add((int(rows[0]), int(cols[0])))
        full += len(rows) == len(cols) == 4
    assert len(corners) > 40, "every image gets its own square"
    assert full > 50, "away from the edges the square has its full side"
    assert any(r == 0 for r, _ in corners) and any(c + 4 > 9 for _, c in corners), "squares reach the edges"


def test_cutout_of_nothing_and_of_vectors_changes_nothing() -> None:
    x, v = torch.rand(8, 1, 8, 8), torch.rand(8, 64)
    gen = torch.Generator().manual_seed(5)
    assert random_cutout(x, 0, gen) is x and random_cutout(v, 3, gen) is v
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(5).get_state()), \
        "no cutout draws no numbers, so seeded runs without it reproduce"
    assert not augments(0, False, 0) and all(augments(*on) for on in ((1, False, 0), (0, True, 0), (0, False, 3)))


def test_augment_cuts_out_after_shifting_and_flipping() -> None:
    x = torch.rand(50, 1, 8, 8) + 0.1
    out = augment(x, 1, True, torch.Generator().manual_seed(2), cutout=3)
    gen = torch.Generator().manual_seed(2)
    moved = random_flip(random_shift(x, 1, gen), gen)
    assert torch.equal(out, random_cutout(moved, 3, gen))
    assert bool((out == 0).flatten(1).any(1).all()), "every image has its blank square"


def test_blend_pairs_mixes_each_item_with_one_partner_by_its_weight() -> None:
    for x in (torch.rand(40, 1, 6, 6), torch.rand(40, 5)):
        blend, a, other = blend_pairs(x, torch.Generator().manual_seed(2))
        assert sorted(other.tolist()) == list(range(40)), "the partners are a shuffle of the batch"
        assert bool(((a >= 0) & (a <= 1)).all()) and a.std() > 0.1
        ax = a.view(-1, *([1] * (x.dim() - 1)))
        torch.testing.assert_close(blend, ax * x + (1 - ax) * x[other])


def test_a_full_area_crop_is_the_image_itself_and_vectors_pass() -> None:
    x = torch.rand(8, 1, 12, 12)
    torch.testing.assert_close(random_resized_crop(x, torch.Generator().manual_seed(0), min_area=1.0), x)
    v = torch.rand(8, 5)
    assert random_resized_crop(v, torch.Generator().manual_seed(0)) is v


def test_a_crop_zooms_in_by_its_area_and_keeps_the_centre_in_view() -> None:
    # A bright 4x4 block at the centre: every allowed crop contains the centre, so the block
    # stays in view, enlarged by 1/area (between 1 and 1/min_area times its 16 pixels).
    x = torch.zeros(200, 1, 28, 28)
    x[..., 12:16, 12:16] = 1.0
    out = random_resized_crop(x, torch.Generator().manual_seed(0), min_area=0.5)
    mass = out.sum(dim=(1, 2, 3))
    assert out.shape == x.shape
    assert float(mass.min()) > 16 * 0.9 and float(mass.max()) < 16 / 0.5 * 1.1
    assert float(mass.std()) > 1.0, "each image gets its own crop"
    assert float(out.amax(dim=(1, 2, 3)).min()) > 0.9, "the block is in view in every crop"
