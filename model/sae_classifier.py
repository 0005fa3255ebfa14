"""SAE + linear SVM: the model the backend trains, serves and ranks with."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from model.calibration import holdout
from model.latent_svm import LatentSVM
from model.sae import StructuringAutoencoder, set_n_features

# Autoencoder settings the classifier sets itself, each with the classifier's parameter that sets it.
RESERVED_SAE_PARAMS = {"latent_dim": "latent_dim", "lam": "lam", "epochs": "epochs", "n_classes": "class_names",
                       "device": "device", "random_state": "random_state", "verbose": "verbose",
                       "pseudo_weight": "self_training", "warm_start": "warm_start"}
# The autoencoder settings that travel in ``sae_params`` as they are (its user-given networks and callback
# aside): saved with every version, and what the simulator and the service pass through, so a new
# autoencoder hyperparameter needs no list of its own anywhere.
PASSED_SAE_PARAMS = tuple(k for k in StructuringAutoencoder._get_param_names()
                          if k not in RESERVED_SAE_PARAMS and k not in ("encoder", "decoder", "on_epoch"))


def _training_copy(sae: StructuringAutoencoder) -> StructuringAutoencoder:
    """A copy whose fitted networks train apart from ``sae``'s. What the user gave stays shared: the network pair new
    networks are copied from (a warm start knows it by identity) and the epoch callback (a bound method's object may
    hold a lock, and its progress belongs to the caller)."""
    given = {id(obj): obj for obj in (sae.encoder, sae.decoder, sae.on_epoch) if obj is not None}
    return copy.deepcopy(sae, memo=given)


class SAEClassifier(ClassifierMixin, BaseEstimator):
    """Fits a :class:`StructuringAutoencoder` on the whole pool and a :class:`LatentSVM` on the labeled codes.

    ``y`` holds class indices and ``-1`` for unlabeled items; ``class_names`` (optional)
    fixes the number of classes and travels with the saved model. Extra keyword
    arguments in ``sae_params`` go to the autoencoder. ``self_training > 0`` makes a
    warm-started fit pseudo-label the unlabeled items the previous fit was confident of
    (normalised confidence >= ``self_training_threshold``) and pull them towards their
    class with that weight (see :class:`StructuringAutoencoder`); it costs one extra
    encoding pass over the pool. ``semi_supervised_from`` is their schedule: below that many
    labels both self-training and the autoencoder's ``consistency`` term are off for a fit
    (the fitted autoencoder keeps the user's setting), presumably because with few labels the
    confident classes and the class positions they pull towards are still wrong (measured:
    consistency always on was behind at 200-700 labels and ahead at 1,000).
    ``test_time_flip`` makes an image's code the mean of its own and its mirror image's codes
    (images only; vectors pass unchanged), for a model trained with flips: the SVM, its
    calibration, the ranking and the served predictions all see that code, at twice the
    encoding cost.
    ``members > 1`` trains that many autoencoders from different seeds on the same data (a deep
    ensemble, Lakshminarayanan et al. 2017; Beluch et al. 2018 for active learning) and the SVM
    reads their codes side by side, at ``members`` times the training and encoding cost (with the
    user's own networks, each member after the first resets their layers under its own seed);
    ``sae_`` is the first, which draws the latent picture and morphs.
    ``calibration_holdout`` is the share of labeled items the autoencoder treats as unlabeled
    (picked by a hash of their ``ids``, so the same ones stay out of every warm-started version):
    the SVM still learns from them, and the map from confidence to probability is fitted on them
    alone, items whose labels the codes were never pulled by (on the labels the structure term
    did pull, a held-out SVM is still far more often right than on the pool). A ``warm_start`` fit
    trains new networks instead (``warm_started_`` says which it did) when the previous fit's codes
    may have been pulled by labels this one holds out: another holdout share, or a previous fit whose
    few labels all pulled (``pulled_held_``). A ``warm_start`` fit trains copies of the fitted networks, so a fit
    that fails leaves the fitted model whole, as a warm-started estimator that serves between fits should.
    """

    def __init__(self, class_names: Sequence[str] | None = None, latent_dim: int = 10,
                 lam: float = 0.9, epochs: int = 20, svm_C: float = 1.0, device: str = "auto",
                 warm_start: bool = False, random_state: int | None = 0, verbose: bool = False,
                 self_training: float = 0.0, self_training_threshold: float = 0.9,
                 semi_supervised_from: int = 0, test_time_flip: bool = False, members: int = 1,
                 calibration_holdout: float = 0.0, sae_params: dict | None = None) -> None:
        self.class_names = class_names
        self.latent_dim = latent_dim
        self.lam = lam
        self.epochs = epochs
        self.svm_C = svm_C
        self.device = device
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose
        self.self_training = self_training
        self.self_training_threshold = self_training_threshold
        self.semi_supervised_from = semi_supervised_from
        self.test_time_flip = test_time_flip
        self.members = members
        self.calibration_holdout = calibration_holdout
        self.sae_params = sae_params

    def _n_classes(self, y: np.ndarray) -> int:
        if self.class_names is not None:
            return len(self.class_names)
        return int(y.max() + 1)

    def fit(self, X: np.ndarray, y: np.ndarray, ids: np.ndarray | None = None,
            mask: np.ndarray | None = None) -> SAEClassifier:
        """``ids``: each item's stable id (default: its position), which picks the calibration holdout; ``mask``: the
        items to train on (see :meth:`StructuringAutoencoder.fit`), the rest of ``X`` is read past."""
        y = np.asarray(y, dtype=np.int64)
        if mask is not None:
            y = np.where(np.asarray(mask, bool), y, -1)
        labeled = y >= 0
        if len(np.unique(y[labeled])) < 2:
            raise ValueError("training needs labeled items of at least two classes")
        if int(self.members) < 1:
            raise ValueError(f"members must be at least 1, got {self.members}")
        if not 0.0 <= float(self.calibration_holdout) < 1.0:
            raise ValueError(f"calibration_holdout must be in [0, 1), got {self.calibration_holdout}")
        held, pulled_held = self._held_out(y, ids)
        warm = self.warm_start and self._keeps(held)
        y_pulled = np.where(held, -1, y)
        clash = sorted(RESERVED_SAE_PARAMS.keys() & (self.sae_params or {}).keys())
        if clash:
            raise ValueError("sae_params cannot set what the classifier sets: " + "; ".join(
                f"instead of {key!r} use SAEClassifier's {RESERVED_SAE_PARAMS[key]!r}" for key in clash))
        k = self._n_classes(y)
        params = dict(latent_dim=self.latent_dim, lam=self.lam, epochs=self.epochs, n_classes=k,
                      device=self.device, random_state=self.random_state, verbose=self.verbose,
                      **(self.sae_params or {}))
        semi = int(labeled.sum()) >= int(self.semi_supervised_from)
        consistency = params.get("consistency", 0.0)
        if not semi:
            params["consistency"] = 0.0
        pseudo_weight = float(self.self_training) if semi else 0.0
        pseudo = self._pseudo_labels(X, y, held, k) if warm and semi else None  # held items are labeled: never guessed
        saes = []
        for m in range(int(self.members)):
            seed = None if self.random_state is None else int(self.random_state) + 1000 * m
            member = {**params, "random_state": seed}
            if m and member.get("encoder") is not None:  # the user's own networks, in a member after the first
                first = self.saes_[0] if warm else None
                if first is not None and member["encoder"] is first.encoder and member["decoder"] is first.decoder:
                    member = {k: v for k, v in member.items() if k not in ("encoder", "decoder")}  # its own trains on
                else:  # a new pair (a first fit, or the user's changed): a copy of it would start every member alike
                    member.update(encoder=_reinitialised(member["encoder"], seed), decoder=_reinitialised(
                        member["decoder"], None if seed is None else seed + 1))
            if warm:  # a copy trains, so a fit that fails leaves the fitted model whole and serving
                sae = _training_copy(self.saes_[m]).set_params(warm_start=True, pseudo_weight=pseudo_weight, **member)
            else:
                sae = StructuringAutoencoder(pseudo_weight=pseudo_weight, **member)
            sae.fit(X, y_pulled, pseudo=pseudo, mask=mask)
            if not semi:
                sae.set_params(consistency=consistency)
            saes.append(sae)
        z = self._codes_of(saes, np.asarray(X)[labeled]) if labeled.any() else None
        svm = LatentSVM(n_classes=k, C=self.svm_C).fit(z, y[labeled], calibrate_on=held[labeled])
        self.saes_, self.sae_, self.svm_ = saes, saes[0], svm
        self.classes_ = np.arange(k)
        self.n_classes_ = k
        self.holdout_fitted_ = float(self.calibration_holdout)
        self.pulled_held_ = pulled_held
        self.warm_started_ = warm and all(sae.warm_started_ for sae in saes)  # a changed network is trained anew
        self.fitted_class_names_ = None if self.class_names is None else [str(c) for c in self.class_names]
        set_n_features(self, self.sae_.input_shape_)
        return self

    def _held_out(self, y: np.ndarray, ids: np.ndarray | None) -> tuple[np.ndarray, bool]:
        """The labeled items kept out of the structure term, and whether too few labels outside it made every one
        pull instead (fewer than two classes outside: no holdout for this fit, and the next that holds labels out
        starts afresh)."""
        labeled = y >= 0
        held = labeled & holdout(np.arange(len(y)) if ids is None else np.asarray(ids), self.calibration_holdout)
        if held.any() and len(np.unique(y[labeled & ~held])) < 2:
            return np.zeros_like(labeled), True
        return held, False

    def keeps_networks(self, y: np.ndarray, ids: np.ndarray | None = None) -> bool:
        """Would a ``warm_start`` fit on these labels keep the fitted networks? Not where their codes may have been
        pulled by labels it holds out: another holdout share, or a fit whose few labels all pulled."""
        return self._keeps(self._held_out(np.asarray(y, dtype=np.int64), ids)[0])

    def _keeps(self, held: np.ndarray) -> bool:
        if not hasattr(self, "saes_") or len(self.saes_) != int(self.members):
            return False
        same_holdout = getattr(self, "holdout_fitted_", None) == float(self.calibration_holdout)
        return not held.any() or (same_holdout and not getattr(self, "pulled_held_", False))

    def _pseudo_labels(self, X: np.ndarray, y: np.ndarray, held: np.ndarray, k: int) -> np.ndarray | None:
        """The previous fit's class for unlabeled items it is confident of, -1 elsewhere (none when the classes
        changed since: its class indices would name others).

        With a calibration holdout the guesses come from an SVM on the previous codes of the pulled labels
        only: the previous SVM learned from the held ones too, and its guesses about their neighbours would
        carry them into the structure term.
        """
        if float(self.self_training) <= 0 or not hasattr(self, "svm_"):
            return None
        names = None if self.class_names is None else [str(c) for c in self.class_names]
        if self.svm_.n_classes_ != k or getattr(self, "fitted_class_names_", names) != names:
            return None
        z, svm = self.transform(X), self.svm_
        if held.any():
            pulled = (y >= 0) & ~held
            svm = LatentSVM(n_classes=svm.n_classes_, C=self.svm_C, calibrate=False).fit(z[pulled], y[pulled])
        scores = svm.decision_function(z)
        pred, conf = np.argmax(scores, axis=1), svm.confidence_from_scores(scores)
        return np.where((y < 0) & (conf >= float(self.self_training_threshold)), pred, -1)

    def transform(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "saes_")
        return self._codes_of(self.saes_, X)

    def _codes_of(self, saes: Sequence[StructuringAutoencoder], X: np.ndarray) -> np.ndarray:
        return np.hstack([self._codes(sae, X) for sae in saes])

    def _codes(self, sae: StructuringAutoencoder, X: np.ndarray) -> np.ndarray:
        z = sae.transform(X)
        if self.test_time_flip and np.ndim(X) >= 3:
            z = (z + sae.transform(np.asarray(X)[..., ::-1])) / 2
        return z

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "svm_")
        return self.svm_.decision_function(self.transform(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "svm_")
        return self.svm_.predict(self.transform(X))

    def predict_confidence(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted class and normalised confidence in [0, 1] for each item."""
        scores = self.decision_function(X)
        return np.argmax(scores, axis=1), self.svm_.confidence_from_scores(scores)

    def predict_proba_top(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted class and the calibrated chance that it is right (see :class:`LatentSVM`).

        An item whose scores are not finite (NaN or inf in its code) gets 0, as its confidence does.
        """
        scores = self.decision_function(X)
        prob = self.svm_.probability_from_confidence(self.svm_.confidence_from_scores(scores))
        return np.argmax(scores, axis=1), np.where(np.isfinite(scores).all(axis=1), prob, 0.0)

    @property
    def class_centres_(self) -> np.ndarray:
        """Mean latent code of each class's labeled items (NaN for classes without labels)."""
        check_is_fitted(self, "svm_")
        return self.svm_.centres_


def _reinitialised(module: torch.nn.Module, seed: int | None) -> torch.nn.Module:
    """A copy of a user's network with fresh weights from ``seed``, by each layer's own ``reset_parameters``.

    The weights come from a stream of their own: a fit seeds torch with ``seed`` itself, and a pair built after
    such a fit would otherwise be drawn exactly alike.
    """
    copied = copy.deepcopy(module)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):  # unseeded: each draw moves the stream on
        if seed is not None:
            torch.manual_seed(int(np.random.SeedSequence([seed, 1]).generate_state(1)[0]))
        for layer in copied.modules():
            if callable(getattr(layer, "reset_parameters", None)):
                layer.reset_parameters()
    return copied
