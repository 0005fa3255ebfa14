"""The Structuring Autoencoder: reconstruction over all items, structure on labeled ones."""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from model.augment import augment, augments, blend_pairs, random_resized_crop
from model.contrastive import nt_xent, projection_head
from model.device import resolve_device
from model.networks import build_networks, network_kind
from model.targets import check_distance_matrix, class_positions, equal_distances, procrustes_targets

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, int, dict], None]
# How the Adam step changes within one fit: "cosine" anneals it to zero over the fit's steps,
# so every (warm-started) round ends on small steps rather than wherever the last batch left it.
LR_SCHEDULES = ("constant", "cosine")


def channels_first(x: np.ndarray) -> np.ndarray:
    """Refuse images that look channel-last, ``(N, H, W, C)`` with C of 1, 3 or 4: read as ``(N, C, H, W)`` they
    would train without an error, on nonsense. ``(N, H, W)`` gets its channel axis."""
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        raise ValueError(f"images must be (N, C, H, W); {tuple(x.shape)} looks like (N, H, W, C): pass "
                         "X.transpose(0, 3, 1, 2)")
    return x[:, None] if x.ndim == 3 else x


def as_float_array(x: np.ndarray) -> np.ndarray:
    """Items as float32, adding a channel axis to (N, H, W) images; uint8 pixels are scaled by 1/255."""
    x = channels_first(np.asarray(x))
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255)
    return x if x.dtype == np.float32 else x.astype(np.float32)


def as_pool_array(x: np.ndarray) -> np.ndarray:
    """The pool as the model keeps it: as it lies (a view, even of a memmap) where it holds numbers, each batch made
    float32 where it is taken; a boolean pool as float32. uint8 means pixels (/255); every other dtype is taken by its
    values, scaled into [0, 1] by the pool's range where it reaches outside (:func:`input_range`)."""
    x = channels_first(np.asarray(x))
    if x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer):
        return x
    return x.astype(np.float32)


def as_trained(x: np.ndarray, pixels: bool) -> np.ndarray:
    """A batch in the form the model's pool had: for a model that learned uint8 pixels (``pixels``), integer items
    are those pixels (0..255, else ValueError), not values 255 times theirs."""
    x = as_pool_array(x)
    if pixels and x.dtype != np.uint8 and np.issubdtype(x.dtype, np.integer):
        if not _within_bytes(x):
            raise ValueError("this model learned uint8 pixels: integer items must lie in 0..255")
        return x.astype(np.uint8)
    return x


