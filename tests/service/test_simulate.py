"""The offline simulator through the command line: curve.json, the PNG, and clear errors."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable

import numpy as np
import pytest
import torch

from connectors.datasets import load_digits_dataset
from model.networks import NETWORK_KINDS
from model.sae import StructuringAutoencoder
from service import simulate as simulate_module
from service.cli import main
from service.simulate import (
    SimulationError,
    SimulationSettings,
    _build,
    add_flags,
    from_flags,
    run_one,
    sae_params,
    simulate,
    summary_table,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = ["--initial", "30", "--per-round", "30", "--rounds", "1", "--seeds", "1", "--epochs", "5",
        "--pool-size", "400", "--test-size", "200", "--device", "cpu"]


@pytest.mark.slow
def test_cli_simulate_writes_curve_and_png(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    rc = main(["simulate", "--dataset", "digits", "--model", "sae,classifier", "--strategy", "margin,random",
               *TINY, "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads((out / "curve.json").read_text())
    assert set(result) == {"settings", "runs"}
    settings = result["settings"]
    assert settings["dataset"] == "digits"
    assert settings["models"] == ["sae", "classifier"]
    assert settings["strategies"] == ["margin", "random"]
    assert (settings["initial"], settings["per_round"], settings["rounds"]) == (30, 30, 1)
    assert (settings["pool_size"], settings["test_size"], settings["epochs"]) == (400, 200, 5)
    assert settings["class_names"] == [str(i) for i in range(10)]
    runs = result["runs"]
    assert [(r["model"], r["strategy"], r["seed"]) for r in runs] == [
        ("sae", "margin", 0), ("sae", "random", 0), ("classifier", "margin", 0), ("classifier", "random", 0)]
    assert len({r["curve"][0]["start"] for r in runs}) == 1, "every model+strategy of a seed starts alike"
    for r in runs:
        assert set(r) == {"model", "strategy", "seed", "curve"}
        assert [p["labeled"] for p in r["curve"]] == [30, 60]
        first = {"labeled", "test_error", "train_seconds", "test_ece", "test_reliability"}
        if r["model"] == "sae":
            first |= {"test_ece_calibrated", "test_reliability_calibrated"}
        assert set(r["curve"][0]) == first | {"start"}
        assert set(r["curve"][1]) == first | {"stop_kappa", "stop"}
        assert 0.0 <= r["curve"][0]["test_ece"] <= 1.0
        assert sum(r["curve"][0]["test_reliability"]["count"]) == 200
        assert -1.0 <= r["curve"][1]["stop_kappa"] <= 1.0 and r["curve"][1]["stop"] is False
        for p in r["curve"]:
            assert 0.0 <= p["test_error"] <= 1.0
            assert p["train_seconds"] >= 0.0
        assert r["curve"][0]["test_error"] < 0.8  # 30 labels of 10 digits: far better than chance
    # the same seed starts every strategy from the same initial labels and model, so round 0 agrees
    by = {(r["model"], r["strategy"]): r["curve"] for r in runs}
    for model in ("sae", "classifier"):
        assert by[(model, "margin")][0]["test_error"] == by[(model, "random")][0]["test_error"]
    png = (out / "curve.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) > 1000
    assert "sae+margin" in captured.out  # the summary table
    assert captured.err == ""


def test_run_one_adds_per_round_labels() -> None:
    ds = load_digits_dataset()
    s = SimulationSettings(models=["ae"], strategies=["margin"], initial=20, per_round=15, rounds=2, seeds=1,
                           pool_size=150, test_size=100, epochs=2, device="cpu")
    curve = run_one(ds, s, "ae", "margin", seed=0, log=lambda _: None)
    assert [p["labeled"] for p in curve] == [20, 35, 50]


def test_a_probe_reads_every_round_s_fitted_model_and_held_out_sets() -> None:
    ds = load_digits_dataset()
    s = SimulationSettings(models=["ae"], strategies=["margin"], initial=20, per_round=15, rounds=2, seeds=1,
                           pool_size=150, test_size=100, epochs=2, device="cpu", validation_size=60)

    def probe(model, x, y, x_val, y_val, x_test, y_test) -> dict:
        own = float((model.predict(x_val) != y_val).mean())
        return {"labeled": int((y >= 0).sum()), "sizes": [len(x), len(x_val), len(x_test)], "val": own}

    curve = run_one(ds, s, "ae", "margin", seed=0, log=lambda _: None, probe=probe)
    assert [p["probe"]["labeled"] for p in curve] == [20, 35, 50]
    assert all(p["probe"]["sizes"] == [150, 60, 100] for p in curve)
    assert [round(p["probe"]["val"], 5) for p in curve] == [p["val_error"] for p in curve], \
        "the probe sees the model the round's point was read on"


def test_cold_start_trains_from_scratch_every_round(monkeypatch) -> None:
    from model.sae_classifier import SAEClassifier

    fits = []
    fit = SAEClassifier.fit

    def recording_fit(self, x, y):
        fits.append((self.warm_start, self.epochs))
        return fit(self, x, y)

    monkeypatch.setattr(SAEClassifier, "fit", recording_fit)
    ds = load_digits_dataset()
    for warm, expected in ((True, [(False, 2), (True, 1), (True, 1)]), (False, [(False, 2)] * 3)):
        fits.clear()
        s = SimulationSettings(initial=20, per_round=15, rounds=2, pool_size=150, test_size=50, epochs=2,
                               warm_epochs=1, warm_start=warm, max_shift=1, device="cpu")
        run_one(ds, s, "sae", "random", seed=0, log=lambda _: None)
        assert fits == expected


def test_warm_steps_budget_reaches_every_warm_round(monkeypatch) -> None:
    from model.sae_classifier import SAEClassifier

    budgets = []
    fit = SAEClassifier.fit

    def recording_fit(self, x, y):
        budgets.append((self.sae_params or {}).get("steps_per_epoch"))
        return fit(self, x, y)

    monkeypatch.setattr(SAEClassifier, "fit", recording_fit)
    s = SimulationSettings(initial=20, per_round=15, rounds=2, pool_size=150, test_size=50, epochs=2,
                           warm_epochs=1, warm_steps=3, device="cpu")
    run_one(load_digits_dataset(), s, "sae", "margin", seed=0, log=lambda _: None)
    assert budgets == [None, 3, 3], "the first fit takes full passes, warm rounds the budget"


def test_a_fit_after_one_whose_labels_all_pulled_gets_the_first_fit_s_budget(monkeypatch) -> None:
    """Such a fit trains new networks (the held labels pulled the old ones): a warm round's budget would starve it."""
    from model.sae_classifier import SAEClassifier

    fits = []
    fit = SAEClassifier.fit

    def recording_fit(self, x, y, ids=None):
        before = bool(getattr(self, "pulled_held_", False))
        out = fit(self, x, y, ids=ids)
        fits.append((before, self.epochs, (self.sae_params or {}).get("steps_per_epoch"), self.warm_started_))
        return out

    monkeypatch.setattr(SAEClassifier, "fit", recording_fit)
    s = SimulationSettings(initial=3, per_round=40, rounds=2, pool_size=300, test_size=50, epochs=3,
                           warm_epochs=1, warm_steps=2, calibration_holdout=0.8, device="cpu")
    run_one(load_digits_dataset(), s, "sae", "margin", seed=0, log=lambda _: None)
    fresh = [f for f in fits[1:] if not f[3]]
    warm = [f for f in fits[1:] if f[3]]
    assert warm and any(f[0] for f in fresh), fits
    assert all(f[1:3] == (3, None) for f in fresh), "trained anew, with the first fit's budget"
    assert all(f[1:3] == (1, 2) for f in warm), "warm, on the warm budget"


