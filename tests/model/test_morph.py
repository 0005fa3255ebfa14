"""Class morphing: decode along the vector between two class centres."""

from __future__ import annotations

import numpy as np
import pytest

from connectors.datasets import Dataset
from model.morph import morph
from model.sae_classifier import SAEClassifier

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_shape_and_end_points(digits_model: SAEClassifier) -> None:
    images = morph(digits_model, 3, 8, steps=6)
    assert images.shape == (6, 1, 8, 8)
    assert images.dtype == np.float32
    centres = digits_model.class_centres_.astype(np.float32)
    np.testing.assert_allclose(images[0], digits_model.sae_.inverse_transform(centres[3:4])[0], atol=1e-6)
    np.testing.assert_allclose(images[-1], digits_model.sae_.inverse_transform(centres[8:9])[0], atol=1e-6)
    assert not np.allclose(images[0], images[-1])


def test_path_is_the_straight_line_between_centres(digits_model: SAEClassifier) -> None:
    images = morph(digits_model, 0, 1, steps=3)
    c = digits_model.class_centres_
    middle = digits_model.sae_.inverse_transform(((c[0] + c[1]) / 2)[None].astype(np.float32))[0]
    np.testing.assert_allclose(images[1], middle, atol=1e-6)


def test_from_an_item_adds_the_centre_vector(digits_model: SAEClassifier, digits: Dataset) -> None:
    item = digits.x_test[0]
    images = morph(digits_model, 2, 5, steps=4, start=item)
    assert images.shape == (4, 1, 8, 8)
    z = digits_model.transform(item[None])
    np.testing.assert_allclose(images[0], digits_model.sae_.inverse_transform(z)[0], atol=1e-6)
    c = digits_model.class_centres_
    end = (z[0] + c[5] - c[2])[None].astype(np.float32)
    np.testing.assert_allclose(images[-1], digits_model.sae_.inverse_transform(end)[0], atol=1e-5)


@pytest.mark.parametrize(("source", "target"), [(9, 0), (0, 9), (0, 10), (-1, 0)])
def test_class_without_labels_or_out_of_range(digits_model: SAEClassifier, source: int, target: int) -> None:
    bad = source if source != 0 else target
    with pytest.raises(ValueError, match=f"class {bad} has no labeled items"):
        morph(digits_model, source, target)


@pytest.mark.parametrize("steps", [1, 0, -4])
def test_steps_below_two(digits_model: SAEClassifier, steps: int) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        morph(digits_model, 0, 1, steps=steps)


def test_an_ensemble_morphs_in_its_first_member_s_space(digits: Dataset, digits_labels: np.ndarray) -> None:
    model = SAEClassifier(class_names=digits.class_names, epochs=2, members=2, device="cpu",
                          random_state=0).fit(digits.x_train[:300], digits_labels[:300])
    assert model.class_centres_.shape[1] == 2 * model.sae_.latent_dim
    images = morph(model, 0, 1, steps=3, start=digits.x_test[0])
    assert images.shape == (3, 1, 8, 8)
    np.testing.assert_allclose(images[0], model.sae_.inverse_transform(model.sae_.transform(digits.x_test[:1]))[0],
                               atol=1e-6)


def test_an_item_is_coded_as_the_centres_were_under_test_time_flips(digits: Dataset, digits_labels: np.ndarray) -> None:
    """Flip-averaged centres with an unaveraged start would add the centre vector to a code from another space."""
    model = SAEClassifier(class_names=digits.class_names, epochs=2, test_time_flip=True, device="cpu",
                          random_state=0).fit(digits.x_train[:300], digits_labels[:300])
    item = digits.x_test[:1]
    flipped = model.transform(item)
    assert not np.allclose(flipped, model.sae_.transform(item), atol=1e-3), "the mirror image codes otherwise"
    images = morph(model, 0, 1, steps=3, start=item[0])
    np.testing.assert_allclose(images[0], model.sae_.inverse_transform(flipped)[0], atol=1e-6)