def _within_bytes(x: np.ndarray) -> bool:
    rows = max(1, FINITE_CHECK_BYTES // max(1, x[:1].nbytes))
    return all(int(x[s:s + rows].min(initial=0)) >= 0 and int(x[s:s + rows].max(initial=0)) <= 255
               for s in range(0, len(x), rows))


# Epoch records a model keeps across warm starts: a service retraining for weeks saves them in every version.
HISTORY_LIMIT = 500

# How much of a float pool the finiteness check reads at a time: the pool may be a memmap of millions of items.
FINITE_CHECK_BYTES = 64 << 20


def _finite_weights(*nets: torch.nn.Module) -> bool:
    """A diverged step leaves NaN in the weights, which would serve every item the first class at confidence 0."""
    return all(bool(torch.isfinite(p).all()) for net in nets for p in net.parameters())


def check_finite(x: np.ndarray, positions: np.ndarray | None = None) -> None:
    """Raise ValueError naming the first item holding NaN or inf, slice by slice (never a pool-sized copy);
    ``positions``: where ``x``'s items sit in the caller's ``X``, when ``x`` is a selection of it.

    One such item turns the weights into NaN, or the class targets' SVD into a LinAlgError.
    """
    if x.dtype == np.uint8 or np.issubdtype(x.dtype, np.integer):
        return
    rows = max(1, FINITE_CHECK_BYTES // max(1, x[:1].nbytes))
    for s in range(0, len(x), rows):
        part = x[s:s + rows]
        ok = np.isfinite(part).reshape(len(part), -1).all(axis=1)
        if not ok.all():
            bad = s + int(np.argmin(ok))
            where = bad if positions is None else int(positions[bad])
            raise ValueError(f"X[{where}] holds NaN or inf: items must be finite")


SPAN_FLOOR = 0.01  # of the widest feature's span: the least span a feature is scaled by
SCALED_BOUNDS = (-1.0, 2.0)  # scaled values past these (tasks far outside the first pool's range) are clipped


def input_range(x: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Low and span that map a pool of values reaching outside [0, 1] into it, read slice by slice; None for a pool
    inside it (pixels), which stays as it is. ``mask``: the items it is read from (a fit's, see
    :meth:`StructuringAutoencoder.fit`).

    The decoders end in a sigmoid: raw features or embeddings (negative, or above 1) could not be rebuilt, and the
    reconstruction term would fight the structure term instead of helping it. Vectors are scaled feature by
    feature; images by one low and span, so that their pixels keep their relations.
    """
    if x.dtype == np.uint8 or len(x) == 0:
        return None
    axes = 0 if x.ndim == 2 else tuple(range(x.ndim))
    rows = max(1, FINITE_CHECK_BYTES // max(1, x[:1].nbytes))
    low = high = None
    for s in range(0, len(x), rows):
        part = np.asarray(x[s:s + rows]) if mask is None else np.asarray(x[s:s + rows][mask[s:s + rows]])
        if len(part) == 0:
            continue
        pl, ph = part.min(axis=axes).astype(np.float64), part.max(axis=axes).astype(np.float64)  # float16's max
        # is 65504: a span past it would be inf
        low, high = (pl, ph) if low is None else (np.minimum(low, pl), np.maximum(high, ph))
    if low is None or (float(np.min(low)) >= 0.0 and float(np.max(high)) <= 1.0):
        return None
    span = np.asarray(high - low, np.float32)
    floor = np.float32(SPAN_FLOOR * max(float(span.max()), 1e-6))  # a feature nearly constant at the first fit
    return np.asarray(low, np.float32).reshape(np.shape(low)), np.maximum(span, floor)  # must not blow up later


def scaled_items(x: np.ndarray, scaled: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Items as float32 networks take them: by :func:`as_float_array` where ``scaled`` (an :func:`input_range`) is
    None, else by their values mapped with it, whatever their dtype."""
    if scaled is None:
        return as_float_array(x)
    low, span = scaled
    x = channels_first(np.asarray(x)).astype(np.float32)
    return np.clip((x - low) / span, *SCALED_BOUNDS).astype(np.float32)


def set_n_features(est: BaseEstimator, item_shape: Sequence[int]) -> None:
    """Set sklearn's ``n_features_in_`` where it means something: items that are flat vectors, not images."""
    if len(item_shape) == 1:
        est.n_features_in_ = int(item_shape[0])
    elif hasattr(est, "n_features_in_"):
        del est.n_features_in_


def _tensor(x: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``x``'s memory; read-only arrays (a memmap opened with mode 'r') are never written."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(x))


# made float32 on the host before they move: MPS has no float64, and CUDA's kernels barely know wide unsigned ints
HOST_DTYPES = (torch.float64, torch.uint16, torch.uint32, torch.uint64)


def _to_device(t: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """A batch onto ``dev``, as float32 first where its dtype is one of :data:`HOST_DTYPES`."""
    return (t.float() if t.dtype in HOST_DTYPES else t).to(dev, non_blocking=True)


def _to_float(t: torch.Tensor) -> torch.Tensor:
    """One batch as float32: uint8 pixels become pixel/255 (the same values as a float32 pool holds)."""
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()


class StructuringAutoencoder(TransformerMixin, BaseEstimator):
    """Autoencoder whose labeled codes are pulled to MDS class positions.

    ``y`` uses class indices ``0..n_classes-1`` and ``-1`` for unlabeled items. Loss per
    batch: ``(1 - lam) * MSE(x, x_hat) + lam * MSE(z_labeled, target)``. Targets are
    recomputed every epoch from the class means of the labeled codes (see
    :mod:`model.targets`). Every batch holds ``labeled_per_batch`` labeled items drawn
    with replacement besides the uniform draw over the pool: with 100 labels among 60k a
    uniform batch of 256 would see one labeled item every two or three batches.
    ``max_shift > 0`` shifts every training image by up to that many pixels
    (:mod:`model.augment`), ``flip`` mirrors half of them left-right, and ``cutout > 0``
    blanks a square of that side in each.
    ``fit(X, y, pseudo=...)`` also pulls unlabeled items with a pseudo-label (a class the
    current model is confident of) towards that class's target, with weight
    ``pseudo_weight`` relative to a real label: self-training inside the structure term.
    ``consistency > 0`` (with an augmentation: ``max_shift``, ``flip`` or ``cutout``) encodes every
    batch under a second random augmentation and pulls the two codes of each item together,
    with that weight relative to the structure term: unlabeled items then also shape where the classes sit (the
    Pi-model of semi-supervised learning, applied to the codes).
    ``mixup > 0`` also blends pairs of labeled items of a batch, ``a * x_i + (1 - a) * x_j``
    with ``a ~ U(0, 1)``, and pulls the blend's code to the same blend of their targets, with
    that weight relative to the structure term: with a hundred labels the structure term alone
    fixes a hundred points, and the blends ask the encoder to be linear between them (mixup,
    Zhang et al. 2018, applied to the class positions). It needs only real labels, so it is
    useful from the first label on.
    ``weight_decay > 0`` multiplies every weight by ``1 - lr_t * weight_decay`` a step (``lr_t``
    the step's learning rate), outside Adam's scaling (decoupled weight decay, AdamW, Loshchilov
    & Hutter 2019): a simpler encoder is less free to bend the codes around the few labeled items.
    ``lr_schedule`` is one of :data:`LR_SCHEDULES`; the optimiser (and its schedule) starts
    afresh at every ``fit``.
    ``ema_decay > 0`` keeps an exponential moving average of the weights over a fit's steps (no
    warm-up of the decay), and the fitted model ends on it rather than on the last, noisy step;
    ``history_`` still reports the trained weights' losses. ``mean_teacher`` also encodes the
    consistency term's second view with that average, without gradient (Tarvainen & Valpola 2017);
    with a BatchNorm encoder its passes move the average's running statistics too. On
    Fashion-MNIST-10 (one machine's 20k validation set) decay 0.98 was ahead of the plain fit and the
    mean teacher was not; both stay off by default until the average is read on the 2k protocol.

    ``contrastive > 0`` (images only) also encodes a random resized crop of every batch's
    augmented images and adds, with that weight, SimCLR's loss over a projection of the two
    codes of each pool item (:mod:`model.contrastive`): from the first fit on, every unlabeled
    item shapes the codes by what survives a crop, not only by its pixels. It is not scheduled
    with ``consistency`` (which pulls the codes themselves together and waits for labels). The
    projection head is training state only: a saved model keeps the setting, and a warm retrain
    after loading starts a new head. On Fashion-MNIST-10 (2k validation) weight 0.01 tied with the
    setting without it and 0.1 and 1 were far behind, so it stays off by default.

    ``X`` may be uint8 images ``(N, C, H, W)`` or ``(N, H, W)`` meaning pixel/255, also as
    an ``np.memmap``: they are staged as uint8 and each batch is converted to float32 where
    it is taken. A million 28x28 images are 0.8 GB as uint8 but 3 GB as float32, so a
    float copy of a large pool would not fit on many hosts or next to the model on a GPU.
    ``steps_per_epoch`` caps the optimiser steps of an epoch (``None``: a full pass over the
    pool); each step then takes ``batch_size`` pool items drawn at random without
    replacement, so a warm-started retrain over a million items costs a fixed budget
    rather than a full pass.
    """

    def __init__(self, latent_dim: int = 10, lam: float = 0.9, epochs: int = 20,
                 batch_size: int = 256, labeled_per_batch: int = 64, lr: float = 1e-3,
                 n_classes: int | None = None, class_distances: np.ndarray | None = None,
                 network: str = "auto", channels: Sequence[int] = (32, 64, 128),
                 hidden: Sequence[int] = (256, 128), encoder: nn.Module | None = None,
                 decoder: nn.Module | None = None, device: str = "auto", amp: bool = True,
                 max_shift: int = 0, flip: bool = False, cutout: int = 0, steps_per_epoch: int | None = None,
                 pseudo_weight: float = 0.0, consistency: float = 0.0, mixup: float = 0.0,
                 weight_decay: float = 0.0, lr_schedule: str = "constant", ema_decay: float = 0.0,
                 mean_teacher: bool = False, contrastive: float = 0.0, warm_start: bool = False,
                 random_state: int | None = 0, verbose: bool = False,
                 on_epoch: EpochCallback | None = None) -> None:
        self.latent_dim = latent_dim
        self.lam = lam
        self.epochs = epochs
        self.batch_size = batch_size
        self.labeled_per_batch = labeled_per_batch
        self.lr = lr
        self.n_classes = n_classes
        self.class_distances = class_distances
        self.network = network
        self.channels = channels
        self.hidden = hidden
        self.encoder = encoder
        self.decoder = decoder
        self.device = device
        self.amp = amp
        self.max_shift = max_shift
        self.flip = flip
        self.cutout = cutout
        self.steps_per_epoch = steps_per_epoch
        self.pseudo_weight = pseudo_weight
        self.consistency = consistency
        self.mixup = mixup
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.ema_decay = ema_decay
        self.mean_teacher = mean_teacher
        self.contrastive = contrastive
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose
        self.on_epoch = on_epoch

    def check_params(self) -> None:
        """Raise ValueError for any setting ``fit`` would reject, without training: callers check settings early."""
        if not 0.0 <= float(self.lam) <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {self.lam}")
        if int(self.latent_dim) < 1:
            raise ValueError("latent_dim must be at least 1")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        for name in ("epochs", "labeled_per_batch", "max_shift", "cutout", "consistency", "mixup", "contrastive",
                     "lr", "weight_decay"):
            if not float(getattr(self, name)) >= 0:  # NaN fails too
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if not 0.0 <= float(self.ema_decay) < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.mean_teacher and not float(self.ema_decay) > 0:
            raise ValueError("mean_teacher needs the averaged weights: set ema_decay > 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.steps_per_epoch is not None and int(self.steps_per_epoch) < 1:
            raise ValueError(f"steps_per_epoch must be None or at least 1, got {self.steps_per_epoch}")
        if (self.encoder is None) != (self.decoder is None):
            raise ValueError("pass both encoder and decoder, or neither")

    def _distances(self, k: int) -> np.ndarray:
        if self.class_distances is None:
            return equal_distances(k)
        return check_distance_matrix(self.class_distances, k)

    def _architecture(self, input_shape: Sequence[int]) -> dict:
        """What shapes the networks for items of ``input_shape``: a warm start needs it unchanged.

        A user's own pair counts by identity (``set_params(encoder=...)`` with another module is a new network).
        """
        arch = {"input_shape": tuple(int(s) for s in input_shape), "latent_dim": int(self.latent_dim)}
        if self.encoder is not None:
            return {**arch, "encoder": self.encoder, "decoder": self.decoder}
        kind = network_kind(input_shape, self.network)  # only what that kind is built from counts
        if kind == "mlp":
            return {**arch, "network": kind, "hidden": tuple(int(h) for h in self.hidden)}
        return {**arch, "network": kind, "channels": tuple(int(c) for c in self.channels)}

    def _build(self, input_shape: tuple[int, ...]) -> None:
        if self.encoder is not None:
            self.encoder_, self.decoder_ = copy.deepcopy(self.encoder), copy.deepcopy(self.decoder)
        else:
            self.encoder_, self.decoder_ = build_networks(
                input_shape, int(self.latent_dim), self.network, self.channels, self.hidden)
        self.input_shape_ = tuple(input_shape)
        self.arch_ = self._architecture(input_shape)

    def fit(self, X: np.ndarray, y: np.ndarray | None = None, pseudo: np.ndarray | None = None,
            mask: np.ndarray | None = None) -> StructuringAutoencoder:
        """Train on all of ``X``; ``y`` marks labeled items (``-1`` = unlabeled); ``pseudo`` optional pseudo-labels.

        ``mask`` (boolean, one per item) leaves the items it marks False out of the training: never drawn, labeled or
        pseudo-labeled. A memory map with the rows of deleted items among the others is then trained on as it lies.
        """
        self.check_params()
        x = as_pool_array(X)
        n = len(x)
        y = np.full(n, -1, dtype=np.int64) if y is None else np.asarray(y, dtype=np.int64)
        if len(y) != n:
            raise ValueError(f"X has {n} items but y has {len(y)}")
        rows = None
        if mask is not None:
            mask = np.asarray(mask, bool)
            if mask.shape != (n,):
                raise ValueError(f"mask must hold one flag per item ({n}), got shape {mask.shape}")
            y = np.where(mask, y, -1)
            rows = None if mask.all() else torch.as_tensor(np.flatnonzero(mask))
        drawn = n if rows is None else len(rows)
        if drawn == 0:
            raise ValueError("cannot fit on an empty pool")
        check_finite(x)
        k = int(self.n_classes) if self.n_classes is not None else int(max(y.max() + 1, 1))
        if y.max() >= k or y.min() < -1:
            raise ValueError(f"labels must be -1 or in 0..{k - 1}")
        if self.random_state is not None:
            torch.manual_seed(int(self.random_state))
        rng = np.random.default_rng(self.random_state)
        dev = resolve_device(self.device)
        warm = self.warm_start and hasattr(self, "encoder_")
        if warm:
            old, new = getattr(self, "arch_", {}), self._architecture(x.shape[1:])
            changed = [key for key in {**old, **new} if old.get(key) != new.get(key)]
            if changed:
                log.info("warm start skipped: %s changed, so new networks are trained", ", ".join(changed))
                warm = False
            elif getattr(self, "input_range_", None) is None and input_range(x, mask) is not None:
                log.info("warm start skipped: the pool now reaches outside [0, 1], so new networks learn it scaled")
                warm = False
            elif hasattr(self, "pixels_") and (x.dtype == np.uint8) != self.pixels_:
                log.info("warm start skipped: the pool is now %s, so new networks learn it",
                         "uint8 pixels" if x.dtype == np.uint8 else "values, no longer uint8 pixels")
                warm = False
        if not warm:
            self._build(x.shape[1:])
            self.input_range_ = input_range(x, mask)
        if not warm or not hasattr(self, "pixels_"):  # a model saved before it was recorded learns it here
            self.pixels_ = x.dtype == np.uint8
        self.warm_started_ = warm
        set_n_features(self, x.shape[1:])
        contrast = float(self.contrastive) if x.ndim == 4 else 0.0
        if contrast > 0 and not (warm and hasattr(self, "head_")):
            self.head_ = projection_head(int(self.latent_dim))
        self.device_ = dev
        self.n_classes_ = k
        self.encoder_.to(dev).train()
        self.decoder_.to(dev).train()

        labeled = np.flatnonzero(y >= 0)
        counts = np.bincount(y[labeled], minlength=k).astype(np.float64)
        distances = self._distances(k)
        self.positions_ = class_positions(distances, int(self.latent_dim), counts)
        self.distances_ = distances

        xt = self._stage(x, dev)
        yt = torch.as_tensor(y, device=xt.device)
        pt = None
        if pseudo is not None and float(self.pseudo_weight) > 0:
            pseudo = np.asarray(pseudo, dtype=np.int64)
            if len(pseudo) != n or pseudo.max(initial=-1) >= k:
                raise ValueError(f"pseudo must hold {n} entries, -1 or a class in 0..{k - 1}")
            pt = torch.as_tensor(np.where((y >= 0) | (False if mask is None else ~mask), -1, pseudo), device=xt.device)
        pair = nn.ModuleList([self.encoder_, self.decoder_])
        params = list(pair.parameters())
        if contrast > 0:
            self.head_.to(dev).train()
            params += list(self.head_.parameters())
        decay = float(self.weight_decay)
        opt = (torch.optim.AdamW(params, lr=float(self.lr), weight_decay=decay) if decay > 0
               else torch.optim.Adam(params, lr=float(self.lr)))
        lam = float(self.lam)
        use_struct = lam > 0 and len(labeled) > 0
        cons_weight = lam * float(self.consistency) if augments(self.max_shift, self.flip, self.cutout) else 0.0
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                    if self.amp and dev.type == "cuda" else nullcontext())
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        steps = math.ceil(drawn / int(self.batch_size))
        if self.steps_per_epoch is not None:
            steps = min(steps, int(self.steps_per_epoch))
        schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(int(self.epochs) * steps, 1))
                    if self.lr_schedule == "cosine" else None)
        averaged = (AveragedModel(pair, multi_avg_fn=get_ema_multi_avg_fn(float(self.ema_decay)), use_buffers=True)
                    if float(self.ema_decay) > 0 else None)
        teacher = averaged.module[0] if averaged is not None and self.mean_teacher else None
        if not hasattr(self, "history_") or not warm:
            self.history_ = []
        bar = tqdm(range(int(self.epochs)), desc="train SAE", disable=not self.verbose, leave=False)
        for epoch in bar:
            t0 = time.perf_counter()
            targets = None
            if use_struct:
                targets = torch.as_tensor(self._targets(xt, y, labeled, counts), dtype=torch.float32, device=dev)
            perm = torch.randperm(drawn, generator=gen)[:steps * int(self.batch_size)]
            perm = (perm if rows is None else rows[perm]).to(xt.device)
            extras = None
            if use_struct and self.labeled_per_batch:
                extras = torch.as_tensor(rng.choice(labeled, (steps, int(self.labeled_per_batch)))).to(xt.device)
            sums = torch.zeros(2, device=dev)
            for s in range(steps):
                idx = perm[s * int(self.batch_size):(s + 1) * int(self.batch_size)]
                m = len(idx)  # the pool draw; labeled extras (drawn with replacement) follow it
                if extras is not None:
                    idx = torch.cat([idx, extras[s]])
                clean = self._as_input(_to_device(xt[idx], dev))
                xb = augment(clean, int(self.max_shift), bool(self.flip), gen, int(self.cutout))
                yb = yt[idx].to(dev, non_blocking=True)
                with autocast:
                    z = self.encoder_(xb)
                    rec = torch.mean((self.decoder_(z).float() - xb) ** 2)
                    loss = (1.0 - lam) * rec
                    struct = torch.zeros((), device=dev)
                    if targets is not None:
                        mask = (yb >= 0).unsqueeze(1)
                        diff = (z.float() - targets[yb.clamp(min=0)]) ** 2 * mask
                        struct = diff.sum() / (mask.sum() * z.shape[1]).clamp(min=1)
                        if pt is not None:
                            pb = pt[idx].to(dev, non_blocking=True)
                            pm = (pb >= 0).unsqueeze(1)
                            pdiff = (z.float() - targets[pb.clamp(min=0)]) ** 2 * pm
                            struct = struct + float(self.pseudo_weight) * pdiff.sum() / (
                                pm.sum() * z.shape[1]).clamp(min=1)
                        loss = loss + lam * struct
                        if float(self.mixup) > 0:
                            loss = loss + lam * float(self.mixup) * self._mixed_structure(xb, yb, targets, gen)
                    if cons_weight > 0 and clean.dim() == 4:
                        view = augment(clean, int(self.max_shift), bool(self.flip), gen, int(self.cutout))
                        if teacher is None:
                            z2 = self.encoder_(view)
                        else:
                            with torch.no_grad():
                                z2 = teacher(view)
                        loss = loss + cons_weight * torch.mean((z.float() - z2.float()) ** 2)
                    if contrast > 0:
                        crop = self.encoder_(random_resized_crop(
                            augment(clean[:m], int(self.max_shift), bool(self.flip), gen, int(self.cutout)), gen))
                        loss = loss + contrast * nt_xent(self.head_(z[:m].float()), self.head_(crop.float()))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if schedule is not None:
                    schedule.step()
                if averaged is not None:
                    averaged.update_parameters(pair)
                sums += torch.stack([rec.detach(), struct.detach()])
            means = (sums / steps).tolist()
            if not all(math.isfinite(v) for v in means) or not _finite_weights(self.encoder_, self.decoder_):
                raise FloatingPointError(f"the training diverged in epoch {epoch + 1}: its loss or weights are no "
                                         "longer finite (a smaller learning rate, lr, avoids it)")
            record = {"reconstruction": means[0], "structure": means[1]}
            record["seconds"] = time.perf_counter() - t0
            self.history_.append(record)
            del self.history_[:-HISTORY_LIMIT]
            bar.set_postfix(rec=f"{record['reconstruction']:.4f}", struct=f"{record['structure']:.4f}")
            if self.on_epoch is not None:
                self.on_epoch(epoch + 1, int(self.epochs), record)
        if averaged is not None:
            pair.load_state_dict(averaged.module.state_dict())
        self.encoder_.eval()
        self.decoder_.eval()
        if use_struct:
            self.targets_ = self._targets(xt, y, labeled, counts)
        else:
            self.targets_ = self.positions_.copy()
        return self

    def _mixed_structure(self, xb: torch.Tensor, yb: torch.Tensor, targets: torch.Tensor,
                         gen: torch.Generator) -> torch.Tensor:
        """Mean squared distance of blended labeled items' codes from the blend of their targets."""
        lab = torch.nonzero(yb >= 0).squeeze(1)
        if len(lab) < 2:
            return torch.zeros((), device=xb.device)
        blend, a, other = blend_pairs(xb[lab], gen)
        t = targets[yb[lab]]
        target = a[:, None] * t + (1 - a)[:, None] * t[other]
        return torch.mean((self.encoder_(blend).float() - target) ** 2)

    @staticmethod
    def _stage(x: np.ndarray, dev: torch.device) -> torch.Tensor:
        """Put the whole pool on the accelerator when it fits comfortably, else keep it on the host.

        The pool keeps its dtype (uint8 stays uint8), and a memmap stays on disk. A pool kept on
        the host is not pinned: that would copy all of it into page-locked RAM, while each batch is
        a gather (``xt[idx]``) that makes a new, pageable tensor anyway.
        """
        t = _tensor(x)
        if dev.type == "cuda" and t.dtype not in HOST_DTYPES:
            free, _ = torch.cuda.mem_get_info(dev)
            if t.nbytes < 0.5 * free:
                return t.to(dev)
        return t

    @torch.no_grad()
    def _encode_tensor(self, xt: torch.Tensor, idx: np.ndarray, batch: int = 2048) -> np.ndarray:
        was_training = self.encoder_.training
        self.encoder_.eval()
        out = []
        for s in range(0, len(idx), batch):
            sel = torch.as_tensor(idx[s:s + batch], device=xt.device)
            out.append(self.encoder_(self._as_input(_to_device(xt[sel], self.device_))).float().cpu().numpy())
        self.encoder_.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, int(self.latent_dim)), np.float32)

    def _as_input(self, t: torch.Tensor) -> torch.Tensor:
        """One batch as the networks take it: float32, mapped into [0, 1] where the pool was not (``input_range_``).

        A model that learned a scaled pool takes every batch by its values, uint8 too, as that pool was taken."""
        scaled = getattr(self, "input_range_", None)
        if scaled is None:
            return _to_float(t)
        t = t.float()
        low, span = (torch.as_tensor(a, device=t.device) for a in scaled)
        return ((t - low) / span).clamp_(*SCALED_BOUNDS)

    def _targets(self, xt: torch.Tensor, y: np.ndarray, labeled: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Class targets for this epoch: only labeled codes enter the Procrustes fit."""
        z = self._encode_tensor(xt, labeled).astype(np.float64)
        k = len(counts)
        means = np.zeros((k, z.shape[1]))
        np.add.at(means, y[labeled], z)
        means /= np.maximum(counts, 1.0)[:, None]
        return procrustes_targets(self.positions_, means, counts)

    def learned_pixels(self) -> bool:
        """Whether the pool this model learned was uint8 pixels: its integer batches are then pixels too. A model
        saved before it was recorded takes them by their values, as it did."""
        return bool(getattr(self, "pixels_", False))

    def _check_fitted(self) -> None:
        check_is_fitted(self, "encoder_")

    @torch.no_grad()
    def transform(self, X: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """Latent codes, computed batch by batch so the pool never has to fit on the device.

        The codes go into one array allocated at the first batch: small per-batch arrays kept
        between the freed float batches stop glibc from reusing that memory (on the CPU a
        million-item pool grew the RSS by 3.4 GB that way).
        """
        self._check_fitted()
        self.encoder_.eval()
        out = None
        for s in range(0, len(X), batch_size):
            xb = as_trained(X[s:s + batch_size], self.learned_pixels())
            z = self.encoder_(self._as_input(_to_device(_tensor(xb), self.device_))).float().cpu().numpy()
            if out is None:
                out = np.empty((len(X), z.shape[1]), np.float32)
            out[s:s + len(z)] = z
        return out if out is not None else np.zeros((0, int(self.latent_dim)), np.float32)

    @torch.no_grad()
    def inverse_transform(self, Z: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """Decode latent codes back to items."""
        self._check_fitted()
        self.decoder_.eval()
        out = []
        z = np.asarray(Z, dtype=np.float32)
        for s in range(0, len(z), batch_size):
            out.append(self.decoder_(torch.from_numpy(z[s:s + batch_size]).to(self.device_)).float().cpu().numpy())
        items = np.concatenate(out) if out else np.zeros((0, *self.input_shape_), np.float32)
        scaled = getattr(self, "input_range_", None)
        return items if scaled is None else items * scaled[1] + scaled[0]

    def reconstruction_error(self, X: np.ndarray, batch_size: int = 2048) -> float:
        """Mean squared reconstruction error over ``X``, batch by batch: a pool-sized reconstruction may not fit."""
        self._check_fitted()
        x = np.asarray(X)
        total = 0.0
        scaled = getattr(self, "input_range_", None) is not None
        for s in range(0, len(x), batch_size):
            part = as_trained(x[s:s + batch_size], self.learned_pixels())  # in the units inverse_transform gives
            xb = part.astype(np.float32) if scaled else as_float_array(part)  # back: a scaled pool's are its values
            total += float(np.sum((self.inverse_transform(self.transform(part)) - xb) ** 2, dtype=np.float64))
        return total / x.size if x.size else float("nan")

    def to(self, device: str | torch.device) -> StructuringAutoencoder:
        """Move a fitted model (e.g. one loaded from disk) to another device."""
        self._check_fitted()
        self.device_ = resolve_device(device)
        self.encoder_.to(self.device_)
        self.decoder_.to(self.device_)
        return self