def test_validation_set_is_disjoint_from_pool_and_keeps_the_pool() -> None:
    from service.simulate import _split

    ds = load_digits_dataset()
    plain = SimulationSettings(pool_size=600, test_size=100)
    pool0, val0, _ = _split(ds, plain, seed=1)
    pool, val, _ = _split(ds, SimulationSettings(pool_size=600, test_size=100, validation_size=200), seed=1)
    assert len(val0) == 0 and len(val) == 200
    np.testing.assert_array_equal(pool, pool0, err_msg="a validation set outside the pool leaves the pool as it was")
    assert len(np.intersect1d(pool, val)) == 0
    # no training items left outside the pool: the validation set is carved out of it
    pool, val, _ = _split(ds, SimulationSettings(validation_size=300), seed=1)
    assert len(val) == 300 and len(pool) == len(ds.x_train) - 300 and len(np.intersect1d(pool, val)) == 0


def test_validation_error_and_typicality_start_in_the_curve() -> None:
    s = SimulationSettings(initial=20, per_round=15, rounds=1, pool_size=300, test_size=50, epochs=3,
                           validation_size=100, initial_strategy="typicality", device="cpu")
    curve = run_one(load_digits_dataset(), s, "sae", "cluster-margin", seed=0, log=lambda _: None)
    assert [p["labeled"] for p in curve] == [20, 35]
    assert all(0.0 <= p["val_error"] <= 1.0 for p in curve)
    assert curve[0]["val_error"] < 0.7, "20 typical digits of 10 classes: far better than chance"


