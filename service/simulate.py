"""Offline active-learning simulator: an oracle reveals the labels a strategy asks for.

Every (model, strategy, seed) run starts from the same initial labels for that seed
(random, or the typicality cold start), retrains each round (warm start unless
``warm_start=False``, which trains from scratch every round) and measures error, so the
curves compare label efficiency and nothing else. With ``validation_size`` a validation
set is carved from the training split outside the pool: settings are chosen on
``val_error``, the test split only gives final numbers. Each round also records the
stop estimate (Cohen's kappa with the previous round's predictions on a fixed stop set).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from connectors.datasets import Dataset, DatasetError, load_dataset
from model.acquisition import TypicalitySampling, get_strategy, parse_option, rank, strategy_options
from model.calibration import expected_calibration_error, reliability
from model.encoder_classifier import EncoderClassifier
from model.latent_svm import LatentSVM
from model.networks import NETWORK_KINDS
from model.sae import StructuringAutoencoder
from model.sae_classifier import PASSED_SAE_PARAMS, SAEClassifier
from model.stopping import agreement, should_stop
from model.targets import load_distance_matrix

MODELS = ("sae", "ae", "classifier")
INITIAL = ("random", "typicality")
# what --typical-param may set on the typicality start's plain autoencoder (numbers that act without labels)
TYPICAL_PARAMS = frozenset({"epochs", "latent_dim", "contrastive", "max_shift", "cutout", "lr", "weight_decay",
                            "batch_size"})


class SimulationError(ValueError):
    """Bad simulator input; the message is meant for the user as is."""


def _flag(default: object = None, help: str | None = None, **spec: object) -> Any:
    """A setting that both the ``simulate`` command and the benchmark take as a flag (see :func:`add_flags`)."""
    factory = {"default_factory": lambda: list(default)} if isinstance(default, list) else \
        {"default_factory": dict} if isinstance(default, dict) else {"default": default}
    return field(**factory, metadata={"flag": {"help": help, **spec}})


@dataclass
class SimulationSettings:
    """What one simulation runs. Fields made with ``_flag`` are flags of both command lines: a new model
    setting is one such field (and, when the autoencoder takes it as it is, nothing else here)."""

    dataset: str = "digits"
    data_path: str | None = None
    groups: str | None = None
    models: list[str] = field(default_factory=lambda: ["sae", "ae", "classifier"])
    strategies: list[str] = field(default_factory=lambda: ["margin", "random"])
    initial: int = 100
    per_round: int = 100
    rounds: int = 5
    seeds: int = 3
    pool_size: int | None = _flag(None, "pool items drawn from the training split (default: all)")
    test_size: int | None = _flag(None, "test items (default: the whole test split)")
    epochs: int = 20
    warm_epochs: int | None = None
    warm_steps: int | None = _flag(None, "optimiser steps per warm-started SAE epoch (SAE_WARM_STEPS); "
                                         "default a full pass")
    latent_dim: int = _flag(10, "latent size")
    lam: float = _flag(0.9, "λ: the structure term's weight against reconstruction")
    batch_size: int = _flag(256, "items a batch")
    labeled_per_batch: int = _flag(64, "labeled items in every SAE batch")
    channels: list[int] = _flag([32, 64, 128], "conv encoder channels, comma-separated")  # noqa: RUF009 - _flag returns a field()
    network: str = _flag("auto", "auto, conv, conv-bn / conv-gn (batch- / group-normalised encoder), conv-res "
                                 "(residual) or mlp")
    max_shift: int = _flag(0, "shift training images by up to this many pixels")
    flip: bool = _flag(False, "mirror half the training images left-right (not for digits)")
    cutout: int = _flag(0, "blank a SIDE x SIDE square of every training image (0: off)", metavar="SIDE")
    test_time_flip: bool = _flag(False, "code (or score) an image as the mean of it and its mirror image, "
                                        "for every model")
    members: int = _flag(1, "autoencoders per model from different seeds, their codes read side by side "
                            "(an ensemble)")
    class_distances: str | None = _flag(None, "JSON distances between the data set's class names, as "
                                              "CLASS_DISTANCES (default: all classes equally apart)",
                                        metavar="FILE")
    warm_start: bool = True
    validation_size: int | None = _flag(None, "validation items carved from the training split (choose "
                                              "settings on them)")
    initial_strategy: str = _flag("random", "the first labels: random or typicality (cold start)")
    typical_params: dict[str, float] = _flag({}, "a setting of the typicality start's autoencoder alone, e.g. "  # noqa: RUF009
                                                 "epochs=20 or latent_dim=32 (repeatable)", name="--typical-param")
    init_from_start: bool = _flag(False, "the SAE's first training starts from the typicality start's "
                                         "autoencoder, not from scratch")
    init_features_only: bool = _flag(False, "with --init-from-start: the linear maps to and from the code "
                                            "start fresh")
    calibration_holdout: float = _flag(0.0, "share of labeled items the autoencoder treats as unlabeled, on which "
                                            "alone the confidence map is fitted (SAE; 0: off)")
    self_training: float = _flag(0.0, "weight of pseudo-labeled items in the structure term (0: off)")
    self_training_threshold: float = _flag(0.9, "confidence a pseudo-label needs")
    consistency: float = _flag(0.0, "weight of code agreement under two random augmentations (shifts, flips, "
                                    "cutouts), relative to the structure term (0: off)")
    semi_supervised_from: int = _flag(0, "self-training and consistency stay off below this many labels "
                                         "(their schedule)", metavar="LABELS")
    mixup: float = _flag(0.0, "weight of blended labeled pairs (SAE: pulled to the blend of their class "
                              "positions; classifier: blended labels; 0: off)")
    lr: float = _flag(1e-3, "the SAE's Adam learning rate (the classifier keeps its own)")
    weight_decay: float = _flag(0.0, "the SAE's decoupled weight decay (AdamW; 0: off)")
    lr_schedule: str = _flag("constant", "the SAE's Adam step within a round: constant, or cosine (annealed to "
                                         "zero every round)")
    ema_decay: float = _flag(0.0, "keep a moving average of the SAE's weights over a round, with this decay "
                                  "(0: off)")
    mean_teacher: bool = _flag(False, "the consistency term's second view is encoded by the averaged weights "
                                      "(needs --ema-decay)")
    contrastive: float = _flag(0.0, "weight of a SimCLR loss between each image's code and its random crop's "
                                    "(0: off)")
    strategy_options: dict[str, float] = _flag({}, "a query strategy's setting, e.g. until=500 for "  # noqa: RUF009
                                                   "typicality-margin (repeatable)", name="--strategy-option")
    stop_set_size: int = 1000
    device: str = _flag("auto", "auto, cpu, cuda[:N] or mps")

    def validate(self) -> None:
        bad = [m for m in self.models if m not in MODELS]
        if bad:
            raise SimulationError(f"unknown model {bad[0]!r}: choose from {', '.join(MODELS)}")
        for s in self.strategies:
            try:
                get_strategy(s, options=self.options_for(s))
            except ValueError as e:
                raise SimulationError(str(e)) from None
        unused = set(self.strategy_options) - {k for s in self.strategies for k in self.options_for(s)}
        if unused:
            raise SimulationError(f"--strategy-option {sorted(unused)[0]}: none of the strategies "
                                  f"({', '.join(self.strategies)}) takes it")
        if self.network not in NETWORK_KINDS:
            raise SimulationError(f"--network must be one of {', '.join(NETWORK_KINDS)}, got {self.network!r}")
        for name in ("initial", "seeds", "epochs", "latent_dim"):
            if getattr(self, name) < 1:
                raise SimulationError(f"--{name.replace('_', '-')} must be at least 1")
        unknown = set(self.typical_params) - TYPICAL_PARAMS
        if unknown:
            raise SimulationError(f"--typical-param {sorted(unknown)[0]}: the start's autoencoder takes "
                                  f"{', '.join(sorted(TYPICAL_PARAMS))}")
        if self.init_from_start and self.initial_strategy != "typicality":
            raise SimulationError("--init-from-start needs --initial-strategy typicality (it trains the start)")
        if self.consistency > 0 and not (self.max_shift > 0 or self.flip or self.cutout > 0):
            raise SimulationError("--consistency compares two augmentations of an item: add --max-shift, --flip or "
                                  "--cutout (as SAE_CONSISTENCY needs SAE_MAX_SHIFT or SAE_FLIP)")
        if self.members < 1:
            raise SimulationError(f"--members must be at least 1, got {self.members}")
        if self.init_from_start and self.members > 1:
            raise SimulationError("--init-from-start starts one autoencoder; it takes no --members")
        if self.init_features_only and not self.init_from_start:
            raise SimulationError("--init-features-only needs --init-from-start")
        if self.init_from_start and self.typical_params.get("latent_dim", self.latent_dim) != self.latent_dim:
            raise SimulationError("--init-from-start needs the start's latent_dim to be --latent-dim")
        params = dict(lam=self.lam, latent_dim=self.latent_dim, epochs=self.epochs, **sae_params(self))
        try:
            StructuringAutoencoder(**params).check_params()
        except ValueError as e:
            words = "|".join(sorted(params, key=len, reverse=True))
            raise SimulationError(re.sub(rf"\b({words})\b", lambda m: "--" + m[1].replace("_", "-"), str(e))) from None
        try:
            StructuringAutoencoder(lam=0.0, **self.typical_params).check_params()
        except ValueError as e:
            raise SimulationError(f"--typical-param: {e}") from None
        if self.warm_steps is not None and self.warm_steps < 1:
            raise SimulationError("--warm-steps must be at least 1")
        if self.per_round < 0 or self.rounds < 0:
            raise SimulationError("--per-round and --rounds must not be negative")
        if self.initial_strategy not in INITIAL:
            raise SimulationError(f"--initial-strategy must be one of {', '.join(INITIAL)}")
        if self.validation_size is not None and self.validation_size < 1:
            raise SimulationError("--validation-size must be at least 1")
        if self.self_training < 0 or not 0 <= self.self_training_threshold <= 1:
            raise SimulationError("--self-training must not be negative and its threshold must be in [0, 1]")
        if self.semi_supervised_from < 0:
            raise SimulationError("--semi-supervised-from must not be negative")
        if not 0 <= self.calibration_holdout < 1:
            raise SimulationError("--calibration-holdout must be in [0, 1)")
        if not self.lr > 0:
            raise SimulationError(f"--lr must be positive, got {self.lr}")

    def options_for(self, strategy: str) -> dict[str, float]:
        """The strategy options that ``strategy`` takes (one option may serve several strategies)."""
        try:
            known = strategy_options(strategy)
        except KeyError:
            return {}
        return {k: v for k, v in self.strategy_options.items() if k in known}


def parse_options(pairs: list[str], flag: str = "--strategy-option") -> dict[str, float]:
    """``["until=500"]`` -> ``{"until": 500}``: numbers stay ints where they are whole."""
    out: dict[str, float] = {}
    for pair in pairs:
        parsed = parse_option(pair)
        if parsed is None:
            raise SimulationError(f"{flag} wants KEY=NUMBER, got {pair!r}")
        out[parsed[0]] = parsed[1]
    return out


_TYPES: dict[str, Callable[[str], object]] = {"int": int, "float": float, "str": str, "int | None": int,
                                              "str | None": str, "list[int]": lambda v: [int(c) for c in v.split(",")
                                                                                         if c.strip()]}


def _flag_name(f: Field) -> str:
    return f.metadata["flag"].get("name", "--" + f.name.replace("_", "-"))


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Every ``_flag`` setting as a flag (``--max-shift`` for ``max_shift``), for both command lines."""
    for f in fields(SimulationSettings):
        spec = f.metadata.get("flag")
        if spec is None:
            continue
        name, kw = _flag_name(f), {"dest": f.name, "help": spec["help"]}
        if f.type == "bool":
            parser.add_argument(name, action="store_true", **kw)
        elif f.type.startswith("dict"):
            parser.add_argument(name, action="append", default=[], metavar="KEY=VALUE", **kw)
        else:
            default = f.default_factory() if f.default is MISSING else f.default
            parser.add_argument(name, type=_TYPES[f.type], default=default, metavar=spec.get("metavar"), **kw)


