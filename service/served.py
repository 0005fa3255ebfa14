"""The served version: one immutable snapshot that ``/predict``, ``/ranking`` and the push all read.

A training produces one; new tasks produce a new one with their predictions merged in
(:meth:`ServedVersion.with_items`). Nothing mutates a snapshot, so readers never see
half an update. Per task it holds the predicted class, the view score (the query
strategy's value mapped into [0, 1], ordered exactly as the ranking: lower = ask first)
and the paper's normalised confidence; and the ranking head of unlabeled tasks.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.acquisition import (
    PartialRanking,
    QueryResult,
    QueryStrategy,
    get_strategy,
    merge_ranking,
    rank,
    rank_part,
    view_scores,
)
from model.sae_classifier import SAEClassifier
from model.stopping import agreement, stop_set
from service.pool_store import ROOM_SPARE, Mark, replacing, with_capacity

LATENT_KEEP = 20000
_COLUMNS = ("ids", "pred", "score", "confidence")
_ROOM_LOCK = threading.Lock()


class _Room:
    """Spare room past the end of a snapshot's per-task columns, shared with the snapshots made from it.

    New tasks come with ever larger ids, so a snapshot that answers for them is the old one with rows
    appended: the snapshot that ends where the room's used part ends writes them in place, and a pool of
    millions costs O(new tasks) a batch instead of a copy of every column. Older snapshots view a prefix
    that is never written again.
    """

    def __init__(self, columns: dict[str, np.ndarray], used: int) -> None:
        self.columns = columns
        self.used = used


def _appended(version: ServedVersion, new: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], _Room]:
    """The version's columns with ``new`` appended, in place where its room allows."""
    n, k = len(version.ids), len(new["ids"])
    with _ROOM_LOCK:
        room = version._room
        if room is None or room.used != n:
            room = _Room({c: np.asarray(getattr(version, c), np.result_type(getattr(version, c), new[c]))
                          for c in _COLUMNS}, n)
        for c in _COLUMNS:
            room.columns[c] = with_capacity(room.columns[c], n, n + k, spare=ROOM_SPARE)
            room.columns[c][n:n + k] = new[c]
        room.used = n + k
    return {c: room.columns[c][:n + k] for c in _COLUMNS}, room


@dataclass(frozen=True)
class Scored:
    """Predictions for a batch of items, in the order given: class, strategy value, view score, confidence."""

    pred: np.ndarray
    value: np.ndarray
    score: np.ndarray
    confidence: np.ndarray