def test_typicality_then_margin_covers_what_is_labeled(monkeypatch) -> None:
    import model.acquisition as acquisition

    seen = []
    select = acquisition.TypicalitySampling.select

    def spy(self, values, codes, k, pool, labeled=None):
        seen.append((len(pool), None if labeled is None else len(labeled)))
        return select(self, values, codes, k, pool, labeled)

    monkeypatch.setattr(acquisition.TypicalitySampling, "select", spy)
    s = SimulationSettings(initial=20, per_round=15, rounds=3, pool_size=300, test_size=50, epochs=2, device="cpu")
    curve = run_one(load_digits_dataset(), s, "classifier", "typicality-margin", seed=0, log=lambda _: None)
    assert [p["labeled"] for p in curve] == [20, 35, 50, 65], "every pick is a new item"
    assert seen == [(280, 20), (265, 35), (250, 50)], "the labeled items' codes reach the strategy each round"
    seen.clear()
    early = SimulationSettings(**{**s.__dict__, "strategy_options": {"until": 35}})
    run_one(load_digits_dataset(), early, "classifier", "typicality-margin", seed=0, log=lambda _: None)
    assert seen == [(280, 20)], "until=35: typicality only while fewer than 35 are labeled"


def test_strategy_options_are_checked() -> None:
    from service.simulate import parse_options

    assert parse_options(["until=500", "candidates=2.5"]) == {"until": 500, "candidates": 2.5}
    with pytest.raises(SimulationError, match="KEY=NUMBER"):
        parse_options(["until"])
    with pytest.raises(SimulationError, match="--typical-param wants KEY=NUMBER"):
        parse_options(["contrastive=high"], "--typical-param")
    ok = SimulationSettings(strategies=["margin", "typicality-margin"], strategy_options={"until": 200})
    ok.validate()
    assert ok.options_for("margin") == {} and ok.options_for("typicality-margin") == {"until": 200}
    with pytest.raises(SimulationError, match="none of the strategies"):
        SimulationSettings(strategies=["margin"], strategy_options={"until": 200}).validate()


def test_typicality_start_differs_from_random_and_is_reproducible() -> None:
    from service.simulate import _initial

    x = load_digits_dataset().x_train[:300]
    s = SimulationSettings(initial=10, epochs=2, device="cpu", initial_strategy="typicality")
    a, b = _initial(x, s, seed=0), _initial(x, s, seed=0)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 10
    assert set(a.tolist()) != set(_initial(x, SimulationSettings(initial=10), seed=0).tolist())


TYPICAL_TINY = dict(initial=20, per_round=10, rounds=1, pool_size=120, test_size=30, epochs=1, warm_epochs=1,
                    initial_strategy="typicality", channels=[4, 4, 4], device="cpu")


def record_fits(monkeypatch, what: Callable[[StructuringAutoencoder, np.ndarray | None], object]) -> list:
    """Every StructuringAutoencoder fit appends ``what(model, pseudo)`` to the list returned, in the order they ran.

    The typicality start's cache starts empty, so no start another test computed hides its fit.
    """
    monkeypatch.setattr(simulate_module, "_TYPICAL", {})
    seen = []
    fit = StructuringAutoencoder.fit

    def recording_fit(self, x, y=None, pseudo=None, **kw):
        out = fit(self, x, y, pseudo=pseudo, **kw)
        seen.append(what(self, pseudo))
        return out

    monkeypatch.setattr(StructuringAutoencoder, "fit", recording_fit)
    return seen


