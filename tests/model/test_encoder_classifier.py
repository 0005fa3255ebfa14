"""The classifier baseline: it learns from labeled items only, warm-starts, and augments on request."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import model.encoder_classifier as module
from connectors.datasets import Dataset
from model.encoder_classifier import EncoderClassifier

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_learns_from_labeled_items_only(digits: Dataset, digits_labels: np.ndarray) -> None:
    clf = EncoderClassifier(n_classes=10, min_steps=150, device="cpu").fit(digits.x_train, digits_labels)
    scores = clf.decision_function(digits.x_test)
    assert scores.shape == (len(digits.x_test), 10)
    pred = clf.predict(digits.x_test)
    seen = digits.y_test != 9  # class 9 has no labels
    assert np.mean(pred[seen] == digits.y_test[seen]) > 0.7
    np.testing.assert_allclose(clf.predict_proba(digits.x_test[:5]).sum(1), 1.0, rtol=1e-5)
    # unlabeled items are ignored: replacing their images with noise cannot change the model
    x = digits.x_train.copy()
    unlabeled = digits_labels < 0
    x[unlabeled] = np.random.default_rng(0).random(x[unlabeled].shape, dtype=np.float32)
    again = EncoderClassifier(n_classes=10, min_steps=150, device="cpu").fit(x, digits_labels)
    np.testing.assert_array_equal(again.decision_function(digits.x_test), scores)


def test_warm_start_keeps_the_network(digits: Dataset, digits_labels: np.ndarray) -> None:
    clf = EncoderClassifier(n_classes=10, min_steps=20, device="cpu").fit(digits.x_train, digits_labels)
    net = clf.net_
    clf.set_params(warm_start=True).fit(digits.x_train, digits_labels)
    assert clf.net_ is net
    clf.set_params(warm_start=False).fit(digits.x_train, digits_labels)
    assert clf.net_ is not net


@pytest.mark.parametrize("augmentation", [{"max_shift": 1}, {"flip": True}, {"cutout": 3}])
def test_augmentation_changes_training_reproducibly(digits: Dataset, digits_labels: np.ndarray,
                                                    augmentation: dict) -> None:
    def scores(params: dict) -> np.ndarray:
        return (EncoderClassifier(n_classes=10, min_steps=30, device="cpu", **params)
                .fit(digits.x_train, digits_labels).decision_function(digits.x_test[:50]))

    np.testing.assert_array_equal(scores(augmentation), scores(augmentation))
    assert not np.allclose(scores(augmentation), scores({}))


def test_every_training_batch_goes_through_the_shared_augmentation(monkeypatch, digits: Dataset,
                                                                     digits_labels: np.ndarray) -> None:
    seen, augment = [], module.augment

    def spy(x, max_shift, flip, generator=None, cutout=0):
        seen.append((max_shift, flip, cutout, generator is not None))
        return augment(x, max_shift, flip, generator, cutout)

    monkeypatch.setattr(module, "augment", spy)
    EncoderClassifier(n_classes=10, epochs=1, min_steps=7, device="cpu", flip=True,
                      cutout=2).fit(digits.x_train, digits_labels)
    assert seen == [(0, True, 2, True)] * 7


def test_needs_two_labeled_classes(digits: Dataset) -> None:
    y = np.full(len(digits.y_train), -1)
    y[:5] = 3
    with pytest.raises(ValueError, match="at least two classes"):
        EncoderClassifier(device="cpu").fit(digits.x_train, y)


def test_a_labeled_item_holding_nan_is_refused_by_name(digits: Dataset, digits_labels: np.ndarray) -> None:
    x = digits.x_train.astype(np.float32)
    first = int(np.flatnonzero(digits_labels >= 0)[3])
    x[first, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=rf"X\[{first}\] holds NaN or inf"):
        EncoderClassifier(epochs=1, device="cpu").fit(x, digits_labels)


def test_test_time_flip_makes_an_image_and_its_mirror_score_alike(digits: Dataset, digits_labels: np.ndarray) -> None:
    clf = EncoderClassifier(n_classes=10, min_steps=20, device="cpu").fit(digits.x_train, digits_labels)
    x, mirror = digits.x_test[:50], digits.x_test[:50, ..., ::-1]
    plain = clf.decision_function(x)
    assert not np.allclose(plain, clf.decision_function(mirror)), "digits are not symmetric"
    clf.set_params(test_time_flip=True)
    np.testing.assert_allclose(clf.decision_function(x), (plain + clf.set_params(test_time_flip=False)
                                                          .decision_function(mirror)) / 2, rtol=1e-5, atol=1e-6)
    clf.set_params(test_time_flip=True)
    np.testing.assert_allclose(clf.decision_function(x), clf.decision_function(mirror), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(clf.transform(x), clf.transform(mirror), rtol=1e-5, atol=1e-6)


def test_mixup_makes_blends_of_two_classes_less_certain(digits: Dataset, digits_labels: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(digits.x_test), (2, 300))
    keep = digits.y_test[i] != digits.y_test[j]
    blends = (digits.x_test[i[keep]] + digits.x_test[j[keep]]) / 2

    def certainty(mixup: float) -> float:
        clf = EncoderClassifier(n_classes=10, min_steps=200, device="cpu", mixup=mixup)
        return float(clf.fit(digits.x_train, digits_labels).predict_proba(blends).max(axis=1).mean())

    plain, mixed = certainty(0.0), certainty(1.0)
    assert mixed < plain - 0.05, (plain, mixed)


def test_warm_start_after_more_classes_or_another_input_shape_rebuilds(digits: Dataset) -> None:
    x, y = digits.x_train[:150], digits.y_train[:150]
    two = np.where(y < 2, y, -1)
    clf = EncoderClassifier(min_steps=5, device="cpu", network="mlp", warm_start=True).fit(x, two)
    net = clf.net_
    clf.fit(x, two)
    assert clf.net_ is net
    three = np.where(y < 3, y, -1)
    clf.fit(x, three)
    assert clf.net_ is not net
    assert clf.predict_proba(x[:4]).shape == (4, 3)
    clf.fit(x.reshape(len(x), -1), three)
    assert clf.decision_function(x[:4].reshape(4, -1)).shape == (4, 3)
    assert clf.n_features_in_ == 64


def test_only_labeled_items_are_converted_to_float(digits: Dataset, monkeypatch) -> None:
    x = np.round(digits.x_train[:150] * 255).astype(np.uint8)
    y = np.where(digits.y_train[:150] < 2, digits.y_train[:150], -1)
    seen, to_float = [], module.scaled_items
    monkeypatch.setattr(module, "scaled_items", lambda a, scaled: seen.append(len(a)) or to_float(a, scaled))
    EncoderClassifier(min_steps=2, device="cpu", network="mlp").fit(x, y)
    assert seen == [int((y >= 0).sum())]


def test_not_fitted() -> None:
    clf = EncoderClassifier()
    for call in (clf.predict, clf.predict_proba, clf.decision_function, clf.transform):
        with pytest.raises(NotFittedError):
            call(np.zeros((1, 64), np.float32))


def test_raw_features_are_scaled_as_the_sae_scales_them(digits: Dataset) -> None:
    """A baseline fed raw features learns the same whatever their units, as the SAE does."""
    x = digits.x_train[:300].reshape(300, -1)
    y = np.where(np.arange(300) < 120, digits.y_train[:300], -1)
    params = dict(min_steps=60, device="cpu", network="mlp", random_state=0)
    assert EncoderClassifier(**params).fit(x, y).input_range_ is None, "pixels in [0, 1] stay as they are"
    wide = EncoderClassifier(**params).fit(x * 1000.0 - 300.0, y)
    narrow = EncoderClassifier(**params).fit(x * 2.0 + 5.0, y)
    assert wide.input_range_ is not None
    np.testing.assert_allclose(wide.decision_function(x * 1000.0 - 300.0), narrow.decision_function(x * 2.0 + 5.0),
                               rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(wide.input_range_[0], x.min(axis=0) * 1000.0 - 300.0, rtol=1e-5, atol=1e-3,
                               err_msg="the whole pool's range, unlabeled items too, not the first labels'")
    with pytest.raises(ValueError, match="looks like"):
        EncoderClassifier(**params).fit(np.repeat(digits.x_train[:300], 3, axis=1).transpose(0, 2, 3, 1), y)


def test_integer_images_are_predicted_in_the_units_they_were_trained_in(digits: Dataset) -> None:
    pixels = np.round(digits.x_train[:300] * 255).astype(np.uint8)
    y = np.where(np.arange(300) < 120, digits.y_train[:300], -1)
    params = dict(min_steps=30, device="cpu", network="mlp", random_state=0)
    as_uint8 = EncoderClassifier(**params).fit(pixels, y)
    np.testing.assert_array_equal(as_uint8.decision_function(pixels.astype(np.int64)),
                                  as_uint8.decision_function(pixels))
    as_int = EncoderClassifier(**params).fit(pixels.astype(np.int64), y)
    np.testing.assert_allclose(as_int.decision_function(pixels.astype(np.int64)), as_uint8.decision_function(pixels),
                               rtol=1e-4, atol=1e-4)


def test_a_non_finite_unlabeled_item_is_refused_not_spread_into_the_range(digits: Dataset) -> None:
    x = digits.x_train[:300].reshape(300, -1) * 20.0
    x[250, 3] = np.nan
    y = np.where(np.arange(300) < 120, digits.y_train[:300], -1)
    with pytest.raises(ValueError, match=r"X\[250\]"):
        EncoderClassifier(min_steps=2, device="cpu", network="mlp").fit(x, y)
