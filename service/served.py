"""The served version: one immutable snapshot that ``/predict``, ``/ranking`` and the push all read.

A training produces one; new tasks produce a new one with their predictions merged in
(:meth:`ServedVersion.with_items`). Nothing mutates a snapshot, so readers never see
half an update. Per task it holds the predicted class, the view score (the query
strategy's value mapped into [0, 1], ordered exactly as the ranking: lower = ask first)
and the paper's normalised confidence; and the ranking head of unlabeled tasks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.acquisition import QueryStrategy, get_strategy, rank
from model.sae_classifier import SAEClassifier

LATENT_KEEP = 20000


@dataclass(frozen=True)
class Scored:
    """Predictions for a batch of items, in the order given: class, strategy value, view score, confidence."""

    pred: np.ndarray
    value: np.ndarray
    score: np.ndarray
    confidence: np.ndarray


def decision_scores(model: SAEClassifier, x: np.ndarray, batch: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """SVM scores and latent codes of every item, encoded batch by batch (the pool may be a memmap)."""
    zs, ds = [], []
    for s in range(0, len(x), batch):
        z = model.transform(x[s:s + batch])
        zs.append(z)
        ds.append(model.svm_.decision_function(z).astype(np.float32))
    if not zs:
        k = model.n_classes_
        return np.zeros((0, k), np.float32), np.zeros((0, model.sae_.latent_dim), np.float32)
    return np.concatenate(ds), np.concatenate(zs)


def score(model: SAEClassifier, d: np.ndarray, strategy: QueryStrategy) -> Scored:
    """Every item's prediction and its place in the ranking, through the shared :func:`rank`."""
    q, view = rank(strategy, d, len(d))
    value = np.empty(len(d))
    value[q.indices] = q.scores
    return Scored(np.argmax(d, axis=1), value, view, model.svm_.confidence_from_scores(d.astype(np.float64)))


@dataclass(frozen=True)
class ServedVersion:
    number: int
    name: str
    model: SAEClassifier
    strategy: str
    labels: dict[int, int]
    ids: np.ndarray
    pred: np.ndarray
    score: np.ndarray
    confidence: np.ndarray
    head_ids: np.ndarray
    head_values: np.ndarray
    latent: dict = field(default_factory=dict)

    @classmethod
    def build(cls, number: int, name: str, model: SAEClassifier, strategy: str, labels: dict[int, int],
              ids: np.ndarray, x: np.ndarray, keep: int, seed: int = 0) -> ServedVersion:
        """Score every item once; keep the ``keep`` most uncertain unlabeled tasks as the head."""
        d, z = decision_scores(model, x)
        scored = score(model, d, get_strategy(strategy, seed))
        ids = np.asarray(ids, np.int64)
        y = np.fromiter((labels.get(int(t), -1) for t in ids), np.int64, len(ids))
        unl = np.flatnonzero(y < 0)
        head = unl[np.lexsort((ids[unl], scored.value[unl]))[:keep]]
        sample = np.arange(len(ids))
        if len(sample) > LATENT_KEEP:
            sample = np.sort(np.random.default_rng(seed).choice(sample, LATENT_KEEP, replace=False))
        order = np.argsort(ids, kind="stable")
        return cls(number, name, model, strategy, dict(labels), ids[order], scored.pred[order],
                   scored.score[order], scored.confidence[order], ids[head], scored.value[head],
                   {"z": z[sample], "y": y[sample], "ids": ids[sample]})

    def lookup(self, task_ids: np.ndarray) -> np.ndarray:
        """Position of each id in this snapshot, or -1."""
        t = np.asarray(task_ids, np.int64)
        pos = np.searchsorted(self.ids, t)
        pos = np.clip(pos, 0, max(len(self.ids) - 1, 0))
        hit = (len(self.ids) > 0) & (self.ids[pos] == t) if len(self.ids) else np.zeros(len(t), bool)
        return np.where(hit, pos, -1)

    def with_items(self, ids: np.ndarray, scored: Scored, keep: int) -> ServedVersion:
        """A new snapshot that also answers for these (new, unlabeled) tasks and ranks them into the head."""
        ids = np.asarray(ids, np.int64)
        fresh = self.lookup(ids) < 0
        ids, pred, score, conf, value = (ids[fresh], scored.pred[fresh], scored.score[fresh],
                                         scored.confidence[fresh], scored.value[fresh])
        all_ids = np.concatenate([self.ids, ids])
        order = np.argsort(all_ids, kind="stable")
        head_ids = np.concatenate([self.head_ids, ids])
        head_values = np.concatenate([self.head_values, value])
        top = np.lexsort((head_ids, head_values))[:keep]
        return dataclasses.replace(
            self, ids=all_ids[order], pred=np.concatenate([self.pred, pred])[order],
            score=np.concatenate([self.score, score])[order],
            confidence=np.concatenate([self.confidence, conf])[order],
            head_ids=head_ids[top], head_values=head_values[top])

    def ranking(self, limit: int, exclude: set[int] | None = None) -> list[tuple[int, float]]:
        """The head in ranking order, without tasks labeled since (``exclude``)."""
        out = []
        for t, v in zip(self.head_ids.tolist(), self.head_values.tolist(), strict=True):
            if exclude and t in exclude:
                continue
            out.append((t, v))
            if len(out) >= limit:
                break
        return out


def save_served(served: ServedVersion, path: Path) -> None:
    """The scored snapshot beside the version, so a restart serves at once without encoding the pool."""
    keys = np.fromiter(served.labels.keys(), np.int64, len(served.labels))
    vals = np.fromiter(served.labels.values(), np.int64, len(served.labels))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, ids=served.ids, pred=served.pred, score=served.score, confidence=served.confidence,
             head_ids=served.head_ids, head_values=served.head_values, label_ids=keys, label_classes=vals,
             latent_z=served.latent.get("z", np.zeros((0, 0))), latent_y=served.latent.get("y", np.zeros(0)),
             latent_ids=served.latent.get("ids", np.zeros(0)), strategy=np.array(served.strategy))
    tmp.replace(path)


def load_served(path: Path, number: int, name: str, model: SAEClassifier) -> ServedVersion:
    with np.load(path, allow_pickle=False) as a:
        labels = dict(zip(a["label_ids"].tolist(), a["label_classes"].tolist(), strict=True))
        return ServedVersion(number, name, model, str(a["strategy"]), labels, a["ids"], a["pred"], a["score"],
                             a["confidence"], a["head_ids"], a["head_values"],
                             {"z": a["latent_z"], "y": a["latent_y"], "ids": a["latent_ids"]})