def test_self_training_passes_pseudo_labels_on_warm_rounds(monkeypatch) -> None:
    seen = record_fits(monkeypatch, lambda _, pseudo: None if pseudo is None else int((pseudo >= 0).sum()))
    s = SimulationSettings(initial=30, per_round=15, rounds=1, pool_size=300, test_size=50, epochs=5,
                           self_training=0.5, self_training_threshold=0.3, device="cpu")
    run_one(load_digits_dataset(), s, "sae", "margin", seed=0, log=lambda _: None)
    assert seen[0] is None and seen[1] > 0, "the first fit has no model to trust, the warm one pseudo-labels"


def test_consistency_and_augmentation_reach_the_models() -> None:
    s = SimulationSettings(max_shift=2, flip=True, cutout=5, consistency=0.5, semi_supervised_from=300, mixup=0.7,
                           device="cpu")
    model = _build("sae", s, n_classes=3, pool=100, seed=0)
    assert model.sae_params["consistency"] == 0.5 and model.sae_params["max_shift"] == 2
    assert model.sae_params["mixup"] == 0.7 and _build("classifier", s, 3, 100, 0).mixup == 0.7, "mixup for both"
    assert model.semi_supervised_from == 300
    faster = _build("sae", SimulationSettings(lr=2e-3, device="cpu"), 3, 100, 0)
    assert model.sae_params["lr"] == 1e-3 and faster.sae_params["lr"] == 2e-3
    tuned = _build("sae", SimulationSettings(weight_decay=0.1, lr_schedule="cosine", ema_decay=0.99,
                                             mean_teacher=True, device="cpu"), 3, 100, 0)
    optimiser = ("weight_decay", "lr_schedule", "ema_decay", "mean_teacher")
    assert tuple(model.sae_params[k] for k in optimiser) == (0.0, "constant", 0.0, False)
    assert tuple(tuned.sae_params[k] for k in optimiser) == (0.1, "cosine", 0.99, True)
    assert model.sae_params["contrastive"] == 0.0
    assert _build("sae", SimulationSettings(contrastive=0.3, device="cpu"), 3, 100, 0).sae_params["contrastive"] == 0.3
    grouped = SimulationSettings(network="conv-gn", device="cpu")
    assert _build("sae", grouped, 3, 100, 0).sae_params["network"] == "conv-gn"
    assert _build("classifier", grouped, 3, 100, 0).network == "conv-gn"
    assert model.sae_params["flip"] is True and model.test_time_flip is False
    classifier = _build("classifier", s, n_classes=3, pool=100, seed=0)
    assert classifier.max_shift == 2 and classifier.flip is True and classifier.test_time_flip is False
    assert model.sae_params["cutout"] == 5 and classifier.cutout == 5, "cutout for both"
    s.test_time_flip = True
    assert _build("sae", s, 3, 100, 0).test_time_flip and _build("ae", s, 3, 100, 0).test_time_flip
    assert _build("classifier", s, 3, 100, 0).test_time_flip, "test-time flips for every model alike"


def test_network_reaches_every_model_and_the_typicality_start(monkeypatch) -> None:
    from model.encoder_classifier import EncoderClassifier

    networks = record_fits(monkeypatch, lambda m, _: (
        m.lam, any(isinstance(x, torch.nn.BatchNorm2d) for x in m.encoder_.modules())))
    s = SimulationSettings(**TYPICAL_TINY, network="conv-bn")
    run_one(load_digits_dataset(), s, "sae", "margin", seed=0, log=lambda _: None)
    assert networks[0] == (0.0, True), "the plain autoencoder of the typicality start"
    assert [bn for _, bn in networks[1:]] == [True, True] and networks[1][0] == s.lam
    classifier = _build("classifier", s, n_classes=3, pool=100, seed=0)
    assert isinstance(classifier, EncoderClassifier) and classifier.network == "conv-bn"


def test_typical_epochs_train_only_the_typicality_start(monkeypatch) -> None:
    epochs = record_fits(monkeypatch, lambda m, _: (m.lam, m.epochs))
    for typical in ({}, {"epochs": 3}):
        s = SimulationSettings(**TYPICAL_TINY, typical_params=typical)
        run_one(load_digits_dataset(), s, "sae", "margin", seed=0, log=lambda _: None)
    assert epochs == [(0.0, 1), (s.lam, 1), (s.lam, 1), (0.0, 3), (s.lam, 1), (s.lam, 1)]


