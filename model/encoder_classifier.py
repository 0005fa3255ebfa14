"""The paper's comparison: the same encoder plus a linear layer, trained on labeled items only."""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn
from tqdm.auto import tqdm

from model.augment import augment, augments, blend_pairs
from model.device import resolve_device
from model.networks import build_networks
from model.sae import as_pool_array, as_trained, check_finite, input_range, scaled_items, set_n_features


class EncoderClassifier(ClassifierMixin, BaseEstimator):
    """Cross-entropy classifier with the SAE's encoder architecture.

    It sees only labeled items. ``epochs`` counts passes over the labeled set, with at
    least ``min_steps`` optimiser steps so that 100 labels still get a real training.
    ``max_shift``, ``flip`` and ``cutout`` augment as in :class:`model.sae.StructuringAutoencoder`,
    for a fair comparison; ``test_time_flip`` averages an image's codes and logits with its mirror image's, as
    :class:`model.sae_classifier.SAEClassifier` does. ``mixup > 0`` adds, with that weight, the
    cross-entropy of blends of the batch's items against the same blend of their labels (the
    SAE's ``mixup`` blends targets the same way).
    """

    def __init__(self, n_classes: int | None = None, latent_dim: int = 10, epochs: int = 50,
                 min_steps: int = 300, batch_size: int = 64, lr: float = 1e-3,
                 weight_decay: float = 1e-4, network: str = "auto",
                 channels: Sequence[int] = (32, 64, 128), hidden: Sequence[int] = (256, 128),
                 device: str = "auto", amp: bool = True, max_shift: int = 0, flip: bool = False,
                 cutout: int = 0, test_time_flip: bool = False, mixup: float = 0.0, warm_start: bool = False,
                 random_state: int | None = 0,
                 verbose: bool = False) -> None:
        self.n_classes = n_classes
        self.latent_dim = latent_dim
        self.epochs = epochs
        self.min_steps = min_steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.network = network
        self.channels = channels
        self.hidden = hidden
        self.device = device
        self.amp = amp
        self.max_shift = max_shift
        self.flip = flip
        self.cutout = cutout
        self.test_time_flip = test_time_flip
        self.mixup = mixup
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X: np.ndarray, y: np.ndarray) -> EncoderClassifier:
        """Train on the items with ``y >= 0``; unlabeled items are only read for the pool's range and finiteness
        (never converted to float)."""
        y = np.asarray(y, dtype=np.int64)
        lab = np.flatnonzero(y >= 0)
        if len(np.unique(y[lab])) < 2:
            raise ValueError("training needs labeled items of at least two classes")
        pool = as_pool_array(X)
        check_finite(pool)  # one NaN item would turn the range, every weight and every prediction into NaN
        raw = pool[lab]
        scaled = input_range(pool)  # raw features by the whole pool's range, as the SAE: a wide one swamps the rest
        k = int(self.n_classes) if self.n_classes is not None else int(y.max() + 1)
        if self.random_state is not None:
            torch.manual_seed(int(self.random_state))
        rng = np.random.default_rng(self.random_state)
        dev = resolve_device(self.device)
        # a warm start needs the same network: another class count or input shape would not fit the old one
        arch = (raw.shape[1:], int(self.latent_dim), self.network, tuple(self.channels), tuple(self.hidden), k)
        if not (self.warm_start and hasattr(self, "net_") and getattr(self, "arch_", None) == arch
                and (scaled is None or getattr(self, "input_range_", None) is not None)
                and getattr(self, "pixels_", False) == (raw.dtype == np.uint8)):
            enc, _ = build_networks(raw.shape[1:], int(self.latent_dim), self.network,
                                    self.channels, self.hidden)
            self.net_ = nn.Sequential(enc, nn.Linear(int(self.latent_dim), k))
            self.arch_ = arch
            self.input_range_, self.pixels_ = scaled, raw.dtype == np.uint8
        x = scaled_items(raw, getattr(self, "input_range_", None))  # None: a model pickled before it scaled
        self.device_ = dev
        self.net_.to(dev).train()
        set_n_features(self, x.shape[1:])
        xl = torch.from_numpy(np.ascontiguousarray(x)).to(dev)
        yl = torch.as_tensor(y[lab], device=dev)
        opt = torch.optim.Adam(self.net_.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
        steps = max(int(self.min_steps), int(self.epochs) * math.ceil(len(lab) / int(self.batch_size)))
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                    if self.amp and dev.type == "cuda" else nullcontext())
        loss_fn = nn.CrossEntropyLoss()
        mix = float(self.mixup)
        gen = (torch.Generator().manual_seed(int(rng.integers(2**31)))
               if augments(self.max_shift, self.flip, self.cutout) or mix > 0 else None)
        for _ in tqdm(range(steps), desc="train classifier", disable=not self.verbose, leave=False):
            sel = torch.as_tensor(rng.integers(0, len(lab), min(int(self.batch_size), len(lab))), device=dev)
            with autocast:
                xb = augment(xl[sel], int(self.max_shift), bool(self.flip), gen, int(self.cutout))
                loss = loss_fn(self.net_(xb).float(), yl[sel])
                if mix > 0:
                    loss = loss + mix * self._mixed_loss(xb, yl[sel], gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        self.net_.eval()
        self.classes_ = np.arange(k)
        self.n_classes_ = k
        return self

    def _mixed_loss(self, xb: torch.Tensor, yb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Cross-entropy of blended items against the blend of their labels."""
        blend, a, other = blend_pairs(xb, gen)
        logp = torch.log_softmax(self.net_(blend).float(), dim=1)
        nll = -(a * logp.gather(1, yb[:, None]).squeeze(1) + (1 - a) * logp.gather(1, yb[other][:, None]).squeeze(1))
        return nll.mean()

    @torch.no_grad()
    def _run(self, net: nn.Module, X: np.ndarray, width: int, batch_size: int) -> np.ndarray:
        out, scaled = [], getattr(self, "input_range_", None)  # None: a model pickled before it scaled
        pixels = getattr(self, "pixels_", False)
        for s in range(0, len(X), batch_size):
            part = as_trained(X[s:s + batch_size], pixels)
            xb = torch.from_numpy(np.ascontiguousarray(scaled_items(part, scaled))).to(self.device_)
            out.append(net(xb).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, width), np.float32)

    def _apply(self, net: nn.Module, X: np.ndarray, width: int, batch_size: int) -> np.ndarray:
        y = self._run(net, X, width, batch_size)
        if self.test_time_flip and np.ndim(X) >= 3:
            y = (y + self._run(net, np.asarray(X)[..., ::-1], width, batch_size)) / 2
        return y

    def transform(self, X: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """The encoder's codes (the layer before the linear head), for batch-aware strategies."""
        check_is_fitted(self, "net_")
        return self._apply(self.net_[0], X, int(self.latent_dim), batch_size)

    def decision_function(self, X: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """Logits, shape ``(n, n_classes)``."""
        check_is_fitted(self, "net_")
        return self._apply(self.net_, X, self.n_classes_, batch_size)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.decision_function(X), axis=1)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        s = self.decision_function(X)
        e = np.exp(s - s.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