def from_flags(args: argparse.Namespace, **others: object) -> SimulationSettings:
    """The settings ``add_flags`` parsed, with ``others`` (each command line's own) filled in."""
    values: dict[str, object] = {}
    for f in fields(SimulationSettings):
        spec = f.metadata.get("flag")
        if spec is not None:
            value = getattr(args, f.name)
            values[f.name] = parse_options(value, _flag_name(f)) if f.type.startswith("dict") else value
    return SimulationSettings(**values, **others)


def _classifier_steps(epochs: int, pool: int, batch_size: int) -> int:
    """The classifier gets as many optimiser steps as the SAE (one per pool batch), at least 300."""
    return max(300, epochs * math.ceil(pool / batch_size))


def sae_params(s: SimulationSettings) -> dict:
    """The autoencoder's settings that the simulator passes through as they are (checked by the model).

    Every setting named as the autoencoder's own parameter; ``class_distances`` is a file here, read per data set.
    """
    out = {k: getattr(s, k) for k in PASSED_SAE_PARAMS if hasattr(s, k) and k != "class_distances"}
    return {**out, "channels": tuple(s.channels)}


def class_distances(s: SimulationSettings, ds: Dataset) -> np.ndarray | None:
    """``--class-distances`` in the data set's class order (None: all classes equally far apart)."""
    if s.class_distances is None:
        return None
    try:
        return load_distance_matrix(s.class_distances, ds.class_names)
    except (OSError, ValueError) as e:
        raise SimulationError(f"--class-distances {s.class_distances}: {e}") from None