def test_typical_params_reach_only_the_typicality_start(monkeypatch) -> None:
    seen = record_fits(monkeypatch, lambda m, _: (m.lam, m.latent_dim, m.contrastive))
    s = SimulationSettings(**TYPICAL_TINY, typical_params={"latent_dim": 6, "contrastive": 0.5})
    curve = run_one(load_digits_dataset(), s, "sae", "margin", seed=0, log=lambda _: None)
    assert seen == [(0.0, 6, 0.5), (s.lam, 10, 0.0), (s.lam, 10, 0.0)]
    assert [p["labeled"] for p in curve] == [20, 30]


def test_init_from_start_hands_the_start_s_networks_to_the_first_training(monkeypatch) -> None:
    from service.simulate import _split, _start

    seen = record_fits(monkeypatch, lambda m, _: (m.lam, m.encoder, m.encoder_))
    s = SimulationSettings(**TYPICAL_TINY, init_from_start=True)
    ds = load_digits_dataset()
    run_one(ds, s, "sae", "margin", seed=0, log=lambda _: None)
    start = _start(ds.x_train[_split(ds, s, 0)[0]], s, 0)[1]
    assert seen[0][:2] == (0.0, None) and seen[0][2] is start.encoder_, "the start's own autoencoder, from scratch"
    assert [lam for lam, _, _ in seen[1:]] == [s.lam, s.lam]
    assert all(given is start.encoder_ for _, given, _ in seen[1:]), "the SAE is handed the start's encoder"
    assert all(trained is not start.encoder_ for _, _, trained in seen[1:]), "and trains a copy, not the start's"
    plain = record_fits(monkeypatch, lambda m, _: m.encoder)
    run_one(ds, SimulationSettings(**TYPICAL_TINY), "sae", "margin", seed=0, log=lambda _: None)
    assert plain == [None, None, None], "off by default: every training builds its own networks"
    with pytest.raises(SimulationError, match="latent_dim"):
        SimulationSettings(**TYPICAL_TINY, init_from_start=True, typical_params={"latent_dim": 6}).validate()


def test_init_features_only_keeps_the_start_s_features_and_starts_the_code_maps_afresh(monkeypatch) -> None:
    from service.simulate import _split, _start

    given = record_fits(monkeypatch, lambda m, _: (m.encoder, m.decoder))
    s = SimulationSettings(**TYPICAL_TINY, init_from_start=True, init_features_only=True)
    ds = load_digits_dataset()
    run_one(ds, s, "sae", "margin", seed=0, log=lambda _: None)
    start = _start(ds.x_train[_split(ds, s, 0)[0]], s, 0)[1]
    encoder, decoder = given[1]
    assert encoder is not start.encoder_ and decoder is not start.decoder_, "copies: the cached start is untouched"
    same = [torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), start.encoder_.state_dict().values(),
                                              strict=True)]
    assert all(same[:-2]) and not any(same[-2:]), "all but the last linear layer (weight, bias) are the start's"
    same = [torch.equal(a, b) for a, b in zip(decoder.state_dict().values(), start.decoder_.state_dict().values(),
                                              strict=True)]
    assert not any(same[:2]) and all(same[2:]), "every decoder layer but the first linear is the start's"
    with pytest.raises(SimulationError, match="it takes no --members"):
        SimulationSettings(**TYPICAL_TINY, init_from_start=True, members=2).validate()
    with pytest.raises(SimulationError, match="--init-features-only needs --init-from-start"):
        SimulationSettings(**TYPICAL_TINY, init_features_only=True).validate()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("network", "resnet", "--network must be one of"), ("initial_strategy", "k-center", "--initial-strategy"),
    ("validation_size", 0, "--validation-size"),
    ("self_training", -1.0, "--self-training"), ("consistency", -1.0, "--consistency"),
    ("semi_supervised_from", -1, "--semi-supervised-from"), ("mixup", -0.1, "--mixup"), ("lr", 0.0, "--lr"),
    ("cutout", -1, "--cutout"), ("weight_decay", -0.1, "--weight-decay"),
    ("weight_decay", float("nan"), "--weight-decay"), ("lr_schedule", "step", "--lr-schedule"),
    ("ema_decay", 1.0, "--ema-decay"), ("ema_decay", -0.1, "--ema-decay"), ("mean_teacher", True, "--mean-teacher"),
    ("contrastive", -0.1, "--contrastive"), ("typical_params", {"epochs": -1}, "--typical-param: epochs"),
    ("typical_params", {"lam": 0.5}, "--typical-param lam"),
    ("init_from_start", True, "--init-from-start needs --initial-strategy typicality"),
    ("members", 0, "--members must be at least 1"),
    ("consistency", 1.0, "--consistency compares two augmentations"),
    ("typical_params", {"latent_dim": 0}, "--typical-param: latent_dim must be at least 1"),
    ("typical_params", {"lr": -1e-3}, "--typical-param: lr must be non-negative"),
    ("typical_params", {"lr": float("nan")}, "--typical-param: lr must be non-negative"),
    ("typical_params", {"contrastive": -1}, "--typical-param: contrastive must be non-negative")])
