"""Saving and loading a trained model: identical outputs, no training data, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch import nn

from connectors.datasets import Dataset
from model.networks import Residual
from model.persistence import FORMAT_VERSION, load_model, read_settings, save_model
from model.sae_classifier import SAEClassifier

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_round_trip_gives_identical_outputs(digits_model: SAEClassifier, digits: Dataset, tmp_path) -> None:
    path = save_model(digits_model, tmp_path / "v1", metadata={"labels": 100})
    assert path == tmp_path / "v1"
    loaded = load_model(path, device="cpu")
    x = digits.x_test
    np.testing.assert_array_equal(loaded.transform(x), digits_model.transform(x))
    np.testing.assert_array_equal(loaded.decision_function(x), digits_model.decision_function(x))
    np.testing.assert_array_equal(loaded.predict(x), digits_model.predict(x))
    pred, conf = loaded.predict_confidence(x)
    pred0, conf0 = digits_model.predict_confidence(x)
    np.testing.assert_array_equal(pred, pred0)
    np.testing.assert_array_equal(conf, conf0)
    np.testing.assert_array_equal(loaded.sae_.inverse_transform(loaded.transform(x[:5])),
                                  digits_model.sae_.inverse_transform(digits_model.transform(x[:5])))
    # class 9 had no labels: its centre stays NaN and it still never wins
    np.testing.assert_array_equal(loaded.class_centres_, digits_model.class_centres_)
    assert np.isnan(loaded.class_centres_[9]).all()
    assert 9 not in loaded.predict(x)
    assert loaded.class_names == digits_model.class_names
    assert loaded.n_classes_ == 10
    assert loaded.metadata_ == {"labels": 100}
    assert loaded.sae_.history_ == digits_model.sae_.history_
    np.testing.assert_array_equal(loaded.sae_.targets_, digits_model.sae_.targets_)
    np.testing.assert_array_equal(loaded.predict_proba_top(x)[1], digits_model.predict_proba_top(x)[1])


def test_saved_model_holds_no_training_data(digits_model: SAEClassifier, tmp_path) -> None:
    path = save_model(digits_model, tmp_path / "m")
    assert sorted(p.name for p in path.iterdir()) == ["networks.pt", "settings.json", "svm.npz"]
    with np.load(path / "svm.npz") as arrays:
        for name in arrays.files:
            assert arrays[name].size <= 10 * 10, name  # K x K at most, nothing per item
    settings = read_settings(path)
    assert settings["format_version"] == FORMAT_VERSION
    assert settings["input_shape"] == [1, 8, 8]
    assert settings["n_classes"] == 10
    assert not settings["custom_networks"]
    # loading needs nothing but the directory: predictions on items it never saw
    loaded = load_model(path, device="cpu")
    fresh = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    assert loaded.predict(fresh).shape == (4,)
    assert loaded.predict_confidence(fresh)[1].shape == (4,)


def test_a_loaded_model_with_a_calibration_holdout_keeps_training_warm(digits: Dataset, digits_labels,
                                                                       tmp_path) -> None:
    x, y = digits.x_train[:300], digits_labels[:300]
    model = SAEClassifier(latent_dim=3, epochs=1, device="cpu", calibration_holdout=0.3,
                          sae_params={"network": "mlp"}).fit(x, y)
    loaded = load_model(save_model(model, tmp_path / "v1"), device="cpu")
    assert len(loaded.set_params(warm_start=True).fit(x, y).sae_.history_) == 2, \
        "the version's holdout is known after loading: its codes never saw it (its networks train on)"
    model.set_params(calibration_holdout=0.1)  # changed after fitting: the saved version still held out 0.3
    again = load_model(save_model(model, tmp_path / "v2"), device="cpu")
    assert len(again.set_params(warm_start=True, calibration_holdout=0.3).fit(x, y).sae_.history_) == 2, \
        "the holdout it was fitted with is saved, not the setting at saving"


def test_loaded_model_can_keep_training(digits_model: SAEClassifier, digits: Dataset, digits_labels, tmp_path) -> None:
    loaded = load_model(save_model(digits_model, tmp_path / "v1"), device="cpu")
    n_hist = len(loaded.sae_.history_)
    loaded.set_params(warm_start=True, epochs=1).fit(digits.x_train, digits_labels)
    assert len(loaded.sae_.history_) == n_hist + 1, "the loaded networks train on"
    reloaded = load_model(save_model(loaded, tmp_path / "v2"), device="cpu")
    np.testing.assert_array_equal(reloaded.decision_function(digits.x_test), loaded.decision_function(digits.x_test))


def test_saving_to_an_existing_directory_raises(digits_model: SAEClassifier, tmp_path) -> None:
    target = tmp_path / "v1"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(FileExistsError, match="already exists"):
        save_model(digits_model, target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    save_model(digits_model, tmp_path / "v2")
    with pytest.raises(FileExistsError):
        save_model(digits_model, tmp_path / "v2")


def test_crash_mid_save_leaves_nothing_behind(digits_model: SAEClassifier, digits: Dataset, tmp_path,
                                              monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save_model(digits_model, tmp_path / "models" / "v1")
    assert not (tmp_path / "models" / "v1").exists()
    assert list((tmp_path / "models").iterdir()) == []  # no temporary directory either
    monkeypatch.undo()
    # the model itself is unharmed and the same name can be saved afterwards
    assert next(digits_model.sae_.encoder_.parameters()).device == digits_model.sae_.device_
    load_model(save_model(digits_model, tmp_path / "models" / "v1"), device="cpu")


def test_interrupt_mid_save_leaves_nothing_behind(digits_model: SAEClassifier, tmp_path, monkeypatch) -> None:
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dumps", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_model(digits_model, tmp_path / "v1")
    assert list(tmp_path.iterdir()) == []


def test_unsupported_format_version(digits_model: SAEClassifier, tmp_path) -> None:
    path = save_model(digits_model, tmp_path / "v1")
    settings = read_settings(path)
    settings["format_version"] = 999
    (path / "settings.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="unsupported model format 999"):
        load_model(path, device="cpu")


class FlatEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FlatDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 64), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, 8, 8)


def test_round_trip_keeps_training_settings(digits: Dataset, digits_labels, tmp_path) -> None:
    model = SAEClassifier(epochs=1, device="cpu", sae_params={"max_shift": 1, "flip": True, "labeled_per_batch": 16,
                                                              "mixup": 0.5, "cutout": 3, "weight_decay": 0.1,
                                                              "lr_schedule": "cosine", "ema_decay": 0.9,
                                                              "mean_teacher": True, "contrastive": 0.5})
    model.fit(digits.x_train, digits_labels)
    loaded = load_model(save_model(model, tmp_path / "m"), device="cpu")
    assert loaded.sae_.mixup == 0.5 and loaded.sae_params["mixup"] == 0.5
    assert loaded.sae_.max_shift == 1 and loaded.sae_.cutout == 3 and loaded.sae_params["cutout"] == 3
    assert loaded.sae_.flip is True
    assert loaded.sae_.labeled_per_batch == 16
    assert loaded.sae_params["weight_decay"] == 0.1 and loaded.sae_params["lr_schedule"] == "cosine"
    assert (loaded.sae_.ema_decay, loaded.sae_.mean_teacher) == (0.9, True), "a warm retrain keeps averaging"
    assert loaded.sae_params["max_shift"] == 1  # a warm-started retrain keeps augmenting
    assert loaded.sae_.contrastive == 0.5 and not hasattr(loaded.sae_, "head_"), "the setting travels, the head not"


def test_a_model_saved_before_its_semi_supervised_start_keeps_the_setting(digits: Dataset, digits_labels,
                                                                           tmp_path) -> None:
    model = SAEClassifier(epochs=1, device="cpu", self_training=0.3, semi_supervised_from=10**6,
                          sae_params={"max_shift": 1, "consistency": 1.0})
    model.fit(digits.x_train, digits_labels)
    loaded = load_model(save_model(model, tmp_path / "early"), device="cpu")
    assert loaded.sae_params["consistency"] == 1.0, "the schedule switched it off for that fit only"
    assert (loaded.self_training, loaded.semi_supervised_from) == (0.3, 10**6)


@pytest.mark.parametrize(("network", "layer", "trained"), [
    ("conv-bn", nn.BatchNorm2d, lambda m: int(m.num_batches_tracked) > 0),  # running statistics updated
    ("conv-gn", nn.GroupNorm, lambda m: not torch.equal(m.weight, torch.ones_like(m.weight))),  # scales learnt
    ("conv-res", Residual, lambda m: isinstance(m.body[0], nn.Conv2d))])  # each block around its second conv
def test_round_trip_keeps_the_encoder_s_extra_layers(tmp_path, network: str, layer: type, trained) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (120, 16, 16), dtype=np.uint8)
    y = np.where(np.arange(120) < 40, np.arange(120) % 3, -1)
    model = SAEClassifier(latent_dim=4, epochs=2, device="cpu",
                          sae_params={"network": network, "channels": (4, 8, 8)}).fit(x, y)
    loaded = load_model(save_model(model, tmp_path / "m"), device="cpu")
    assert read_settings(tmp_path / "m")["sae"]["network"] == network
    extra = [m for m in loaded.sae_.encoder_.modules() if isinstance(m, layer)]
    assert len(extra) == 3 and all(trained(m) for m in extra)
    np.testing.assert_array_equal(loaded.transform(x), model.transform(x))


def test_round_trip_with_user_networks(digits: Dataset, digits_labels, tmp_path) -> None:
    torch.manual_seed(0)
    model = SAEClassifier(latent_dim=4, epochs=2, device="cpu",
                          sae_params={"encoder": FlatEncoder(), "decoder": FlatDecoder()})
    model.fit(digits.x_train, digits_labels)
    path = save_model(model, tmp_path / "custom")
    assert read_settings(path)["custom_networks"]
    with pytest.raises(ValueError, match="trust_pickles"):
        load_model(path, device="cpu")  # unpickling runs code: the caller, not the directory, allows it
    loaded = load_model(path, device="cpu", trust_pickles=True)
    assert isinstance(loaded.sae_.encoder_, FlatEncoder)
    np.testing.assert_array_equal(loaded.decision_function(digits.x_test), model.decision_function(digits.x_test))
    # a loaded model with its own networks, trained on and saved again, still loads
    loaded.set_params(warm_start=True, epochs=1).fit(digits.x_train, digits_labels)
    again = save_model(loaded, tmp_path / "custom-2")
    assert read_settings(again)["custom_networks"]
    reloaded = load_model(again, device="cpu", trust_pickles=True)
    assert isinstance(reloaded.sae_.encoder_, FlatEncoder)
    np.testing.assert_array_equal(reloaded.decision_function(digits.x_test), loaded.decision_function(digits.x_test))


def test_round_trip_keeps_step_budget_and_class_distances(digits: Dataset, digits_labels, tmp_path) -> None:
    d = np.ones((10, 10)) - np.eye(10)
    d[0, 1] = d[1, 0] = 0.5
    model = SAEClassifier(class_names=digits.class_names, epochs=1, device="cpu",
                          sae_params={"steps_per_epoch": 5, "class_distances": d})
    model.fit(digits.x_train, digits_labels)
    path = save_model(model, tmp_path / "m")
    assert read_settings(path)["sae"]["class_distances"] == d.tolist()
    loaded = load_model(path, device="cpu")
    assert loaded.sae_.steps_per_epoch == 5
    assert isinstance(loaded.sae_.class_distances, np.ndarray)
    np.testing.assert_array_equal(loaded.sae_.class_distances, d)
    assert loaded.sae_params["steps_per_epoch"] == 5
    np.testing.assert_array_equal(loaded.sae_params["class_distances"], d)
    # a warm retrain of the loaded model keeps both: 5 steps an epoch, targets at the saved distances
    loaded.set_params(warm_start=True, epochs=2).fit(digits.x_train, digits_labels)
    assert len(loaded.sae_.history_) == 3
    targets = loaded.sae_.targets_
    np.testing.assert_allclose(np.linalg.norm(targets[:, None] - targets[None], axis=-1), d, atol=1e-6)
    # a fresh model from the loaded one's parameters, as a cold retrain builds it, gets them too
    fresh = SAEClassifier(**loaded.get_params())
    assert fresh.sae_params["steps_per_epoch"] == 5
    np.testing.assert_array_equal(fresh.sae_params["class_distances"], d)


def test_models_saved_before_the_step_budget_still_load(digits_model: SAEClassifier, tmp_path) -> None:
    path = save_model(digits_model, tmp_path / "old")
    settings = read_settings(path)
    for key in ("steps_per_epoch", "class_distances", "weight_decay", "lr_schedule", "ema_decay", "mean_teacher",
                "contrastive"):
        del settings["sae"][key]
    (path / "settings.json").write_text(json.dumps(settings))
    loaded = load_model(path, device="cpu")
    assert loaded.sae_.steps_per_epoch is None
    assert loaded.sae_.class_distances is None
    assert (loaded.sae_.weight_decay, loaded.sae_.lr_schedule) == (0.0, "constant")
    assert (loaded.sae_.ema_decay, loaded.sae_.mean_teacher) == (0.0, False)
    assert loaded.sae_.contrastive == 0.0


def test_test_time_flip_travels_with_the_model(digits: Dataset, digits_labels, tmp_path) -> None:
    model = SAEClassifier(epochs=1, device="cpu", test_time_flip=True, sae_params={"flip": True})
    model.fit(digits.x_train, digits_labels)
    loaded = load_model(save_model(model, tmp_path / "tta"), device="cpu")
    assert loaded.test_time_flip
    np.testing.assert_array_equal(loaded.decision_function(digits.x_test), model.decision_function(digits.x_test))


def test_a_model_with_several_members_is_not_saved_half(digits: Dataset, digits_labels, tmp_path) -> None:
    model = SAEClassifier(latent_dim=3, epochs=1, device="cpu", members=2).fit(digits.x_train, digits_labels)
    with pytest.raises(ValueError, match="this model has 2"):
        save_model(model, tmp_path / "two")
    assert not (tmp_path / "two").exists()


def test_a_clone_of_a_loaded_model_trains_the_user_s_networks(digits: Dataset, digits_labels, tmp_path) -> None:
    x, y = digits.x_train[:150], digits_labels[:150]
    model = SAEClassifier(latent_dim=4, epochs=1, device="cpu",
                          sae_params={"encoder": FlatEncoder(), "decoder": FlatDecoder()}).fit(x, y)
    loaded = load_model(save_model(model, tmp_path / "custom"), device="cpu", trust_pickles=True)
    assert isinstance(clone(loaded).fit(x, y).sae_.encoder_, FlatEncoder)
    untouched = clone(model).set_params(epochs=0).fit(x, y)
    again = clone(loaded).set_params(epochs=0).fit(x, y)
    np.testing.assert_array_equal(again.transform(x), untouched.transform(x),
                                  "a fit from scratch starts from the user's untrained networks, not the saved ones")
    loaded.set_params(warm_start=True, epochs=1).fit(x, y)
    assert isinstance(loaded.sae_.encoder_, FlatEncoder) and len(loaded.sae_.history_) == 2, \
        "and a warm retrain trains them on"


def test_a_loaded_model_warm_starts_only_with_its_architecture(digits_model: SAEClassifier, digits: Dataset,
                                                                digits_labels, tmp_path) -> None:
    x, y = digits.x_train[:150], digits_labels[:150]
    loaded = load_model(save_model(digits_model, tmp_path / "v1"), device="cpu")
    n_hist = len(loaded.sae_.history_)
    loaded.set_params(warm_start=True, epochs=1).fit(x, y)
    assert len(loaded.sae_.history_) == n_hist + 1
    loaded.set_params(latent_dim=3).fit(x, y)
    assert len(loaded.sae_.history_) == 1, "new networks, trained from the first epoch"
    assert loaded.transform(x[:2]).shape == (2, 3)


def test_a_model_of_features_outside_zero_to_one_loads_with_their_scaling(digits: Dataset, digits_labels,
                                                                         tmp_path) -> None:
    x = digits.x_train.reshape(len(digits.x_train), -1) * 16.0 - 3.0  # raw features, as a vector project sends
    model = SAEClassifier(class_names=[str(i) for i in range(10)], epochs=2, device="cpu").fit(x, digits_labels)
    loaded = load_model(save_model(model, tmp_path / "v1"), device="cpu")
    np.testing.assert_array_equal(loaded.sae_.input_range_[1], model.sae_.input_range_[1])
    np.testing.assert_array_equal(loaded.transform(x[:50]), model.transform(x[:50]))
    np.testing.assert_array_equal(loaded.sae_.inverse_transform(loaded.transform(x[:5])),
                                  model.sae_.inverse_transform(model.transform(x[:5])))
