"""The Structuring Autoencoder: its effect on a real (small) data set, determinism, warm start, errors."""

from __future__ import annotations

import itertools
import logging
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

import model.sae
from connectors.datasets import Dataset
from model.augment import random_resized_crop, random_shift
from model.device import resolve_device
from model.networks import build_networks
from model.sae import StructuringAutoencoder, as_float_array
from model.sae_classifier import SAEClassifier
from model.targets import procrustes_targets

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def random_labels(y_true: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.full(len(y_true), -1, dtype=np.int64)
    chosen = rng.choice(len(y_true), n, replace=False)
    y[chosen] = y_true[chosen]
    return y


@pytest.fixture(scope="module")
def small(digits: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The first 400 training digits, 60 of them labeled."""
    x = digits.x_train[:400]
    return x, random_labels(digits.y_train[:400], 60, seed=1)


@pytest.mark.slow
def test_structure_beats_plain_autoencoder_with_few_labels(digits: Dataset) -> None:
    # The paper's claim on a small scale: 100 labels, SAE (lam 0.9) + SVM vs AE (lam 0) + SVM.
    # Over seeds 0-3 at 40 epochs the gap was 5.8 to 10 points (SAE 7.8-11 %, AE 16-18 %).
    y = random_labels(digits.y_train, 100, seed=0)
    errors = {}
    for lam in (0.9, 0.0):
        model = SAEClassifier(class_names=digits.class_names, lam=lam, epochs=40, device="cpu",
                              random_state=0).fit(digits.x_train, y)
        errors[lam] = float(np.mean(model.predict(digits.x_test) != digits.y_test))
    assert errors[0.9] < 0.15
    assert errors[0.9] + 0.03 < errors[0.0], errors


def test_same_seed_gives_identical_codes_on_cpu(small, digits: Dataset) -> None:
    x, y = small
    codes = [StructuringAutoencoder(epochs=3, device="cpu", n_classes=10, random_state=seed).fit(x, y)
             .transform(digits.x_test) for seed in (5, 5, 6)]
    np.testing.assert_array_equal(codes[0], codes[1])
    assert not np.allclose(codes[0], codes[2])


@pytest.mark.parametrize("augmentation", [{"max_shift": 1}, {"flip": True}, {"cutout": 3}, {"contrastive": 1.0}])
def test_augmented_training_is_reproducible_and_differs(small, digits: Dataset, augmentation: dict) -> None:
    x, y = small
    codes = [StructuringAutoencoder(epochs=2, device="cpu", n_classes=10, random_state=0, **params)
             .fit(x, y).transform(digits.x_test) for params in (augmentation, augmentation, {})]
    np.testing.assert_array_equal(codes[0], codes[1])
    assert not np.allclose(codes[0], codes[2])


def test_consistency_makes_codes_agree_under_shifts(small, digits: Dataset) -> None:
    def disagreement(model: StructuringAutoencoder) -> float:
        # Codes of the same test digits under two random shifts, against the codes' own spread.
        x = torch.as_tensor(as_float_array(digits.x_test))
        gen = torch.Generator().manual_seed(0)
        a = model.transform(random_shift(x, 1, gen).numpy())
        b = model.transform(random_shift(x, 1, gen).numpy())
        return float(np.mean((a - b) ** 2) / np.mean(a.var(axis=0)))

    x, y = small
    ratios = [disagreement(StructuringAutoencoder(epochs=8, device="cpu", n_classes=10, max_shift=1,
                                                  consistency=w, random_state=0).fit(x, y)) for w in (0.0, 5.0)]
    assert ratios[1] < 0.8 * ratios[0], ratios


def test_mean_teacher_encodes_the_second_view_with_the_average_and_no_gradient(small) -> None:
    x, y = small  # 400 items: 4 batches of 100 an epoch

    def training_forwards(mean_teacher: bool) -> tuple[int, int, int]:
        """Encoder calls in training mode over one epoch: the student's with and without gradient, others'."""
        calls: list[tuple[nn.Module, bool]] = []
        encoder = build_networks((1, 8, 8), 10, "mlp")[0]
        encoder.register_forward_hook(  # copied with the encoder: the teacher's calls come too
            lambda module, *args: calls.append((module, torch.is_grad_enabled())) if module.training else None)
        sae = StructuringAutoencoder(encoder=encoder, decoder=build_networks((1, 8, 8), 10, "mlp")[1], epochs=1,
                                     batch_size=100, max_shift=1, consistency=1.0, ema_decay=0.9,
                                     mean_teacher=mean_teacher, device="cpu", n_classes=10).fit(x, y)
        student = [grad for module, grad in calls if module is sae.encoder_]
        others = [grad for module, grad in calls if module is not sae.encoder_]
        assert not any(others), "the teacher has no gradient"
        return student.count(True), student.count(False), len(others)

    assert training_forwards(mean_teacher=False) == (8, 0, 0), "Pi-model: both views through the student"
    assert training_forwards(mean_teacher=True) == (4, 0, 4), "one view through the student, one through the teacher"


def test_contrastive_codes_find_an_image_from_its_crop(small, digits: Dataset) -> None:
    # SimCLR's own task on held-out digits: is an image's code nearest to its crop's code,
    # among the crops of all test digits? (15 epochs: 22 % of them without the term, 41 % with it)
    x, y = small
    crops = random_resized_crop(torch.as_tensor(as_float_array(digits.x_test)), torch.Generator().manual_seed(0))

    def found(model: StructuringAutoencoder) -> float:
        a, b = model.transform(digits.x_test), model.transform(crops.numpy())
        nearest = ((a[:, None] - b[None]) ** 2).sum(-1).argmin(1)
        return float(np.mean(nearest == np.arange(len(a))))

    rates = [found(StructuringAutoencoder(epochs=15, device="cpu", n_classes=10, max_shift=1, contrastive=w,
                                          random_state=0).fit(x, y)) for w in (0.0, 1.0)]
    assert rates[1] > 1.4 * rates[0], rates


def test_contrastive_encodes_a_crop_of_each_pool_item_with_gradient_and_keeps_its_head_warm(small) -> None:
    x, y = small  # 400 items: 4 batches of 100 an epoch, each with 10 labeled extras
    calls: list[tuple[int, bool]] = []
    encoder, decoder = build_networks((1, 8, 8), 10, "mlp")
    encoder.register_forward_hook(
        lambda module, args, out: calls.append((len(out), torch.is_grad_enabled())) if module.training else None)
    sae = StructuringAutoencoder(encoder=encoder, decoder=decoder, epochs=1, batch_size=100, labeled_per_batch=10,
                                 contrastive=1.0, device="cpu", n_classes=10)
    sae.fit(x, y)
    assert calls == [(110, True), (100, True)] * 4, "the batch with its labeled extras, then the pool items' crops"
    head = sae.head_
    sae.set_params(warm_start=True).fit(x, y)
    assert sae.head_ is head, "a warm retrain goes on training the same head"
    sae.set_params(warm_start=False).fit(x, y)
    assert sae.head_ is not head


def test_contrastive_leaves_vectors_alone(small, digits: Dataset) -> None:
    x, y = small
    flat = x.reshape(len(x), -1)
    models = [StructuringAutoencoder(epochs=2, device="cpu", n_classes=10, contrastive=w, random_state=0).fit(flat, y)
              for w in (0.0, 1.0)]
    np.testing.assert_array_equal(*(m.transform(flat) for m in models))
    assert not hasattr(models[1], "head_")


def test_consistency_without_shifts_changes_nothing(small, digits: Dataset) -> None:
    x, y = small
    codes = [StructuringAutoencoder(epochs=2, device="cpu", n_classes=10, consistency=w, random_state=0)
             .fit(x, y).transform(digits.x_test) for w in (0.0, 1.0)]
    np.testing.assert_array_equal(codes[0], codes[1])


def test_warm_start_continues_training(small) -> None:
    x, y = small
    sae = StructuringAutoencoder(epochs=4, device="cpu", n_classes=10, random_state=0).fit(x, y)
    encoder = sae.encoder_
    codes = sae.transform(x)
    first = sae.history_[0]
    # with lr 0 a warm fit must leave the trained weights exactly as they were
    sae.set_params(warm_start=True, epochs=2, lr=0.0).fit(x, y)
    assert sae.encoder_ is encoder
    assert len(sae.history_) == 6
    assert sae.history_[0] == first
    np.testing.assert_array_equal(sae.transform(x), codes)
    assert sae.history_[-1]["reconstruction"] < first["reconstruction"]  # picks up where it stopped
    # a real warm fit keeps improving the same networks
    sae.set_params(epochs=3, lr=1e-3).fit(x, y)
    assert sae.encoder_ is encoder
    assert len(sae.history_) == 9
    assert not np.array_equal(sae.transform(x), codes)
    # without warm start the networks are built afresh and the history restarts
    sae.set_params(warm_start=False, epochs=1, lr=0.0).fit(x, y)
    assert sae.encoder_ is not encoder
    assert len(sae.history_) == 1
    assert not np.allclose(sae.transform(x), codes)


def test_warm_starts_keep_only_the_newest_epoch_records(small, monkeypatch) -> None:
    """A service saves the history in every version: over weeks of warm retrains it must not grow without end."""
    monkeypatch.setattr(model.sae, "HISTORY_LIMIT", 4)
    x, y = small
    sae = StructuringAutoencoder(epochs=3, network="mlp", device="cpu", n_classes=10, random_state=0).fit(x, y)
    sae.set_params(warm_start=True, epochs=2, lr=0.0).fit(x, y)
    assert len(sae.history_) == 4, "five epochs ran, the newest four are kept"


def test_warm_start_with_another_input_shape_rebuilds(small) -> None:
    x, y = small
    sae = StructuringAutoencoder(epochs=1, device="cpu", n_classes=10, warm_start=True).fit(x, y)
    encoder = sae.encoder_
    sae.fit(x.reshape(len(x), -1), y)
    assert sae.encoder_ is not encoder
    assert sae.input_shape_ == (64,)
    assert len(sae.history_) == 1


def test_labeled_codes_end_near_their_targets(digits: Dataset) -> None:
    x, y = digits.x_train, random_labels(digits.y_train, 100, seed=0)
    sae = StructuringAutoencoder(epochs=20, device="cpu", n_classes=10, random_state=0).fit(x, y)
    structure = [h["structure"] for h in sae.history_]
    assert structure[-1] < 0.1 * structure[0]
    lab = np.flatnonzero(y >= 0)
    z = sae.transform(x[lab])
    # targets form a regular simplex of edge 1 (the default distances), moved onto the codes
    edges = np.linalg.norm(sae.targets_[:, None] - sae.targets_[None], axis=-1)
    np.testing.assert_allclose(edges[~np.eye(10, dtype=bool)], 1.0, atol=1e-6)
    dist = np.linalg.norm(z - sae.targets_[y[lab]], axis=1)
    assert dist.mean() < 0.25
    nearest = np.argmin(np.linalg.norm(z[:, None] - sae.targets_[None], axis=-1), axis=1)
    assert np.mean(nearest == y[lab]) > 0.95


def test_plain_autoencoder_ignores_structure(small) -> None:
    x, y = small
    sae = StructuringAutoencoder(lam=0.0, epochs=3, device="cpu", n_classes=10).fit(x, y)
    assert all(h["structure"] == 0.0 for h in sae.history_)
    assert sae.history_[-1]["reconstruction"] < sae.history_[0]["reconstruction"]
    np.testing.assert_array_equal(sae.targets_, sae.positions_)


def test_fit_without_labels(small) -> None:
    x, _ = small
    sae = StructuringAutoencoder(epochs=2, device="cpu", latent_dim=4).fit(x)
    assert sae.transform(x[:7]).shape == (7, 4)
    assert sae.inverse_transform(np.zeros((3, 4))).shape == (3, 1, 8, 8)
    assert sae.reconstruction_error(x) > 0


def test_custom_class_distances_shape_the_targets(small) -> None:
    x, y = small
    d = np.ones((10, 10)) - np.eye(10)
    d[0, 1] = d[1, 0] = 0.5  # classes 0 and 1 closer together
    sae = StructuringAutoencoder(epochs=1, device="cpu", n_classes=10, class_distances=d).fit(x, y)
    edges = np.linalg.norm(sae.targets_[:, None] - sae.targets_[None], axis=-1)
    np.testing.assert_allclose(edges, d, atol=1e-6)
    with pytest.raises(ValueError, match="symmetric"):
        StructuringAutoencoder(epochs=1, device="cpu", n_classes=2,
                               class_distances=np.array([[0, 1], [2, 0]])).fit(x[:10], np.zeros(10, dtype=int))


@pytest.mark.parametrize("lam", [-0.1, 1.5])
def test_lam_outside_unit_interval(small, lam: float) -> None:
    x, y = small
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\]"):
        StructuringAutoencoder(lam=lam, epochs=1, device="cpu").fit(x, y)


def test_lam_bounds_are_allowed(small) -> None:
    x, y = small
    for lam in (0.0, 1.0):
        StructuringAutoencoder(lam=lam, epochs=1, device="cpu", n_classes=10).fit(x[:50], y[:50])


def test_mismatched_x_and_y(small) -> None:
    x, y = small
    with pytest.raises(ValueError, match="400 items but y has 399"):
        StructuringAutoencoder(epochs=1, device="cpu").fit(x, y[:-1])


@pytest.mark.parametrize("bad", [10, -2])
def test_labels_out_of_range(small, bad: int) -> None:
    x, y = small
    y = y.copy()
    y[0] = bad
    with pytest.raises(ValueError, match=r"labels must be -1 or in 0\.\.9"):
        StructuringAutoencoder(epochs=1, device="cpu", n_classes=10).fit(x, y)


def test_empty_pool() -> None:
    with pytest.raises(ValueError, match="empty"):
        StructuringAutoencoder(epochs=1, device="cpu").fit(np.zeros((0, 1, 8, 8), np.float32))


def test_encoder_without_decoder(small) -> None:
    x, y = small
    with pytest.raises(ValueError, match="both encoder and decoder"):
        StructuringAutoencoder(encoder=nn.Linear(64, 10), epochs=1, device="cpu").fit(x, y)
    with pytest.raises(ValueError, match="both encoder and decoder"):
        StructuringAutoencoder(decoder=nn.Linear(10, 64), epochs=1, device="cpu").fit(x, y)


def test_other_bad_parameters(small) -> None:
    x, y = small
    for params in ({"latent_dim": 0}, {"epochs": -1}, {"batch_size": 0}, {"labeled_per_batch": -1},
                   {"max_shift": -1}, {"steps_per_epoch": 0}, {"consistency": -0.5},
                   {"cutout": -1}, {"weight_decay": -0.1},
                   {"weight_decay": float("nan")}, {"lr_schedule": "step"}, {"ema_decay": 1.0},
                   {"ema_decay": -0.1}, {"mean_teacher": True}, {"contrastive": -1.0},
                   {"contrastive": float("nan")}, {"lr": -1e-3}, {"lr": float("nan")}):
        name = next(iter(params))
        with pytest.raises(ValueError, match=name):
            StructuringAutoencoder(device="cpu", **params).check_params()
        with pytest.raises(ValueError, match=name):
            StructuringAutoencoder(device="cpu", **params).fit(x, y)
    StructuringAutoencoder(lr=0.0).check_params()  # a frozen fit is allowed: warm-start tests rely on it


def test_not_fitted() -> None:
    x = np.zeros((1, 1, 8, 8), np.float32)
    sae = StructuringAutoencoder()
    for call in (sae.transform, sae.reconstruction_error, lambda x: sae.inverse_transform(np.zeros((1, 10)))):
        with pytest.raises(NotFittedError):
            call(x)
    clf = SAEClassifier()
    for call in (clf.transform, clf.predict, clf.decision_function, clf.predict_confidence, clf.predict_proba_top):
        with pytest.raises(NotFittedError):
            call(x)
    assert not hasattr(clf, "class_centres_")


def test_n_features_in_is_set_for_vectors_only(small) -> None:
    x, y = small
    flat = x[:120].reshape(120, -1)
    clf = SAEClassifier(latent_dim=3, epochs=1, device="cpu", sae_params={"network": "mlp"}).fit(flat, y[:120])
    assert clf.n_features_in_ == clf.sae_.n_features_in_ == 64
    assert clf.svm_.n_features_in_ == 3
    sae = clf.sae_.set_params(warm_start=False).fit(x[:120], y[:120])  # images: sklearn's count means nothing
    assert not hasattr(sae, "n_features_in_")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_items_are_rejected_by_name(small, bad: float) -> None:
    x, y = small
    x = x[:150].copy()
    x[37, 0, 2, 5] = bad
    x[90, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"X\[37\] holds NaN or inf"):
        StructuringAutoencoder(epochs=1, device="cpu", n_classes=10, network="mlp").fit(x, y[:150])
    with pytest.raises(ValueError, match=r"X\[37\]"):
        StructuringAutoencoder(epochs=1, device="cpu", lam=0.0).fit(x.reshape(150, -1).astype(np.float64))


def test_finite_check_reads_a_memmapped_pool_in_slices(tmp_path, monkeypatch) -> None:
    pool = np.lib.format.open_memmap(tmp_path / "pool.npy", mode="w+", dtype=np.float32, shape=(4096, 64))
    pool[-1, -1] = np.nan
    monkeypatch.setattr(model.sae, "FINITE_CHECK_BYTES", 64 * pool[:1].nbytes)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"X\[4095\]"):
            model.sae.check_finite(pool)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < pool.nbytes / 16  # a whole-pool isfinite alone would hold pool.nbytes / 4 of booleans


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_non_finite_codes_get_zero_confidence_and_probability(digits_model: SAEClassifier, digits: Dataset) -> None:
    x = digits.x_test[:6].copy()
    x[2, 0, 3, 3] = np.nan
    x[4, 0, 1, 1] = np.inf
    pred, conf = digits_model.predict_confidence(x)
    _, prob = digits_model.predict_proba_top(x)
    assert conf[2] == conf[4] == prob[2] == prob[4] == 0.0
    ok = [0, 1, 3, 5]
    np.testing.assert_allclose(conf[ok], digits_model.predict_confidence(x[ok])[1], rtol=1e-5)
    np.testing.assert_allclose(prob[ok], digits_model.predict_proba_top(x[ok])[1], rtol=1e-5)
    assert pred.shape == (6,)


def test_what_the_network_kind_does_not_build_from_keeps_the_warm_start(small) -> None:
    x, y = small
    x, y = x[:150], y[:150]
    sae = StructuringAutoencoder(epochs=1, device="cpu", n_classes=10, hidden=(16,), warm_start=True).fit(x, y)
    encoder = sae.encoder_  # 8x8 images: "auto" builds the MLP
    sae.set_params(channels=(4, 8, 8), network="mlp").fit(x, y)
    assert sae.encoder_ is encoder and len(sae.history_) == 2
    StructuringAutoencoder(epochs=1, device="cpu", n_classes=10, network="mlp", hidden=(16,), channels=None).fit(x, y)


@pytest.mark.parametrize("change", [{"latent_dim": 3}, {"hidden": (32,)}, {"network": "conv", "channels": (4, 8, 8)}])
def test_warm_start_after_another_architecture_trains_new_networks(small, change: dict, caplog) -> None:
    x, y = small
    x, y = x[:150], y[:150]
    sae = StructuringAutoencoder(epochs=1, device="cpu", n_classes=10, network="mlp", hidden=(16,),
                                 warm_start=True).fit(x, y)
    sae.fit(x, y)
    encoder = sae.encoder_
    assert len(sae.history_) == 2  # unchanged settings: warm
    with caplog.at_level(logging.INFO, logger="model.sae"):
        sae.set_params(**change).fit(x, y)
    assert sae.encoder_ is not encoder
    assert len(sae.history_) == 1
    assert sae.transform(x[:4]).shape == (4, sae.latent_dim)
    assert f"{next(iter(change))}" in caplog.text
    encoder = sae.encoder_
    sae.fit(x, y)
    assert sae.encoder_ is encoder  # and the new networks warm-start from then on
    # the user's own pair counts by identity
    torch.manual_seed(0)
    sae.set_params(encoder=TinyEncoder(), decoder=TinyDecoder(), latent_dim=3).fit(x, y)
    assert isinstance(sae.encoder_, TinyEncoder)
    encoder = sae.encoder_
    sae.fit(x, y)
    assert sae.encoder_ is encoder
    sae.set_params(encoder=TinyEncoder(), decoder=TinyDecoder()).fit(x, y)
    assert sae.encoder_ is not encoder


def test_a_warm_classifier_follows_a_new_latent_dim(small) -> None:
    x, y = small
    clf = SAEClassifier(latent_dim=4, epochs=1, device="cpu", sae_params={"network": "mlp"}).fit(x[:150], y[:150])
    clf.set_params(warm_start=True, latent_dim=3).fit(x[:150], y[:150])
    assert clf.transform(x[:4]).shape == (4, 3)
    assert clf.predict(x[:4]).shape == (4,)


def test_a_pool_kept_on_the_host_is_not_pinned(small, monkeypatch) -> None:
    x, _ = small
    pinned = []

    def spy_pin(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        pinned.append(self.shape)
        return self

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (1024, 1 << 30))  # the pool does not fit
    monkeypatch.setattr(torch.Tensor, "pin_memory", spy_pin)
    staged = StructuringAutoencoder._stage(x, torch.device("cuda"))
    assert pinned == []
    assert np.shares_memory(staged.numpy(), x)


@pytest.mark.parametrize(("key", "param"), [
    ("latent_dim", "latent_dim"), ("lam", "lam"), ("epochs", "epochs"), ("n_classes", "class_names"),
    ("device", "device"), ("random_state", "random_state"), ("verbose", "verbose"),
    ("pseudo_weight", "self_training"), ("warm_start", "warm_start")])
def test_sae_params_cannot_set_what_the_classifier_sets(small, key: str, param: str) -> None:
    x, y = small
    with pytest.raises(ValueError, match=f"instead of '{key}' use SAEClassifier's '{param}'"):
        SAEClassifier(epochs=1, device="cpu", sae_params={key: 1, "network": "mlp"}).fit(x, y)


def test_reconstruction_error_of_a_float_pool_goes_batch_by_batch(small, monkeypatch) -> None:
    x, y = small
    sae = StructuringAutoencoder(epochs=1, device="cpu", n_classes=10, network="mlp").fit(x[:150], y[:150])
    whole = float(np.mean((sae.inverse_transform(sae.transform(x)) - x) ** 2))
    seen, transform = [], sae.transform
    monkeypatch.setattr(sae, "transform", lambda xb: seen.append(len(xb)) or transform(xb))
    assert sae.reconstruction_error(x, batch_size=128) == pytest.approx(whole, rel=1e-5)
    assert max(seen) <= 128


class TinyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 64), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, 8, 8)


def test_user_supplied_module_pair(small) -> None:
    x, y = small
    torch.manual_seed(0)
    enc, dec = TinyEncoder(), TinyDecoder()
    before = [p.detach().clone() for p in enc.parameters()]
    sae = StructuringAutoencoder(encoder=enc, decoder=dec, latent_dim=3, epochs=10, device="cpu",
                                 n_classes=10).fit(x, y)
    assert isinstance(sae.encoder_, TinyEncoder)
    assert sae.encoder_ is not enc  # the user's modules are copied, never trained in place
    for p, b in zip(enc.parameters(), before, strict=True):
        assert torch.equal(p, b)
    assert sae.transform(x[:5]).shape == (5, 3)
    assert sae.inverse_transform(sae.transform(x[:5])).shape == (5, 1, 8, 8)
    assert sae.history_[-1]["structure"] < sae.history_[0]["structure"]
    assert sae.history_[-1]["reconstruction"] < sae.history_[0]["reconstruction"]


def test_progress_bar_is_silent_by_default(small, capsys) -> None:
    x, y = small
    StructuringAutoencoder(epochs=2, device="cpu", n_classes=10).fit(x, y)
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == ""
    StructuringAutoencoder(epochs=2, device="cpu", n_classes=10, verbose=True).fit(x, y)
    assert "train SAE" in capsys.readouterr().err  # the check above can fail: verbose does print


def test_on_epoch_callback(small) -> None:
    x, y = small
    calls = []
    StructuringAutoencoder(epochs=3, device="cpu", n_classes=10,
                           on_epoch=lambda e, n, rec: calls.append((e, n, sorted(rec)))).fit(x, y)
    assert calls == [(e, 3, ["reconstruction", "seconds", "structure"]) for e in (1, 2, 3)]


def test_as_float_array_adds_a_channel_axis() -> None:
    out = as_float_array(np.full((2, 5, 5), 255, dtype=np.uint8))
    assert out.shape == (2, 1, 5, 5)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, 1.0)  # uint8 means pixel/255
    x = np.zeros((2, 1, 5, 5), dtype=np.float32)
    assert as_float_array(x) is x


def test_sae_classifier_needs_two_labeled_classes(small) -> None:
    x, _ = small
    y = np.full(len(x), -1)
    y[:5] = 3
    with pytest.raises(ValueError, match="at least two classes"):
        SAEClassifier(epochs=1, device="cpu").fit(x, y)


def test_semi_supervised_terms_wait_for_their_label_count(small, digits: Dataset, monkeypatch) -> None:
    x, y = small
    seen = []
    fit = StructuringAutoencoder.fit

    def recording_fit(self, X, y=None, pseudo=None, **kw):
        seen.append((self.consistency, self.pseudo_weight, None if pseudo is None else int((pseudo >= 0).sum())))
        return fit(self, X, y, pseudo=pseudo, **kw)

    monkeypatch.setattr(StructuringAutoencoder, "fit", recording_fit)
    model = SAEClassifier(epochs=1, device="cpu", warm_start=True, self_training=0.5, self_training_threshold=0.0,
                          semi_supervised_from=100, sae_params={"consistency": 1.0, "max_shift": 1})
    model.fit(x, y)
    assert model.sae_.consistency == 1.0, "after a fit the autoencoder holds the setting again (it is saved)"
    model.fit(x, y)
    more = random_labels(digits.y_train[:400], 100, seed=2)
    model.fit(x, more)
    assert seen[0] == (0.0, 0.0, None) and seen[1] == (0.0, 0.0, None), "60 labels: both terms wait"
    assert seen[2][:2] == (1.0, 0.5) and seen[2][2] > 0, "100 labels: consistency on, confident items pseudo-labeled"
    assert model.sae_params["consistency"] == 1.0, "the user's setting is never overwritten"


def test_a_warm_fit_keeps_its_networks_only_while_no_held_label_has_pulled_them(small) -> None:
    from model.calibration import holdout

    x, y = small
    model = SAEClassifier(latent_dim=3, epochs=1, device="cpu", warm_start=True, sae_params={"network": "mlp"})
    assert not model.fit(x, y).warm_started_ and model.fit(x, y).warm_started_, "the same holdout (none): kept"
    assert not model.set_params(calibration_holdout=0.3).fit(x, y).warm_started_, \
        "codes every label pulled would carry the labels now held out"
    assert model.fit(x, y).warm_started_, "the same holdout again: warm"

    ids = np.arange(len(y))
    held = (y >= 0) & holdout(ids, 0.3)
    one_held = int(np.flatnonzero(held)[0])
    other = int(np.flatnonzero((y >= 0) & ~held & (y != y[one_held]))[0])
    few = np.full_like(y, -1)
    few[[one_held, other]] = y[[one_held, other]]
    assert model.fit(x, few).pulled_held_, "one class outside the holdout: every label pulls"
    failing = model.set_params(sae_params={"network": "mlp", "lam": 0.5})
    with pytest.raises(ValueError, match="instead of 'lam'"):
        failing.fit(x, y)
    model.set_params(sae_params={"network": "mlp"})
    assert model.pulled_held_, "a fit that failed changes nothing the next fit decides by"
    assert not model.fit(x, y).warm_started_ and not model.pulled_held_, "the held label it pulled is let go"
    assert model.fit(x, y).warm_started_

    def boom(*_) -> None:
        raise RuntimeError("stopped mid-training")

    codes, sae, svm = model.transform(x), model.sae_, model.svm_
    model.set_params(calibration_holdout=0.0, sae_params={"network": "mlp", "on_epoch": boom})
    with pytest.raises(RuntimeError, match="mid-training"):
        model.fit(x, y)  # warm (nothing held out): it trains until the first epoch ends
    model.set_params(calibration_holdout=0.3, sae_params={"network": "mlp"})
    assert model.sae_ is sae and model.svm_ is svm and model.warm_started_ and not model.pulled_held_
    np.testing.assert_array_equal(model.transform(x), codes, "a failed warm fit leaves the networks as they were")
    assert model.keeps_networks(y), "no label it holds out pulled them: kept"


def test_test_time_flip_codes_an_image_and_its_mirror_alike(small, digits: Dataset) -> None:
    x, y = small
    model = SAEClassifier(epochs=1, device="cpu", sae_params={"flip": True}).fit(x, y)
    test, mirror = digits.x_test[:50], digits.x_test[:50, ..., ::-1]
    plain = model.transform(test)
    assert not np.allclose(plain, model.transform(mirror)), "digits are not symmetric"
    flipped = SAEClassifier(epochs=1, device="cpu", test_time_flip=True, sae_params={"flip": True}).fit(x, y)
    np.testing.assert_allclose(flipped.transform(test), (plain + model.transform(mirror)) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flipped.decision_function(test), flipped.decision_function(mirror), atol=1e-5)
    assert not np.allclose(flipped.svm_.coef_, model.svm_.coef_), "the SVM is fitted on the averaged codes"
    vectors = np.random.default_rng(0).random((60, 16), dtype=np.float32)
    labels = np.where(np.arange(60) < 20, np.arange(60) % 2, -1)
    vec = SAEClassifier(latent_dim=3, epochs=1, device="cpu", test_time_flip=True).fit(vectors, labels)
    np.testing.assert_array_equal(vec.transform(vectors), vec.sae_.transform(vectors))  # vectors pass unchanged


def test_members_train_autoencoders_from_different_seeds_and_read_their_codes_side_by_side(small) -> None:
    x, y = small
    one = SAEClassifier(latent_dim=4, epochs=1, device="cpu", random_state=3).fit(x, y)
    two = SAEClassifier(latent_dim=4, epochs=1, device="cpu", random_state=3, members=2).fit(x, y)
    assert len(two.saes_) == 2 and two.sae_ is two.saes_[0]
    z = two.transform(x[:30])
    assert z.shape == (30, 8)
    np.testing.assert_allclose(z[:, :4], one.transform(x[:30]), rtol=1e-5, atol=1e-6)  # the first member is `one`
    assert not np.allclose(z[:, 4:], z[:, :4], atol=1e-3), "the second member starts from another seed"
    assert two.svm_.coef_.shape[1] == 8, "the SVM reads both members' codes"
    two.set_params(warm_start=True).fit(x, y)
    assert two.warm_started_ and [len(sae.history_) for sae in two.saes_] == [2, 2], \
        "a warm fit goes on training each member"
    with pytest.raises(ValueError, match="members must be at least 1"):
        SAEClassifier(epochs=1, device="cpu", members=0).fit(x, y)


def test_members_on_the_user_s_own_networks_start_from_different_weights(small) -> None:
    x, y = small
    enc, dec = build_networks((1, 8, 8), 4, "mlp")
    two = SAEClassifier(latent_dim=4, epochs=0, device="cpu", random_state=3, members=2,
                        sae_params={"encoder": enc, "decoder": dec}).fit(x, y)
    z = two.transform(x[:30])
    np.testing.assert_allclose(z[:, :4], enc(torch.as_tensor(x[:30] / 255.0 if x.dtype == np.uint8 else x[:30],
                                                             dtype=torch.float32)).detach().numpy(), atol=1e-5)
    assert not np.allclose(z[:, 4:], z[:, :4], atol=1e-3), "the second member is no copy of the first"
    again = SAEClassifier(latent_dim=4, epochs=0, device="cpu", random_state=3, members=2,
                          sae_params={"encoder": enc, "decoder": dec}).fit(x, y)
    np.testing.assert_array_equal(again.transform(x[:30]), z, "and its weights follow from its seed")
    two.set_params(warm_start=True, epochs=1).fit(x, y)
    assert [len(sae.history_) for sae in two.saes_] == [1, 1] and two.warm_started_, \
        "a warm fit trains each member's own pair on"
    np.testing.assert_allclose(two.saes_[1].transform(x[:30]), z[:, 4:], atol=0.5)
    enc2, dec2 = build_networks((1, 8, 8), 6, "mlp")  # a new pair: every member starts it, none goes on warm
    two.set_params(latent_dim=6, sae_params={"encoder": enc2, "decoder": dec2}).fit(x, y)
    assert two.transform(x[:3]).shape == (3, 12) and [len(sae.history_) for sae in two.saes_] == [1, 1]
    unseeded = SAEClassifier(latent_dim=4, epochs=0, device="cpu", members=3,
                             sae_params={"encoder": enc, "decoder": dec}).fit(x, y).transform(x[:30])
    assert not np.allclose(unseeded[:, 4:8], unseeded[:, 8:], atol=1e-3), "without a seed too"


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.fixture(scope="module")
def small_uint8(small) -> tuple[np.ndarray, np.ndarray]:
    """The small pool as uint8 pixels (N, 1, H, W)."""
    x, y = small
    return np.round(x * 255).astype(np.uint8), y


def test_uint8_pool_gives_the_codes_of_its_float_scaling(small_uint8, digits: Dataset) -> None:
    u, y = small_uint8
    f = u.astype(np.float32) / 255
    params = dict(epochs=2, device="cpu", n_classes=10, max_shift=1, batch_size=64, random_state=4)
    from_float = StructuringAutoencoder(**params).fit(f, y)
    from_uint8 = StructuringAutoencoder(**params).fit(u, y)
    from_hw = StructuringAutoencoder(**params).fit(u[:, 0], y)  # (N, H, W) gets its channel axis
    codes = from_float.transform(f)
    np.testing.assert_allclose(from_uint8.transform(u), codes, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_uint8.transform(f), codes, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_hw.transform(u[:, 0]), codes, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_uint8.targets_, from_float.targets_, rtol=1e-5, atol=1e-6)
    assert from_uint8.input_shape_ == from_hw.input_shape_ == (1, 8, 8)
    np.testing.assert_allclose(from_uint8.reconstruction_error(u), from_float.reconstruction_error(f), rtol=1e-5)


def test_uint8_memmap_pool_is_never_a_float_array_whole(small_uint8, tmp_path, monkeypatch) -> None:
    u, y = small_uint8
    n = len(u)
    mm = np.lib.format.open_memmap(tmp_path / "pool.npy", mode="w+", dtype=np.uint8, shape=(n, 8, 8))
    mm[:] = u[:, 0]
    mm.flush()
    pool = np.load(tmp_path / "pool.npy", mmap_mode="r")
    staged, converted = [], []
    stage, to_float = StructuringAutoencoder._stage, model.sae.as_float_array

    def spy_stage(x: np.ndarray, dev: torch.device) -> torch.Tensor:
        staged.append(stage(x, dev))
        return staged[-1]

    def spy_float(x: np.ndarray) -> np.ndarray:
        converted.append(len(x))
        return to_float(x)

    monkeypatch.setattr(StructuringAutoencoder, "_stage", staticmethod(spy_stage))
    monkeypatch.setattr(model.sae, "as_float_array", spy_float)
    params = dict(epochs=2, device="cpu", n_classes=10, batch_size=64, random_state=0)
    sae = StructuringAutoencoder(**params).fit(pool, y)
    codes = sae.transform(pool, batch_size=128)
    error = sae.reconstruction_error(pool, batch_size=128)
    assert [t.dtype for t in staged] == [torch.uint8]
    assert np.shares_memory(staged[0].numpy(), pool)  # on the CPU the pool stays in the mapped file
    assert converted and max(converted) <= 128
    monkeypatch.undo()
    in_memory = StructuringAutoencoder(**params).fit(u, y)
    np.testing.assert_array_equal(codes, in_memory.transform(u))
    assert error == pytest.approx(in_memory.reconstruction_error(u), rel=1e-6)


def step_rates(run: Callable[[], object]) -> list[float]:
    """The learning rate of every optimiser step that ``run`` takes, in order."""
    rates = []
    handle = register_optimizer_step_post_hook(lambda opt, *args: rates.append(opt.param_groups[0]["lr"]))
    try:
        run()
    finally:
        handle.remove()
    return rates


def count_optimiser_steps(run: Callable[[], object]) -> int:
    return len(step_rates(run))


def test_steps_per_epoch_caps_the_optimiser_steps(small) -> None:
    x, y = small  # 400 items: a full pass is 13 batches of 32
    epochs = []
    capped = StructuringAutoencoder(epochs=2, batch_size=32, steps_per_epoch=3, device="cpu", n_classes=10,
                                    on_epoch=lambda e, n, rec: epochs.append(e))
    assert count_optimiser_steps(lambda: capped.fit(x, y)) == 6
    assert epochs == [1, 2]
    assert len(capped.history_) == 2
    full = StructuringAutoencoder(epochs=2, batch_size=32, device="cpu", n_classes=10)
    assert count_optimiser_steps(lambda: full.fit(x, y)) == 26
    # a budget above a full pass changes nothing: same draws, same steps, same codes
    loose = StructuringAutoencoder(epochs=2, batch_size=32, steps_per_epoch=100, device="cpu", n_classes=10)
    assert count_optimiser_steps(lambda: loose.fit(x, y)) == 26
    np.testing.assert_array_equal(loose.transform(x), full.transform(x))
    # a warm fit with a budget keeps to it too
    full.set_params(warm_start=True, epochs=1, steps_per_epoch=2)
    assert count_optimiser_steps(lambda: full.fit(x, y)) == 2
    assert len(full.history_) == 3


def test_mixup_pulls_blends_of_labeled_items_to_the_blend_of_their_targets() -> None:
    # With an identity encoder, items sitting on their targets blend onto the blended targets exactly.
    sae = StructuringAutoencoder(device="cpu", mixup=1.0)
    sae.encoder_ = nn.Identity()
    targets = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    yb = torch.tensor([0, 1, 2, 1, -1, -1])
    xb = targets[yb.clamp(min=0)].clone()
    xb[yb < 0] = 100.0  # unlabeled rows never enter a blend
    gen = torch.Generator().manual_seed(0)
    assert float(sae._mixed_structure(xb, yb, targets, gen)) == pytest.approx(0.0, abs=1e-12)
    xb[yb >= 0] += torch.tensor([1.0, -1.0])
    assert float(sae._mixed_structure(xb, yb, targets, gen)) == pytest.approx(1.0)
    assert float(sae._mixed_structure(xb[:1], yb[:1], targets, gen)) == 0.0, "a blend needs two labeled items"


def test_mixup_changes_training_reproducibly(small, digits: Dataset) -> None:
    x, y = small
    codes = [StructuringAutoencoder(epochs=2, device="cpu", n_classes=10, mixup=w, random_state=0)
             .fit(x, y).transform(digits.x_test) for w in (1.0, 1.0, 0.0)]
    np.testing.assert_array_equal(codes[0], codes[1])
    assert not np.allclose(codes[0], codes[2])


def test_mixup_needs_labels(small, digits: Dataset) -> None:
    x, _ = small
    codes = [StructuringAutoencoder(epochs=2, device="cpu", n_classes=10, mixup=w, random_state=0)
             .fit(x).transform(digits.x_test) for w in (0.0, 1.0)]
    np.testing.assert_array_equal(codes[0], codes[1])
    with pytest.raises(ValueError, match="mixup"):
        StructuringAutoencoder(device="cpu", mixup=-1.0).fit(x)


def test_cosine_schedule_anneals_every_fit_from_lr_to_near_zero(small) -> None:
    x, y = small  # 400 items: 13 batches of 32 an epoch
    sae = StructuringAutoencoder(epochs=2, batch_size=32, lr_schedule="cosine", device="cpu", n_classes=10)
    rates = step_rates(lambda: sae.fit(x, y))
    assert len(rates) == 26 and rates[0] == 1e-3
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert rates[-1] < 1e-5
    sae.set_params(warm_start=True, epochs=1)
    warm = step_rates(lambda: sae.fit(x, y))
    assert len(warm) == 13 and warm[0] == 1e-3 and warm[-1] < 2e-5, "a warm round anneals afresh"
    constant = StructuringAutoencoder(epochs=1, batch_size=32, device="cpu", n_classes=10)
    assert step_rates(lambda: constant.fit(x, y)) == [1e-3] * 13
    # a step budget shortens the schedule with it, so a capped round still ends on small steps
    capped = StructuringAutoencoder(epochs=2, batch_size=32, steps_per_epoch=5, lr_schedule="cosine", device="cpu",
                                    n_classes=10)
    rates = step_rates(lambda: capped.fit(x, y))
    assert len(rates) == 10 and rates[-1] < 1e-4


def test_ema_decay_ends_every_fit_on_the_moving_average_of_its_steps(small) -> None:
    x, y = small  # 400 items: 4 batches of 100 an epoch
    snapshots: list[list[torch.Tensor]] = []
    handle = register_optimizer_step_post_hook(
        lambda opt, *args: snapshots.append([p.detach().clone() for p in opt.param_groups[0]["params"]]))

    def fit_and_check(sae: StructuringAutoencoder) -> None:
        snapshots.clear()
        sae.fit(x, y)
        assert len(snapshots) == 4
        average = snapshots[0]
        for weights in snapshots[1:]:
            average = [0.6 * a + 0.4 * w for a, w in zip(average, weights, strict=True)]
        fitted = [*sae.encoder_.parameters(), *sae.decoder_.parameters()]
        for a, f in zip(average, fitted, strict=True):
            torch.testing.assert_close(f.detach(), a)
        assert not torch.equal(fitted[0], snapshots[-1][0]), "the average, not the last step"
        codes, labeled = sae.transform(x).astype(np.float64), y >= 0
        counts = np.bincount(y[labeled], minlength=10).astype(np.float64)
        means = np.zeros((10, codes.shape[1]))
        np.add.at(means, y[labeled], codes[labeled])
        means /= np.maximum(counts, 1.0)[:, None]
        np.testing.assert_allclose(sae.targets_, procrustes_targets(sae.positions_, means, counts), atol=1e-5,
                                   err_msg="the served targets come from the averaged encoder")

    try:
        sae = StructuringAutoencoder(epochs=1, batch_size=100, ema_decay=0.6, device="cpu", n_classes=10)
        fit_and_check(sae)
        sae.set_params(warm_start=True)
        fit_and_check(sae)  # a warm round averages afresh, from the last round's average
    finally:
        handle.remove()


def test_weight_decay_shrinks_the_weights(small) -> None:
    x, y = small

    def squared_norm(weight_decay: float) -> float:
        sae = StructuringAutoencoder(epochs=2, weight_decay=weight_decay, device="cpu", n_classes=10).fit(x, y)
        return sum(float(p.detach().pow(2).sum()) for p in sae.encoder_.parameters())

    # 4 steps at lr 1e-3 each shrink a weight by 5 %, whatever its gradient says
    assert squared_norm(50.0) < 0.8 * squared_norm(0.0)


def test_a_calibration_holdout_keeps_its_labels_from_the_codes_and_calibrates_on_them(small, monkeypatch) -> None:
    from model.calibration import holdout
    from model.latent_svm import LatentSVM

    x, y = small
    seen, calibrated_on = {}, {}
    real_fit, real_svm_fit = StructuringAutoencoder.fit, LatentSVM.fit

    def record(self, X, y, **kw):
        seen["y"] = np.asarray(y).copy()
        return real_fit(self, X, y, **kw)

    def record_svm(self, Z, y, calibrate_on=None):
        if self.calibrate:  # the model's own SVM, not one of its calibration folds
            calibrated_on["mask"], calibrated_on["y"] = calibrate_on, np.asarray(y).copy()
        return real_svm_fit(self, Z, y, calibrate_on=calibrate_on)

    monkeypatch.setattr(StructuringAutoencoder, "fit", record)
    monkeypatch.setattr(LatentSVM, "fit", record_svm)
    ids = np.arange(5000, 5000 + len(x))
    model = SAEClassifier(epochs=1, device="cpu", calibration_holdout=0.4).fit(x, y, ids=ids)
    held = (y >= 0) & holdout(ids, 0.4)
    assert 10 <= held.sum() < (y >= 0).sum()
    assert (seen["y"][held] == -1).all() and (seen["y"][~held] == y[~held]).all(), "held labels never pull"
    assert len(calibrated_on["y"]) == (y >= 0).sum(), "the SVM learns from every label"
    np.testing.assert_array_equal(calibrated_on["mask"], held[y >= 0])
    assert model.get_params()["calibration_holdout"] == 0.4
    with pytest.raises(ValueError, match="calibration_holdout"):
        SAEClassifier(epochs=1, device="cpu", calibration_holdout=1.0).fit(x, y)


def pseudo_labels_seen(monkeypatch: pytest.MonkeyPatch) -> list:
    """The pseudo-labels each autoencoder fit is given, in order (None: none)."""
    seen, real_fit = [], StructuringAutoencoder.fit

    def record(self, X, y, pseudo=None, **kw):
        seen.append(pseudo)
        return real_fit(self, X, y, pseudo=pseudo, **kw)

    monkeypatch.setattr(StructuringAutoencoder, "fit", record)
    return seen


def test_held_out_labels_are_never_pseudo_labeled_by_the_previous_version(small, monkeypatch) -> None:
    from model.calibration import holdout

    x, y = small
    seen = pseudo_labels_seen(monkeypatch)
    model = SAEClassifier(epochs=1, device="cpu", calibration_holdout=0.4, self_training=1.0,
                          self_training_threshold=0.0).fit(x, y)
    model.set_params(warm_start=True).fit(x, y)
    held = (y >= 0) & holdout(np.arange(len(y)), 0.4)
    assert seen[0] is None and seen[1] is not None and held.any()
    assert (seen[1][held] == -1).all(), "the previous version knows their classes: they must not pull"
    assert (seen[1][y < 0] >= 0).all(), "the unlabeled items are pseudo-labeled (threshold 0)"


def test_pseudo_labels_carry_nothing_of_the_held_out_labels(small, monkeypatch) -> None:
    """The previous version's SVM learned from the held labels; the guesses that pull must not."""
    from model.calibration import holdout

    x, y = small
    seen = pseudo_labels_seen(monkeypatch)
    held = (y >= 0) & holdout(np.arange(len(y)), 0.4)
    other = np.where(held, (y + 1) % 10, y)
    for labels in (y, other):  # the same codes (held labels never pull), two different previous SVMs
        model = SAEClassifier(epochs=1, device="cpu", calibration_holdout=0.4, self_training=1.0,
                              self_training_threshold=0.0).fit(x, labels)
        model.set_params(warm_start=True).fit(x, labels)
    assert held.any() and seen[0] is None and seen[2] is None
    np.testing.assert_array_equal(seen[1], seen[3])


def test_a_warm_fit_calls_the_user_s_own_epoch_callback(small) -> None:
    """The callback is the caller's (a bound method whose object holds a lock, say): a warm fit copies the networks,
    never it."""
    import threading

    class Progress:
        def __init__(self) -> None:
            self.lock, self.epochs = threading.Lock(), 0

        def step(self, epoch, total, record) -> None:
            with self.lock:
                self.epochs += 1

    x, y = small
    progress = Progress()
    model = SAEClassifier(latent_dim=3, epochs=1, device="cpu", warm_start=True,
                          sae_params={"network": "mlp", "on_epoch": progress.step}).fit(x, y)
    assert model.fit(x, y).warm_started_ and progress.epochs == 2


def test_features_outside_zero_to_one_are_scaled_in_so_the_decoder_can_rebuild_them(digits: Dataset) -> None:
    x01 = digits.x_train[:600].reshape(600, -1)
    y = random_labels(digits.y_train[:600], 60, 0)
    centred = x01 * 2.0 - 1.0  # embeddings-like: negative values, the sigmoid decoder cannot reach them unscaled
    kw = dict(latent_dim=8, epochs=25, random_state=0, device="cpu", n_classes=10)
    inside = StructuringAutoencoder(**kw).fit(x01, y)
    assert inside.input_range_ is None, "pixels already in [0, 1] stay as they are"
    sae = StructuringAutoencoder(**kw).fit(centred, y)
    assert sae.input_range_ is not None and sae.input_range_[0].shape == (x01.shape[1],)
    error = sae.reconstruction_error(centred)
    assert error < 0.5 * centred.var(), "better than the mean by far, in the data's own units"
    assert error == pytest.approx(4 * inside.reconstruction_error(x01), rel=0.5), "as good as the same data in [0, 1]"
    rebuilt = sae.inverse_transform(sae.transform(centred[:5]))
    assert rebuilt.min() < -0.5, "decoded back into the data's range"


def test_a_warm_start_keeps_the_scaling_its_networks_learned_on(digits: Dataset) -> None:
    x = digits.x_train[:300].reshape(300, -1) * 4.0 - 2.0
    y = random_labels(digits.y_train[:300], 30, 0)
    sae = StructuringAutoencoder(latent_dim=4, epochs=1, random_state=0, device="cpu", n_classes=10,
                                 warm_start=True).fit(x, y)
    first = sae.input_range_
    sae.fit(x * 3.0, y)
    assert sae.input_range_ is first
    sae.set_params(latent_dim=5).fit(x * 3.0, y)  # new networks: a new scaling with them
    np.testing.assert_allclose(sae.input_range_[0], first[0] * 3.0, rtol=1e-5)


def test_a_warm_fit_whose_networks_changed_says_it_trained_anew(small) -> None:
    x, y = small
    model = SAEClassifier(latent_dim=4, epochs=1, device="cpu", random_state=0, warm_start=True).fit(x, y)
    assert model.fit(x, y).warm_started_
    assert not model.set_params(latent_dim=5).fit(x, y).warm_started_ and len(model.sae_.history_) == 1


def test_self_training_after_the_classes_changed_guesses_nothing_from_the_old_indices(small) -> None:
    x, y = small
    names = [str(i) for i in range(10)]
    model = SAEClassifier(class_names=names, latent_dim=4, epochs=1, device="cpu", random_state=0, warm_start=True,
                          self_training=0.3, self_training_threshold=0.0, semi_supervised_from=0).fit(x, y)
    guessed = []
    real = model._pseudo_labels
    model._pseudo_labels = lambda *a: guessed.append(real(*a)) or guessed[-1]
    model.fit(x, y)
    assert guessed[-1] is not None and (guessed[-1] >= 0).any(), "the same classes: guesses"
    model.set_params(class_names=names[::-1]).fit(x, np.where(y >= 0, 9 - y, -1))
    assert guessed[-1] is None, "reordered names: the old indices would name other classes"
    few = np.where(y >= 3, y - 3, -1)
    model.set_params(class_names=names[3:]).fit(x, few)
    assert guessed[-1] is None, "fewer classes: no guess (it raised before)"


def test_a_feature_nearly_constant_at_the_first_fit_cannot_blow_up_later_tasks(digits: Dataset) -> None:
    x = digits.x_train[:300].reshape(300, -1) * 4.0 - 2.0
    x[:, 5] = 0.0
    x[0, 5] = 1e-6
    y = random_labels(digits.y_train[:300], 30, 0)
    sae = StructuringAutoencoder(latent_dim=4, epochs=2, random_state=0, device="cpu", n_classes=10).fit(x, y)
    later = x[:20].copy()
    later[:, 5] = 1.0  # an ordinary value the first pool never had
    z, z_pool = sae.transform(later), sae.transform(x)
    assert np.abs(z).max() < 10 * np.abs(z_pool).max()


def test_a_warm_start_from_a_model_that_never_scaled_trains_anew_once_the_pool_needs_it(digits: Dataset) -> None:
    x = digits.x_train[:300].reshape(300, -1)
    y = random_labels(digits.y_train[:300], 30, 0)
    sae = StructuringAutoencoder(latent_dim=4, epochs=1, random_state=0, device="cpu", n_classes=10,
                                 warm_start=True).fit(x, y)
    assert sae.input_range_ is None and sae.fit(x, y).warm_started_
    sae.fit(x * 2.0 - 1.0, y)
    assert not sae.warm_started_ and sae.input_range_ is not None and len(sae.history_) == 1


def test_a_training_that_diverges_fails_instead_of_keeping_nan_weights(small) -> None:
    """NaN weights would give every item the first class at confidence 0; the fit fails and a service keeps serving
    the version before it."""
    x, y = small
    sae = StructuringAutoencoder(latent_dim=4, epochs=3, lr=1e30, device="cpu", random_state=0)
    with pytest.raises(FloatingPointError, match="diverged in epoch"):
        sae.fit(x, y)


def test_channel_last_images_are_refused_not_trained_on(small_uint8) -> None:
    """(N, H, W, 3) read as (N, C, H, W) would train without an error, on nonsense."""
    u, y = small_uint8
    rgb = np.repeat(u, 3, axis=1)
    last = rgb.transpose(0, 2, 3, 1)
    with pytest.raises(ValueError, match=r"transpose\(0, 3, 1, 2\)"):
        StructuringAutoencoder(epochs=1, device="cpu").fit(last, y)
    sae = StructuringAutoencoder(epochs=1, device="cpu", n_classes=10).fit(rgb, y)
    with pytest.raises(ValueError, match="looks like"):
        sae.transform(last)
    assert sae.input_shape_ == (3, 8, 8)


def test_a_float64_memmap_pool_stays_where_it_lies_and_gives_the_float32_codes(small, tmp_path, monkeypatch) -> None:
    x, y = small
    mm = np.lib.format.open_memmap(tmp_path / "pool.npy", mode="w+", dtype=np.float64, shape=x.shape)
    mm[:] = x
    mm.flush()
    pool = np.load(tmp_path / "pool.npy", mmap_mode="r")
    staged, stage = [], StructuringAutoencoder._stage
    monkeypatch.setattr(StructuringAutoencoder, "_stage",
                        staticmethod(lambda a, dev: staged.append(stage(a, dev)) or staged[-1]))
    params = dict(epochs=2, device="cpu", n_classes=10, batch_size=64, random_state=0)
    sae = StructuringAutoencoder(**params).fit(pool, y)
    assert [t.dtype for t in staged] == [torch.float64] and np.shares_memory(staged[0].numpy(), pool), \
        "a million-item float64 pool is not copied whole into float32"
    monkeypatch.undo()
    np.testing.assert_allclose(sae.transform(pool), StructuringAutoencoder(**params).fit(x, y).transform(x),
                               rtol=1e-5, atol=1e-5)


def test_integer_items_are_values_and_a_pixel_model_takes_integer_batches_as_its_pixels(small_uint8, tmp_path) -> None:
    """The same numbers mean the same whatever their dtype: int64 pixels 0..255 scale by their range as uint8 ones
    by 255; binary 0/1 images are not shrunk to 1/255; and a model that learned uint8 pixels reads an int64 batch as
    those pixels, never 255 times brighter."""
    from model.persistence import load_model, save_model

    u, y = small_uint8
    assert u.min() == 0 and u.max() == 255
    params = dict(epochs=2, device="cpu", n_classes=10, batch_size=64, random_state=0)
    as_uint8 = StructuringAutoencoder(**params).fit(u, y)
    as_int64 = StructuringAutoencoder(**params).fit(u.astype(np.int64), y)
    assert as_uint8.learned_pixels() and not as_int64.learned_pixels() and as_int64.input_range_ is not None
    np.testing.assert_allclose(as_int64.transform(u.astype(np.int64)), as_uint8.transform(u), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(as_uint8.transform(u.astype(np.int64)), as_uint8.transform(u))
    with pytest.raises(ValueError, match=r"0\.\.255"):
        as_uint8.transform(u.astype(np.int64) + 1)
    assert as_int64.reconstruction_error(u.astype(np.int64)) == pytest.approx(
        as_uint8.reconstruction_error(u) * 255**2, rel=1e-3), "in the units of the pool it learned: its values"
    assert as_uint8.reconstruction_error(u.astype(np.int64)) == pytest.approx(as_uint8.reconstruction_error(u))

    binary = (u > 127).astype(np.int64)
    sae = StructuringAutoencoder(**params).fit(binary, y)
    assert sae.input_range_ is None and not sae.learned_pixels(), "0/1 values, not pixels of 1/255"
    np.testing.assert_array_equal(sae.transform(binary), sae.transform(binary.astype(np.float32)))

    clf = SAEClassifier(latent_dim=6, epochs=1, random_state=0, device="cpu").fit(u, y)
    save_model(clf, tmp_path / "v")
    again = load_model(tmp_path / "v", "cpu")
    assert again.sae_.learned_pixels()
    np.testing.assert_array_equal(again.transform(u.astype(np.int64)), clf.transform(u))


def test_a_float16_pool_wider_than_its_largest_number_is_still_scaled() -> None:
    from model.sae import input_range

    x = np.array([[-40000.0, 1.0], [40000.0, 3.0]], np.float16)
    _, span = input_range(x)
    assert np.isfinite(span).all() and span[0] == pytest.approx(80000.0) and span[1] > 0


def test_a_mask_trains_exactly_as_the_items_it_keeps_would_alone(small) -> None:
    """A memory map with deleted items' rows among the rest is trained on as it lies, as if those rows were gone."""
    x, y = small
    keep = np.ones(len(x), bool)
    keep[::7] = False
    params = dict(epochs=2, device="cpu", n_classes=10, batch_size=64, random_state=3, max_shift=1)
    broken = x.copy()
    broken[~keep] = 1e6  # a deleted task's row holding what made it be deleted: it must not set the scaling either
    masked = StructuringAutoencoder(**params).fit(broken, y, mask=keep)
    alone = StructuringAutoencoder(**params).fit(x[keep], y[keep])
    assert masked.input_range_ is None
    np.testing.assert_array_equal(masked.transform(x[keep]), alone.transform(x[keep]))
    every = StructuringAutoencoder(**params).fit(x, y, mask=np.ones(len(x), bool))
    np.testing.assert_array_equal(every.transform(x), StructuringAutoencoder(**params).fit(x, y).transform(x))
    with pytest.raises(ValueError, match="one flag per item"):
        StructuringAutoencoder(**params).fit(x, y, mask=keep[1:])


def test_the_classifier_passes_its_mask_to_every_member(small) -> None:
    x, y = small
    keep = np.arange(len(x)) % 5 != 0
    y = np.where(keep, y, np.where(y >= 0, y, 1))  # labels on masked items must not count either
    params = dict(latent_dim=6, epochs=2, members=2, random_state=0, device="cpu")
    masked = SAEClassifier(**params).fit(x, y, mask=keep)
    alone = SAEClassifier(**params).fit(x[keep], y[keep])
    np.testing.assert_array_equal(masked.predict(x[keep]), alone.predict(x[keep]))
    np.testing.assert_allclose(masked.transform(x[keep]), alone.transform(x[keep]), rtol=1e-6)


def test_a_warm_start_onto_a_pool_of_another_form_trains_anew(small_uint8) -> None:
    """Pixels and values read differently: networks warm from one would serve the other inconsistently."""
    u, y = small_uint8
    sae = StructuringAutoencoder(epochs=1, device="cpu", n_classes=10, random_state=0, warm_start=True).fit(u, y)
    assert sae.fit(u, y).warm_started_ and sae.learned_pixels()
    sae.fit((u > 127).astype(np.int64), y)
    assert not sae.warm_started_ and not sae.learned_pixels()
    del sae.pixels_  # as a model saved before the form was recorded
    assert sae.fit((u > 127).astype(np.int64), y).warm_started_, "an older model warm-starts as it did"
    assert not sae.learned_pixels()


def test_a_16_bit_pool_trains_where_it_lies_as_its_values(small_uint8) -> None:
    u, y = small_uint8
    params = dict(epochs=1, device="cpu", n_classes=10, batch_size=64, random_state=0)
    deep = u.astype(np.uint16) * 16
    sae = StructuringAutoencoder(**params).fit(deep, y)
    np.testing.assert_allclose(sae.transform(deep), StructuringAutoencoder(**params).fit(
        deep.astype(np.float32), y).transform(deep.astype(np.float32)), rtol=1e-5, atol=1e-6)