def test_bad_protocol_settings(field: str, value, message: str) -> None:
    s = SimulationSettings(**{field: value})
    with pytest.raises(SimulationError, match=message):
        s.validate()


def test_summary_table() -> None:
    runs = [{"model": "sae", "strategy": "margin", "seed": s,
             "curve": [{"labeled": 10, "test_error": e, "train_seconds": 0.1},
                       {"labeled": 20, "test_error": e / 2, "train_seconds": 0.1}]} for s, e in ((0, 0.2), (1, 0.4))]
    lines = summary_table(runs).splitlines()
    assert lines[0].split() == ["model+strategy", "10", "20"]
    assert lines[2].split() == ["sae+margin", "30.0%", "15.0%"]


def run_cli(args: list[str], tmp_path, capsys) -> tuple[int, list[str]]:
    rc = main(["simulate", *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def test_unknown_dataset(tmp_path, capsys) -> None:
    rc, err = run_cli(["--dataset", "cifar"], tmp_path, capsys)
    assert rc == 2
    assert len(err) == 1
    assert err[0].startswith("sae-backend simulate: error: ")
    assert "unknown dataset 'cifar'" in err[0]
    assert not (tmp_path / "out").exists()


def test_missing_fashion_mnist_files(tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, err = run_cli(["--dataset", "fashion-mnist", "--data-path", str(empty)], tmp_path, capsys)
    assert rc == 2
    assert len(err) == 1
    assert str(empty) in err[0]
    assert "train-images-idx3-ubyte" in err[0]
    assert "apt-get install dataset-fashion-mnist" in err[0]


def test_bad_groups(tmp_path, capsys) -> None:
    rc, err = run_cli(["--groups", "0,1,2|3,4"], tmp_path, capsys)
    assert rc == 2
    assert len(err) == 1
    assert "are in no group" in err[0]


def test_initial_larger_than_pool(tmp_path, capsys) -> None:
    rc, err = run_cli(["--pool-size", "50", "--initial", "100"], tmp_path, capsys)
    assert rc == 2
    assert len(err) == 1
    assert "--initial 100 is larger than the pool (50 items)" in err[0]


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "sae,svm"], "unknown model 'svm'"),
    (["--strategy", "margin,bald"], "unknown strategy 'bald'"),
    (["--lam", "1.5"], "--lam must be in [0, 1]"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--latent-dim", "0"], "--latent-dim must be at least 1"),
    (["--rounds", "-1"], "must not be negative"),
    (["--max-shift", "-2"], "--max-shift must be non-negative, got -2"),
    (["--cutout", "-1"], "--cutout must be non-negative, got -1"),
    (["--lr", "0"], "--lr must be positive"),
    (["--weight-decay", "-0.1"], "--weight-decay must be non-negative"),
    (["--lr-schedule", "step"], "--lr-schedule must be one of constant, cosine"),
    (["--ema-decay", "1"], "--ema-decay must be in [0, 1)"),
    (["--mean-teacher"], "--mean-teacher needs the averaged weights: set --ema-decay > 0"),
])
def test_bad_settings(tmp_path, capsys, args: list[str], message: str) -> None:
    rc, err = run_cli(args, tmp_path, capsys)
    assert rc == 2
    assert len(err) == 1
    assert message in err[0]


def test_simulate_raises_simulation_error(tmp_path) -> None:
    with pytest.raises(SimulationError, match="unknown dataset"):
        simulate(SimulationSettings(dataset="nope"), tmp_path, log=lambda _: None)


