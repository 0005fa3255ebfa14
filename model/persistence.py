"""Save and load a trained :class:`SAEClassifier` as a directory, atomically.

Layout: ``settings.json`` (class names, hyper-parameters, input shape, metadata),
``networks.pt`` (state dicts of the built-in networks, or the pickled modules of a
user's own pair) and ``svm.npz`` (SVM weights, class centres, structural targets).
Loading needs no training data. A directory is written under a temporary name and
renamed into place, so a crash mid-save never leaves a half-written model behind.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from model.latent_svm import LatentSVM
from model.networks import build_networks
from model.sae import StructuringAutoencoder, set_n_features
from model.sae_classifier import PASSED_SAE_PARAMS, SAEClassifier

FORMAT_VERSION = 1
_SAE_KEYS = ("latent_dim", "lam", "epochs", "n_classes", "random_state", *PASSED_SAE_PARAMS)


def _jsonable(v: object) -> object:
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def save_model(model: SAEClassifier, directory: str | Path, metadata: dict | None = None) -> Path:
    """Write ``model`` to ``directory`` (which must not exist yet) and return its path."""
    directory = Path(directory)
    if directory.exists():
        raise FileExistsError(f"{directory} already exists; versions are never overwritten")
    if len(model.saes_) > 1:
        raise ValueError(f"saving keeps one autoencoder; this model has {len(model.saes_)} (members)")
    sae, svm = model.sae_, model.svm_
    custom = sae.encoder is not None
    settings = {
        "format_version": FORMAT_VERSION,
        "class_names": list(model.class_names) if model.class_names is not None else None,
        "classifier": {k: _jsonable(v) for k, v in model.get_params().items()
                       if k not in ("sae_params", "class_names")},
        "sae": {k: _jsonable(getattr(sae, k)) for k in _SAE_KEYS},
        "input_shape": list(sae.input_shape_),
        "pixels": bool(sae.learned_pixels()),
        "n_classes": int(model.n_classes_),
        "custom_networks": custom,
        "history": sae.history_,
        "pulled_held": bool(model.pulled_held_),
        "holdout_fitted": float(getattr(model, "holdout_fitted_", model.calibration_holdout)),
        "metadata": metadata or {},
    }
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        if custom:
            try:
                torch.save({"encoder": sae.encoder_.cpu(), "decoder": sae.decoder_.cpu(),
                            "encoder_untrained": sae.encoder, "decoder_untrained": sae.decoder}, tmp / "networks.pt")
            finally:  # a failed save must not leave the model in service on another device than it says
                sae.encoder_.to(sae.device_)
                sae.decoder_.to(sae.device_)
        else:
            torch.save({"encoder": {k: v.cpu() for k, v in sae.encoder_.state_dict().items()},
                        "decoder": {k: v.cpu() for k, v in sae.decoder_.state_dict().items()}},
                       tmp / "networks.pt")
        scaled = getattr(sae, "input_range_", None)
        np.savez(tmp / "svm.npz", coef=svm.coef_, intercept=svm.intercept_, present=svm.present_,
                 centres=svm.centres_, centre_margins=svm.centre_margins_, positions=sae.positions_,
                 targets=sae.targets_, distances=sae.distances_, C=np.array(svm.C),
                 calibration=svm.calibration_ if getattr(svm, "calibration_", None) is not None
                 else np.zeros((2, 0)), input_low=scaled[0] if scaled is not None else np.zeros(0),
                 input_span=scaled[1] if scaled is not None else np.zeros(0))
        (tmp / "settings.json").write_text(json.dumps(settings, indent=1, default=_jsonable))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _sae_param(key: str, value: object) -> object:
    """A setting as the autoencoder had it: JSON made tuples and the distance matrix into lists."""
    if key == "class_distances" and value is not None:
        return np.asarray(value)
    return tuple(value) if isinstance(value, list) else value


def read_settings(directory: str | Path) -> dict:
    return json.loads((Path(directory) / "settings.json").read_text())


def load_model(directory: str | Path, device: str = "auto", trust_pickles: bool = False) -> SAEClassifier:
    """Rebuild a saved model; its predictions equal those of the model that was saved.

    A model with the user's own networks holds them pickled, and unpickling runs code: only the caller, never the
    directory's own files, may allow it (``trust_pickles``).
    """
    directory = Path(directory)
    settings = read_settings(directory)
    if settings.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory}: unsupported model format {settings.get('format_version')}")
    custom = bool(settings["custom_networks"])
    if custom and not trust_pickles:
        raise ValueError(f"{directory} holds pickled networks of its own, and loading them runs their code: "
                         "load_model(..., trust_pickles=True) only where the directory comes from you")
    sp = settings["sae"]
    nets = torch.load(directory / "networks.pt", map_location="cpu", weights_only=not custom)
    sae = StructuringAutoencoder(**{k: _sae_param(k, v) for k, v in sp.items()}, device=device)
    if custom:
        sae.encoder_, sae.decoder_ = nets["encoder"], nets["decoder"]
        # the user's untrained pair, which a fit from scratch copies (a file of an earlier release kept only the
        # trained one); saving this model again pickles them too
        untrained = (nets.get("encoder_untrained"), nets.get("decoder_untrained"))
        if untrained[0] is None or untrained[1] is None:
            untrained = copy.deepcopy(sae.encoder_), copy.deepcopy(sae.decoder_)
        sae.set_params(encoder=untrained[0], decoder=untrained[1])
    else:
        sae.encoder_, sae.decoder_ = build_networks(settings["input_shape"], sp["latent_dim"], sp["network"],
                                                    sp["channels"], sp["hidden"])
        sae.encoder_.load_state_dict(nets["encoder"])
        sae.decoder_.load_state_dict(nets["decoder"])
    sae.input_shape_ = tuple(settings["input_shape"])
    if "pixels" in settings:  # versions saved before it: as learned_pixels() infers
        sae.pixels_ = bool(settings["pixels"])
    sae.arch_ = sae._architecture(sae.input_shape_)  # what a warm retrain compares the settings with
    set_n_features(sae, sae.input_shape_)
    sae.n_classes_ = settings["n_classes"]
    sae.history_ = settings.get("history", [])
    arrays = np.load(directory / "svm.npz")
    sae.positions_, sae.targets_, sae.distances_ = arrays["positions"], arrays["targets"], arrays["distances"]
    sae.input_range_ = ((arrays["input_low"], arrays["input_span"])  # versions saved before it: None, as they trained
                        if "input_span" in arrays.files and arrays["input_span"].size else None)
    sae.device_ = torch.device("cpu")
    sae.to(device)
    sae.encoder_.eval()
    sae.decoder_.eval()
    svm = LatentSVM(n_classes=settings["n_classes"], C=float(arrays["C"]))
    svm.coef_, svm.intercept_, svm.present_ = arrays["coef"], arrays["intercept"], arrays["present"]
    svm.centres_, svm.centre_margins_ = arrays["centres"], arrays["centre_margins"]
    svm.calibration_ = arrays["calibration"] if "calibration" in arrays.files and arrays["calibration"].size else None
    svm.n_classes_ = settings["n_classes"]
    svm.classes_ = np.arange(svm.n_classes_)
    svm.n_features_in_ = svm.coef_.shape[1]
    params = dict(settings["classifier"])
    params["device"] = device
    sae_params = {k: sae.get_params()[k] for k in PASSED_SAE_PARAMS}
    if custom:  # else a clone, or a member of a refit, would train the built-in networks
        sae_params.update(encoder=sae.encoder, decoder=sae.decoder)
    clf = SAEClassifier(class_names=settings["class_names"], **params, sae_params=sae_params)
    clf.sae_, clf.svm_ = sae, svm
    clf.saes_ = [sae]
    clf.n_classes_ = settings["n_classes"]
    clf.classes_ = np.arange(clf.n_classes_)
    set_n_features(clf, sae.input_shape_)
    clf.metadata_ = settings.get("metadata", {})
    clf.fitted_class_names_ = clf.class_names and [str(c) for c in clf.class_names]
    clf.pulled_held_ = bool(settings.get("pulled_held", False))
    clf.holdout_fitted_ = float(settings.get("holdout_fitted", clf.calibration_holdout))
    return clf