def _build(model: str, s: SimulationSettings, n_classes: int, pool: int, seed: int,
           distances: np.ndarray | None = None):
    common = dict(latent_dim=s.latent_dim, device=s.device, random_state=seed)
    if model in ("sae", "ae"):
        return SAEClassifier(class_names=[str(i) for i in range(n_classes)], lam=s.lam if model == "sae" else 0.0,
                             epochs=s.epochs, sae_params=sae_params(s) | {"class_distances": distances},
                             self_training=s.self_training,
                             self_training_threshold=s.self_training_threshold,
                             semi_supervised_from=s.semi_supervised_from, test_time_flip=s.test_time_flip,
                             members=s.members, calibration_holdout=s.calibration_holdout,
                             **common)
    steps = _classifier_steps(s.epochs, pool, s.batch_size)
    return EncoderClassifier(n_classes=n_classes, epochs=s.epochs, min_steps=steps, channels=tuple(s.channels),
                             network=s.network, max_shift=s.max_shift, flip=s.flip, cutout=s.cutout,
                             test_time_flip=s.test_time_flip, mixup=s.mixup, **common)


def _split(ds: Dataset, s: SimulationSettings, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pool and validation (from the training split, disjoint) and test positions.

    The pool is drawn first, exactly as without a validation set, so test numbers stay
    comparable with earlier runs; the validation set comes from the training items left
    outside the pool, or is carved out of the pool when nothing is left.
    """
    rng = np.random.default_rng(10_000 + seed)
    pool = np.arange(len(ds.x_train))
    if s.pool_size is not None and s.pool_size < len(pool):
        pool = np.sort(rng.choice(pool, s.pool_size, replace=False))
    val = np.zeros(0, np.int64)
    if s.validation_size:
        vr = np.random.default_rng(20_000 + seed)
        rest = np.setdiff1d(np.arange(len(ds.x_train)), pool)
        if len(rest) >= s.validation_size:
            val = np.sort(vr.choice(rest, s.validation_size, replace=False))
        else:
            if s.validation_size >= len(pool):
                raise SimulationError(f"--validation-size {s.validation_size} leaves no pool")
            val = np.sort(vr.choice(pool, s.validation_size, replace=False))
            pool = np.setdiff1d(pool, val)
    test = np.arange(len(ds.x_test))
    if s.test_size is not None and s.test_size < len(test):
        test = np.sort(np.random.default_rng(99).choice(test, s.test_size, replace=False))
    return pool, val, test


_TYPICAL: dict[tuple, tuple[np.ndarray, StructuringAutoencoder]] = {}


def _initial(x: np.ndarray, s: SimulationSettings, seed: int) -> np.ndarray:
    """The first labels: at random, or the typicality cold start on a plain autoencoder's codes.

    The typical start is computed once per pool, seed and setting and reused, so every model and
    strategy of a seed starts from the same labels even where training is not bit-reproducible.
    """
    rng = np.random.default_rng(seed)
    if s.initial_strategy == "random":
        return rng.choice(len(x), s.initial, replace=False)
    return _start(x, s, seed)[0].copy()


def _start(x: np.ndarray, s: SimulationSettings, seed: int) -> tuple[np.ndarray, StructuringAutoencoder]:
    """The typicality start's picks and its fitted plain autoencoder, computed once per pool, seed and setting."""
    key = (x.shape, float(x.reshape(len(x), -1)[:, ::7].sum()), seed, s.initial, s.epochs, s.latent_dim,
           tuple(s.channels), s.network, s.max_shift, s.flip, s.device, tuple(sorted(s.typical_params.items())))
    if key not in _TYPICAL:
        _TYPICAL[key] = _typical_start(x, s, seed)
    return _TYPICAL[key]


def _typical_start(x: np.ndarray, s: SimulationSettings, seed: int) -> tuple[np.ndarray, StructuringAutoencoder]:
    params = dict(latent_dim=s.latent_dim, batch_size=s.batch_size, max_shift=s.max_shift, epochs=s.epochs) | \
        s.typical_params
    ae = StructuringAutoencoder(lam=0.0, channels=tuple(s.channels), network=s.network,
                                flip=s.flip, device=s.device, random_state=seed, **params).fit(x)
    return TypicalitySampling(random_state=seed).first(ae.transform(x), s.initial), ae


def _fresh_code_maps(encoder: torch.nn.Module, decoder: torch.nn.Module,
                     seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Copies whose last encoder and first decoder linear layers start afresh: pretrained features, a new code scale."""
    encoder, decoder = copy.deepcopy(encoder), copy.deepcopy(decoder)
    torch.manual_seed(seed)
    [m for m in encoder.modules() if isinstance(m, torch.nn.Linear)][-1].reset_parameters()
    next(m for m in decoder.modules() if isinstance(m, torch.nn.Linear)).reset_parameters()
    return encoder, decoder


def _confidence(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and the confidence each model reports: the SAE's normalised margin, the classifier's softmax."""
    if isinstance(model, SAEClassifier):
        return model.predict_confidence(x)
    p = model.predict_proba(x)
    return p.argmax(axis=1), p.max(axis=1)


def _scores(model, x: np.ndarray, with_codes: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Class scores, and the latent codes when the strategy reads them (encoded once)."""
    if not with_codes:
        return model.decision_function(x), None
    z = model.transform(x)
    if isinstance(model, SAEClassifier):
        return model.svm_.decision_function(z), z
    return model.decision_function(x), z


def run_one(ds: Dataset, s: SimulationSettings, model_name: str, strategy_name: str, seed: int,
            log: Callable[[str], None] = print, probe: Callable[..., dict] | None = None) -> list[dict]:
    """One learning curve: ``rounds + 1`` points from ``initial`` labels upwards.

    ``probe(model, x, y, x_val, y_val, x_test, y_test)``, when given, is called after every fit
    and its dict is stored in the round's point, so a benchmark can read other heads or
    measures on the very model the curve trains, without a second training run.
    """
    pool, val, test = _split(ds, s, seed)
    x, y_true = ds.x_train[pool], ds.y_train[pool]
    x_test, y_test = ds.x_test[test], ds.y_test[test]
    x_val, y_val = ds.x_train[val], ds.y_train[val]
    y = np.full(len(pool), -1, dtype=np.int64)
    first = _initial(x, s, seed)
    y[first] = y_true[first]
    stop_items = np.sort(np.random.default_rng(30_000 + seed).choice(
        len(pool), min(s.stop_set_size, len(pool)), replace=False))
    previous, kappas = None, []
    model = _build(model_name, s, ds.n_classes, len(pool), seed, class_distances(s, ds))
    if s.init_from_start and isinstance(model, SAEClassifier):
        ae = _start(x, s, seed)[1]
        encoder, decoder = _fresh_code_maps(ae.encoder_, ae.decoder_, seed) if s.init_features_only else (
            ae.encoder_, ae.decoder_)
        model.sae_params = {**model.sae_params, "encoder": encoder, "decoder": decoder}
    strategy = get_strategy(strategy_name, random_state=seed, options=s.options_for(strategy_name))
    curve = []
    for r in range(s.rounds + 1):
        t0 = time.perf_counter()
        model.fit(x, y)
        seconds = time.perf_counter() - t0
        pred, conf = _confidence(model, x_test)
        err = float(np.mean(pred != y_test))
        n_lab = int((y >= 0).sum())
        point = {"labeled": n_lab, "test_error": round(err, 5), "train_seconds": round(seconds, 3),
                 "test_ece": round(expected_calibration_error(conf, pred == y_test), 5),
                 "test_reliability": reliability(conf, pred == y_test)}
        if r == 0:  # which training items the run started from: runs paired by seed should share it
            point["start"] = hashlib.sha256(np.sort(pool[first]).astype(np.int64).tobytes()).hexdigest()[:16]
        if isinstance(model, SAEClassifier):
            prob = model.svm_.probability_from_confidence(conf)
            point["test_ece_calibrated"] = round(expected_calibration_error(prob, pred == y_test), 5)
            point["test_reliability_calibrated"] = reliability(prob, pred == y_test)
            if s.calibration_holdout > 0:  # the same model's map fitted on every label, as without the holdout
                lab = y >= 0
                every = LatentSVM(n_classes=model.n_classes_, C=model.svm_C).fit(model.transform(x[lab]), y[lab])
                point["test_ece_calibrated_every_label"] = round(expected_calibration_error(
                    every.probability_from_confidence(conf), pred == y_test), 5)
        if len(val):
            point["val_error"] = round(float(np.mean(model.predict(x_val) != y_val)), 5)
        if probe is not None:
            point["probe"] = probe(model, x, y, x_val, y_val, x_test, y_test)
        stop_pred = model.predict(x[stop_items])
        unlabeled = y[stop_items] < 0  # as the service: the stop items still unlabeled, whose flips no label made
        if previous is not None and unlabeled.any():
            kappas.append(agreement(previous[unlabeled], stop_pred[unlabeled]))
            point["stop_kappa"] = round(kappas[-1], 5)
            point["stop"] = should_stop(kappas)
        previous = stop_pred
        curve.append(point)
        log(f"  {model_name}+{strategy_name} seed {seed} round {r}: {n_lab} labels, "
            f"test error {100 * err:.1f} %"
            + (f", validation {100 * point['val_error']:.1f} %" if len(val) else "")
            + (f", kappa {point['stop_kappa']:.3f}" if "stop_kappa" in point else "") + f", {seconds:.1f} s")
        if r == s.rounds:
            break
        unl = np.flatnonzero(y < 0)
        if len(unl) == 0:
            break
        if strategy.needs_labeled:  # scores every pool item; the labeled ones are context, not candidates
            d, z = _scores(model, x, True)
            picked = rank(strategy, d, s.per_round, candidates=y < 0, codes=z).top.indices
        else:  # the unlabeled items only, as every earlier curve was run (a random strategy's draws stay the same)
            d, z = _scores(model, x[unl], strategy.needs_codes)
            picked = unl[rank(strategy, d, s.per_round, codes=z).top.indices]
        y[picked] = y_true[picked]
        if s.warm_start:
            # codes every label pulled (held ones too) are not warm-started from: the next fit trains anew, in full
            fresh = isinstance(model, SAEClassifier) and not model.keeps_networks(y)
            warm = s.warm_epochs if s.warm_epochs is not None and not fresh else s.epochs
            model.set_params(warm_start=True, epochs=warm)
            if s.warm_steps is not None and isinstance(model, SAEClassifier):
                steps = None if fresh else s.warm_steps
                model.set_params(sae_params={**(model.sae_params or {}), "steps_per_epoch": steps})
            if isinstance(model, EncoderClassifier):
                model.set_params(min_steps=_classifier_steps(warm, len(pool), s.batch_size))
    return curve


def summary_table(runs: Sequence[dict]) -> str:
    """Mean test error (%) over seeds, one row per model+strategy, one column per label count."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in runs:
        groups[(r["model"], r["strategy"])].append(r)
    labels = sorted({p["labeled"] for r in runs for p in r["curve"]})
    head = f"{'model+strategy':<26}" + "".join(f"{n:>8}" for n in labels)
    lines = [head, "-" * len(head)]
    for (m, st), rs in sorted(groups.items()):
        cells = []
        for n in labels:
            vals = [p["test_error"] for r in rs for p in r["curve"] if p["labeled"] == n]
            cells.append(f"{100 * np.mean(vals):>7.1f}%" if vals else f"{'':>8}")
        lines.append(f"{m + '+' + st:<26}" + "".join(cells))
    return "\n".join(lines)


def simulate(s: SimulationSettings, out: str | Path, log: Callable[[str], None] = print) -> dict:
    """Run every model x strategy x seed, write ``curve.json`` and ``curve.png`` into ``out``."""
    s.validate()
    try:
        ds = load_dataset(s.dataset, s.data_path, s.groups)
    except DatasetError as e:
        raise SimulationError(str(e)) from None
    pool_n = min(s.pool_size or len(ds.x_train), len(ds.x_train))
    if s.initial > pool_n:
        raise SimulationError(f"--initial {s.initial} is larger than the pool ({pool_n} items)")
    distances = class_distances(s, ds)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"{ds.name}: pool {pool_n}, test {min(s.test_size or len(ds.x_test), len(ds.x_test))}, "
        f"{ds.n_classes} classes")
    runs = []
    result = {"settings": asdict(s) | {"class_names": ds.class_names}, "runs": runs}
    if distances is not None:
        result["settings"]["class_distance_matrix"] = distances.tolist()
    for seed in range(s.seeds):
        for m in s.models:
            for st in s.strategies:
                curve = run_one(ds, s, m, st, seed, log)
                runs.append({"model": m, "strategy": st, "seed": seed, "curve": curve})
                (out / "curve.json").write_text(json.dumps(result, indent=1))
    from service.plots import learning_curve_png

    (out / "curve.png").write_bytes(learning_curve_png(runs, title=ds.name))
    log(summary_table(runs))
    log(f"wrote {out / 'curve.json'} and {out / 'curve.png'}")
    return result