def test_initial_equal_to_pool_is_allowed_when_no_rounds(tmp_path) -> None:
    s = SimulationSettings(models=["sae"], strategies=["random"], initial=60, rounds=0, seeds=1, pool_size=60,
                           test_size=50, epochs=1, device="cpu")
    result = simulate(s, tmp_path, log=lambda _: None)
    assert [p["labeled"] for p in result["runs"][0]["curve"]] == [60]
    assert np.isfinite(result["runs"][0]["curve"][0]["test_error"])


def test_cli_rejects_a_malformed_strategy_option(tmp_path, capsys) -> None:
    assert main(["simulate", "--strategy-option", "until", "--out", str(tmp_path)]) == 2
    assert "KEY=NUMBER" in capsys.readouterr().err
    assert main(["simulate", "--strategy", "margin", "--strategy-option", "until=300", "--out", str(tmp_path)]) == 2
    assert "none of the strategies" in capsys.readouterr().err


def test_cli_help_names_every_network_kind(capsys) -> None:
    """The help lists the kinds in words, so a new kind must reach it."""
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    network = help_text.split("--network NETWORK ")[-1].split(" --")[0]
    assert set(NETWORK_KINDS) <= set(re.split(r"[\s,/()]+", network)), network


def test_flag_settings_parse_to_their_defaults_and_take_every_kind_of_value() -> None:
    """Both command lines build their flags from SimulationSettings: a new setting is one field."""
    parser = argparse.ArgumentParser()
    add_flags(parser)
    assert from_flags(parser.parse_args([])) == SimulationSettings()
    s = from_flags(parser.parse_args(["--max-shift", "2", "--flip", "--channels", "8,16", "--lr", "0.01",
                                      "--class-distances", "d.json", "--typical-param", "epochs=3",
                                      "--strategy-option", "until=500"]), rounds=2)
    assert (s.max_shift, s.flip, s.channels, s.lr, s.class_distances) == (2, True, [8, 16], 0.01, "d.json")
    assert (s.typical_params, s.strategy_options, s.rounds) == ({"epochs": 3}, {"until": 500}, 2)
    assert sae_params(s)["channels"] == (8, 16) and sae_params(s)["max_shift"] == 2
    with pytest.raises(SimulationError, match="--typical-param wants KEY=NUMBER"):
        from_flags(parser.parse_args(["--typical-param", "epochs"]))


def test_a_calibration_holdout_reports_both_maps_on_the_same_model() -> None:
    ds = load_digits_dataset()
    s = SimulationSettings(initial=60, per_round=30, rounds=1, pool_size=400, test_size=100, epochs=2,
                           calibration_holdout=0.4, device="cpu")
    curve = run_one(ds, s, "sae", "margin", seed=0, log=lambda _: None)
    assert all(0 <= p["test_ece_calibrated_every_label"] <= 1 for p in curve)
    assert any(p["test_ece_calibrated_every_label"] != p["test_ece_calibrated"] for p in curve)
    with pytest.raises(SimulationError, match="calibration-holdout"):
        SimulationSettings(calibration_holdout=1.0).validate()


def test_the_stop_estimate_compares_only_stop_items_still_unlabeled(monkeypatch) -> None:
    compared = []
    real = simulate_module.agreement
    monkeypatch.setattr(simulate_module, "agreement", lambda a, b: compared.append(len(a)) or real(a, b))
    s = SimulationSettings(models=["ae"], strategies=["margin"], initial=20, per_round=15, rounds=2, seeds=1,
                           pool_size=150, test_size=100, epochs=2, device="cpu", stop_set_size=150)
    run_one(load_digits_dataset(), s, "ae", "margin", seed=0, log=lambda _: None)
    assert compared == [150 - 35, 150 - 50], "the whole pool is the stop set: its labeled items sit out"


def test_a_round_whose_stop_items_are_all_labeled_records_no_stop_estimate() -> None:
    s = SimulationSettings(models=["ae"], strategies=["margin"], initial=20, per_round=10, rounds=2, seeds=1,
                           pool_size=40, test_size=50, epochs=1, device="cpu", stop_set_size=40)
    curve = run_one(load_digits_dataset(), s, "ae", "margin", seed=0, log=lambda _: None)
    assert [p["labeled"] for p in curve] == [20, 30, 40]
    assert "stop_kappa" in curve[1] and "stop_kappa" not in curve[2], "no item left to compare: no NaN written"