def decision_scores(model: SAEClassifier, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SVM scores and latent codes of every item (``transform`` encodes batch by batch; the pool may be a memmap).

    The scores stay float64, as the simulator ranks them: in float32 the smallest margins, the
    ones the ranking is about, can tie or swap.
    """
    z = model.transform(x)
    return np.asarray(model.svm_.decision_function(z), np.float64), z


def score(model: SAEClassifier, d: np.ndarray, strategy: QueryStrategy, head: int = 0,
          candidates: np.ndarray | None = None, codes: np.ndarray | None = None) -> tuple[Scored, QueryResult]:
    """Every item's prediction and place in the ranking, and the ``head`` best candidates, through :func:`rank`."""
    r = rank(strategy, d, head, candidates, codes)
    confidence = model.svm_.confidence_from_scores(d.astype(np.float64))
    return Scored(np.argmax(d, axis=1), r.values, r.view, confidence), r.top


@dataclass(frozen=True)
class ShardScores:
    """One shard of a pool scored (plain arrays, so it can come back from another process or machine).

    Every item's class and confidence, its share of the ranking (values, view scores and a
    bounded shortlist), and its share of the latent picture: the ``LATENT_KEEP`` unlabeled and
    the ``LATENT_KEEP`` labeled ids of the shard with the smallest hash, so the merged sample
    does not depend on the sharding, and its shortlist where the ranking part carries no codes
    of it (the head's codes, for the picture's rings, come from one or the other).
    """

    ids: np.ndarray
    pred: np.ndarray
    confidence: np.ndarray
    part: PartialRanking
    latent_ids: np.ndarray
    latent_z: np.ndarray


def score_shard(model: SAEClassifier, ids: np.ndarray, x: np.ndarray, strategy: QueryStrategy, keep: int,
                labeled: np.ndarray, latent_keep: int = LATENT_KEEP) -> ShardScores:
    """Score one shard of the pool; ``labeled`` (a boolean mask) excludes items from the ranking."""
    ids = np.asarray(ids, np.int64)
    labeled = np.asarray(labeled, bool)
    d, z = decision_scores(model, x)
    part = rank_part(strategy, d, keep, ~labeled, z)
    shortlist = part.rows if part.codes is None else np.zeros(0, np.int64)
    return ShardScores(ids, np.argmax(d, axis=1), model.svm_.confidence_from_scores(d.astype(np.float64)), part,
                       *_picture_rows(ids, z, labeled, shortlist, latent_keep))


def _with_head(ids: np.ndarray, z: np.ndarray, head: np.ndarray,
               shards: list[ShardScores]) -> tuple[np.ndarray, np.ndarray]:
    """The picture's sample with the head's codes added (the rings), from the shards' shortlists."""
    missing = head[~np.isin(head, ids)]
    if len(missing) == 0:
        return ids, z
    found_ids, found_z = [], []
    for s in shards:
        cand, codes = (s.ids[s.part.rows], s.part.codes) if s.part.codes is not None else (s.latent_ids, s.latent_z)
        sel = np.isin(cand, missing)
        found_ids.append(cand[sel])
        found_z.append(np.asarray(codes)[sel])
    return np.concatenate([ids, *found_ids]).astype(np.int64), np.concatenate([z, *found_z]).astype(z.dtype)


def _picture_rows(ids: np.ndarray, z: np.ndarray, labeled: np.ndarray, shortlist: np.ndarray,
                  size: int) -> tuple[np.ndarray, np.ndarray]:
    """The ids and codes the latent picture draws: a hash sample of the unlabeled, the labeled apart (a sample of
    the whole pool would hold few of them in a pool of millions, and they carry the colours), and the shortlist,
    which holds the tasks the picture rings."""
    picked = np.isin(ids, stop_set(ids[~labeled], size)) | np.isin(ids, stop_set(ids[labeled], size))
    picked[shortlist] = True  # about the head's size: strategies with a wider shortlist send its codes anyway
    rows = np.flatnonzero(picked)
    return ids[rows], z[rows]


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
    head_view: np.ndarray | None = None
    rows_mark: Mark | None = None  # the pool store's rows its scores cover (PoolStore.ids_since)
    _room: _Room | None = field(default=None, repr=False, compare=False)

    @property
    def class_names(self) -> list[str]:
        """The classes the model was trained on, in its index order (the label config may have changed since)."""
        return [str(c) for c in self.model.class_names]

    def _head_view(self) -> np.ndarray:
        """The head's view scores (snapshots saved before they were kept: recomputed from the values)."""
        if self.head_view is not None:
            return self.head_view
        return view_scores(get_strategy(self.strategy), self.head_values, getattr(self.model, "n_classes_", 2))

    @classmethod
    def build(cls, number: int, name: str, model: SAEClassifier, strategy: str, labels: dict[int, int],
              ids: np.ndarray, x: np.ndarray, keep: int, seed: int = 0) -> ServedVersion:
        """Score every item once; keep the ``keep`` most uncertain unlabeled tasks as the head."""
        ids = np.asarray(ids, np.int64)
        labeled = np.isin(ids, np.fromiter(labels, np.int64, len(labels)))
        shard = score_shard(model, ids, x, get_strategy(strategy, seed), keep, labeled)
        return cls.from_shards(number, name, model, strategy, labels, [shard], keep, seed)

    @classmethod
    def from_shards(cls, number: int, name: str, model: SAEClassifier, strategy: str, labels: dict[int, int],
                    shards: list[ShardScores], keep: int, seed: int = 0) -> ServedVersion:
        """One snapshot from a pool scored in shards (in pool order), ranked as if it were scored whole."""
        ids = np.concatenate([s.ids for s in shards]).astype(np.int64)
        head = merge_ranking(get_strategy(strategy, seed), [s.part for s in shards], keep)
        view = head.view
        pred = np.concatenate([s.pred for s in shards])
        confidence = np.concatenate([s.confidence for s in shards])
        latent_ids = np.concatenate([s.latent_ids for s in shards]).astype(np.int64)
        latent_z = np.concatenate([s.latent_z for s in shards])
        lab = np.isin(latent_ids, np.fromiter(labels, np.int64, len(labels)))
        kept = (np.isin(latent_ids, stop_set(latent_ids[~lab], LATENT_KEEP))
                | np.isin(latent_ids, stop_set(latent_ids[lab], LATENT_KEEP)))  # the shards' samples as one pool's
        latent_ids, latent_z = latent_ids[kept], latent_z[kept]
        latent_ids, latent_z = _with_head(latent_ids, latent_z, ids[head.top.indices], shards)
        y = np.fromiter((labels.get(int(t), -1) for t in latent_ids), np.int64, len(latent_ids))
        order = np.argsort(ids, kind="stable")
        top = head.top.indices
        return cls(number, name, model, strategy, dict(labels), ids[order], pred[order], view[order],
                   confidence[order], ids[top], head.top.scores, {"z": latent_z, "y": y, "ids": latent_ids},
                   view[top])

    @classmethod
    def unscored(cls, number: int, name: str, model: SAEClassifier, strategy: str) -> ServedVersion:
        """A version saved without its scored snapshot: every task is scored when asked for."""
        empty = np.zeros(0)
        ids = np.zeros(0, np.int64)
        return cls(number, name, model, strategy, {}, ids, ids, empty, empty, ids, empty)

    def lookup(self, task_ids: np.ndarray) -> np.ndarray:
        """Position of each id in this snapshot, or -1."""
        t = np.asarray(task_ids, np.int64)
        if len(self.ids) == 0:
            return np.full(len(t), -1)
        pos = np.clip(np.searchsorted(self.ids, t), 0, len(self.ids) - 1)
        return np.where(self.ids[pos] == t, pos, -1)

    def with_items(self, ids: np.ndarray, scored: Scored, keep: int,
                   rows_mark: Mark | None = None, codes: np.ndarray | None = None) -> ServedVersion:
        """A new snapshot that also answers for these (new, unlabeled) tasks and ranks them into the head.

        The head is merged by view score, which orders it exactly as the view does for every strategy.
        Tasks with ids past every known one (as Label Studio numbers new tasks) are appended without copying
        the pool's columns; others are merged in, O(pool). With their ``codes``, those that enter the head
        join the latent picture, whose rings are the head's first tasks.
        """
        ids = np.asarray(ids, np.int64)
        fresh = self.lookup(ids) < 0
        order = np.argsort(ids[fresh], kind="stable")
        new = {"ids": ids[fresh][order], "pred": scored.pred[fresh][order], "score": scored.score[fresh][order],
               "confidence": scored.confidence[fresh][order]}
        value = scored.value[fresh][order]
        mark = rows_mark if rows_mark is not None else self.rows_mark
        if len(new["ids"]) == 0:
            return dataclasses.replace(self, rows_mark=mark)
        room = None
        if len(self.ids) == 0 or new["ids"][0] > self.ids[-1]:
            columns, room = _appended(self, new)
        else:
            columns = {c: np.concatenate([getattr(self, c), new[c]]) for c in _COLUMNS}
            merged = np.argsort(columns["ids"], kind="stable")
            columns = {c: a[merged] for c, a in columns.items()}
        head_ids = np.concatenate([self.head_ids, new["ids"]])
        head_values = np.concatenate([self.head_values, value])
        head_view = np.concatenate([self._head_view(), new["score"]])
        top = np.lexsort((head_ids, head_view))[:keep]
        latent = self.latent
        entered = top[top >= len(self.head_ids)] - len(self.head_ids)  # new tasks in the head: most batches, none
        if codes is not None and len(entered) and latent.get("z") is not None:
            entered = entered[~np.isin(new["ids"][entered], latent["ids"])]
            if len(entered):
                # those that entered before and have left the head go, or weeks of new tasks without a training
                # would pile up in the picture
                joined = latent.get("joined", np.zeros(len(latent["ids"]), bool))
                kept = ~joined | np.isin(latent["ids"], head_ids[top])
                z = np.asarray(codes)[fresh][order][entered]
                latent = {"z": np.concatenate([latent["z"][kept], z.astype(latent["z"].dtype)]),
                          "y": np.concatenate([latent["y"][kept], np.full(len(entered), -1, latent["y"].dtype)]),
                          "ids": np.concatenate([latent["ids"][kept], new["ids"][entered]]).astype(np.int64),
                          "joined": np.concatenate([joined[kept], np.ones(len(entered), bool)])}
        return dataclasses.replace(
            self, **columns, head_ids=head_ids[top], head_values=head_values[top], head_view=head_view[top],
            latent=latent, rows_mark=mark, _room=room)

    def agreement_with(self, previous: ServedVersion, size: int) -> float | None:
        """Cohen's kappa of the two versions' classes on a fixed set of tasks unlabeled in this one.

        The stop set is chosen by a hash of the task id among the tasks both versions
        scored, so successive comparisons look at (almost) the same tasks.
        """
        both = self.ids[(previous.lookup(self.ids) >= 0)]
        both = both[~np.isin(both, np.fromiter(self.labels, np.int64, len(self.labels)))]
        if len(both) == 0:
            return None
        items = stop_set(both, size)
        return agreement(previous.pred[previous.lookup(items)], self.pred[self.lookup(items)])

    def ranking(self, limit: int, exclude: set[int] | None = None) -> list[tuple[int, float]]:
        """The head in ranking order, without tasks labeled since (``exclude``)."""
        out: list[tuple[int, float]] = []
        if limit <= 0:
            return out
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
    with replacing(path, ".tmp.npz") as fh:
        np.savez(fh, ids=served.ids, pred=served.pred, score=served.score, confidence=served.confidence,
                 head_ids=served.head_ids, head_values=served.head_values, label_ids=keys, label_classes=vals,
                 latent_z=served.latent.get("z", np.zeros((0, 0))), latent_y=served.latent.get("y", np.zeros(0)),
                 latent_ids=served.latent.get("ids", np.zeros(0)), strategy=np.array(served.strategy),
                 head_view=served._head_view())


def load_served(path: Path, number: int, name: str, model: SAEClassifier) -> ServedVersion:
    with np.load(path, allow_pickle=False) as a:
        labels = dict(zip(a["label_ids"].tolist(), a["label_classes"].tolist(), strict=True))
        return ServedVersion(number, name, model, str(a["strategy"]), labels, a["ids"], a["pred"], a["score"],
                             a["confidence"], a["head_ids"], a["head_values"],
                             {"z": a["latent_z"], "y": a["latent_y"], "ids": a["latent_ids"]},
                             a["head_view"] if "head_view" in a.files else None)
