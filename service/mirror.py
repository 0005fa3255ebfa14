"""A local mirror of one Label Studio project: decoded items on disk, annotations in memory.

The first connection ingests the project once (pages of tasks, items fetched by a few
threads, resumable: items already stored are not fetched again). After that the mirror
changes only by what changed in Label Studio: webhook payloads (annotations created,
updated or deleted; tasks created or deleted) and a reconcile pass every poll. It reads a few
counters of the project and the tasks Label Studio saved since the last poll (a few small
requests when nothing moved) and stores the new tasks among them. It reads every task id only
when the task count then disagrees with the mirror's (a deletion whose webhook was lost), and
every labeled task only when the annotation count differs at two polls running (a change that
saved no task) or on a slow timer. A poll and a version therefore read O(changes) from Label
Studio, not the whole project.

Items live in a :class:`~service.pool_store.PoolStore` (memory-mapped, append-only);
annotations, the queue project's labels, unreadable tasks and the sync state live in a
:class:`~service.mirror_db.MirrorDB` (``mirror.db``), where a save writes only what changed.
"""

from __future__ import annotations

import copy
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from connectors.annotations import resolve_label
from connectors.item_codec import ItemCodec, pick_image_format
from connectors.label_config import LabelConfig
from connectors.label_studio import LabelStudioClient, LabelStudioError, parse_time
from connectors.task_data import DataFetcher, TaskDataError
from service.mirror_db import MirrorDB, MirrorDBError, Snapshot
from service.pool_store import COMPACT_DEAD_SHARE, PoolStore

log = logging.getLogger("sae_backend.mirror")
Progress = Callable[[str, float], None]
REMEMBER_REMOVED = 100_000  # deleted task ids kept: a task deleted before or while add_tasks reads it is not stored
_ANNOTATION_FIELDS = ("id", "task", "result", "was_cancelled", "ground_truth", "created_at", "updated_at")
_COUNTERS = ("task_number", "num_tasks_with_annotations", "total_annotations_number", "skipped_annotations_number",
             "ground_truth_number")


def _slim(annotation: dict) -> dict:
    return {k: annotation.get(k) for k in _ANNOTATION_FIELDS if k in annotation}


def _data_value(task: dict, key: str) -> object:
    """The task's item field; None where it has none, or its ``data`` is not an object (a bad import or webhook)."""
    data = task.get("data")
    return data.get(key) if isinstance(data, dict) else None


def _most_common_shape(loaded: list) -> tuple[int, ...] | None:
    """A first batch fixes the project's item shape by its majority, not by whichever task came first."""
    shapes = Counter(tuple(i.shape) for i in loaded if isinstance(i, np.ndarray))
    return shapes.most_common(1)[0][0] if shapes else None


def _newer(a: dict, b: dict) -> bool:
    """Whether copy ``a`` of an annotation was saved after copy ``b``; without both times, no."""
    ta, tb = parse_time(a.get("updated_at")), parse_time(b.get("updated_at"))
    return ta is not None and tb is not None and ta > tb


def _by_id(annotations: list[dict]) -> list[dict]:
    return sorted(annotations, key=lambda a: str(a.get("id")))


def _chunks(items: Iterable[dict], size: int) -> Iterable[list[dict]]:
    chunk: list[dict] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class _Words:
    """What webhooks said while a scan read Label Studio: on each annotation they named, theirs is the newer word."""

    by_task: dict[int, dict[int, dict | None]] = field(default_factory=dict)  # task -> {annotation id: it, or None}
    deleted: set[int] = field(default_factory=set)  # annotation ids deleted, on whichever task a page shows them

    def said(self, task_id: int, annotation: dict) -> None:
        self.by_task.setdefault(int(task_id), {})[annotation.get("id")] = annotation

    def gone(self, ids: set[int]) -> None:
        self.deleted |= ids
        for said in self.by_task.values():
            for i in ids & said.keys():
                said[i] = None

    def over(self, task_id: int, read: list[dict]) -> list[dict]:
        """A task's annotations as a page read them, with every later webhook's word applied (a deletion always;
        a copy unless the page's own was saved later: webhooks may arrive out of order)."""
        said = self.by_task.get(int(task_id), {})
        pages = {a.get("id"): a for a in read if a.get("id") not in self.deleted}
        for i, a in said.items():
            if a is None:
                pages.pop(i, None)
            elif i not in pages or not _newer(pages[i], a):
                pages[i] = a
        return list(pages.values())

    def over_all(self, read: dict[int, list[dict]]) -> dict[int, list[dict]]:
        """A scan's read of every task, with the webhooks' words applied; tasks left without annotations dropped."""
        merged = {t: self.over(t, read.get(t, [])) for t in set(read) | set(self.by_task)}
        return {t: a for t, a in merged.items() if a}


FORMAT_SAMPLE = 16
OVERLAP_SECONDS = 120.0  # a read of saved tasks goes back this far before the last save the previous read saw: a
# save is stamped when it starts and seen when it commits, and Label Studio's servers may differ a little in clock
_clock = time.time  # when a read began, on this machine (a seam for tests)
TRIES = 3  # fetches of a task that failed for a temporary reason before it counts as unreadable


class ProjectMirror:
    """Everything the backend knows about one project's tasks, kept up to date by changes."""

    def __init__(self, directory: Path | str, project_id: int, image_size: int | None = None,
                 image_bit_depth: int | None = None) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.project_id = int(project_id)
        self.store = PoolStore(self.dir / "pool")
        self.lock = threading.RLock()
        self.writer = threading.RLock()
        self._saving = threading.Lock()
        self.db = MirrorDB(self.dir / "mirror.db", legacy_json=self.dir / "mirror.json")
        self.annotations: dict[int, list[dict]] = {}
        self.queue_annotations: dict[int, list[dict]] = {}
        self.skipped: dict[int, str] = {}
        self._unreadable_retried = False  # set by the first reconcile of this process, which tries them again
        self.retrying: dict[int, int] = {}  # tasks whose fetch failed for a temporary reason: tries so far
        self._words: dict[bool, _Words] = {}  # per scan running (queue or not): what webhooks said meanwhile
        self._resolved: dict[int, tuple] = {}  # task -> (its annotation list, its queue list, their label)
        self._resolved_for: tuple | None = None
        self._index: dict[bool, dict[int, int]] = {}  # per store (queue or not): annotation id -> task
        self._removed: dict[int, None] = {}  # the latest deleted ids (Label Studio never reuses one), oldest first
        self.state: dict[str, Any] = {"ingested": False, "fmt": {}, "counters": {}, "queue_counters": {},
                                      "full_scan_at": 0.0}
        self._load(image_bit_depth)
        self._settle_format({"size": image_size, "bits": image_bit_depth})

    def _settle_format(self, wanted: dict[str, int | None]) -> None:
        """The settings' image form applies until the project's first images fix it; after that a change would
        scale new images unlike the stored ones, so it is named in the log and not taken."""
        fmt = self.state["fmt"]
        if "mode" not in fmt:
            fmt.update({k: int(v) for k, v in wanted.items() if v})
            for k in [k for k, v in wanted.items() if not v]:
                fmt.pop(k, None)
            return
        for key, setting in (("size", "IMAGE_SIZE"), ("bits", "IMAGE_BIT_DEPTH")):
            if wanted[key] and fmt.get(key, 16 if key == "bits" else None) != wanted[key]:  # bits unset: read as 16
                log.warning("project %s: %s=%s is not taken: the project's images are stored with %s %s; delete "
                            "%s to read them all again with it", self.project_id, setting, wanted[key], key,
                            fmt.get(key) or "unset", self.dir)

    # ---- persistence ------------------------------------------------------------------------------
    def _load(self, bits: int | None) -> None:
        """``bits`` (the setting) is taken as the depth of images stored under a mirror that cannot be read:
        the store keeps their shape, not how they were scaled."""
        try:
            saved = self.db.load()
        except MirrorDBError as e:  # kept aside; a fresh ingest rebuilds it
            self.db.set_aside()
            log.error("project %s: the mirror in %s was unreadable (%s); the project is read from Label Studio again",
                      self.project_id, self.dir, e)
            shape = self.store.item_shape
            if shape is not None and len(shape) == 3:  # the stored images fix the format new ones must match
                self.state["fmt"].update(mode="L" if shape[0] == 1 else "RGB", size=int(shape[1]),
                                         **({"bits": int(bits)} if bits else {}))
            return
        if saved is None:
            return
        self.annotations, self.queue_annotations = saved.annotations, saved.queue_annotations
        # a task stored just before a kill, whose skip or retry the last save still recorded, is counted once
        self.skipped = {t: why for t, why in saved.skipped.items() if t not in self.store}
        self.retrying = {t: n for t, n in saved.retrying.items() if t not in self.store}
        self.state.update(saved.state)

    def save(self) -> None:
        """One save at a time: webhook, poll and job threads all save.

        The dicts are copied under the lock and written out of it (webhooks wait on that lock);
        only the tasks whose annotation lists were replaced since the last save are written.
        """
        with self._saving:
            with self.lock:  # lists are replaced, never changed in place, so shallow copies are a snapshot
                snapshot = Snapshot(dict(self.annotations), dict(self.queue_annotations), dict(self.skipped),
                                    dict(self.retrying), copy.deepcopy(self.state))
            self.db.save(snapshot)

    # ---- what training reads ----------------------------------------------------------------------
    @property
    def ingested(self) -> bool:
        return bool(self.state.get("ingested"))

    @property
    def fmt(self) -> dict:
        return dict(self.state.get("fmt") or {})

    def codec(self, config: LabelConfig) -> ItemCodec:
        fmt = self.fmt
        return ItemCodec(config.kind, fmt.get("mode", "L"), fmt.get("size"), fmt.get("bits"))

    def labels(self, config: LabelConfig) -> tuple[dict[int, int], dict[int, str]]:
        """Usable label per live task (class index), and the tasks whose annotations cannot be used, with why.

        Every webhook asks this, so a task's resolved label is kept until its annotation lists are
        replaced (every change replaces them): only changed tasks are resolved again.
        """
        key = (config.from_name, tuple(config.classes))
        with self.lock:
            cache = self._resolved if self._resolved_for == key else {}
            tasks = np.fromiter(set(self.annotations) | set(self.queue_annotations), np.int64)
            live = tasks[self.store.holds(tasks)].tolist()
            lists = [(tid, self.annotations.get(tid), self.queue_annotations.get(tid)) for tid in live]
        fresh = {}
        for tid, a, q in lists:  # outside the lock: a first call resolves every task, webhooks go on meanwhile
            hit = cache.get(tid)
            if hit is None or hit[0] is not a or hit[1] is not q:
                hit = (a, q, resolve_label([*(a or ()), *(q or ())], config))
            fresh[tid] = hit
        with self.lock:
            self._resolved, self._resolved_for = fresh, key
        labels: dict[int, int] = {}
        problems: dict[int, str] = {}
        for tid, (_, _, resolved) in fresh.items():
            if resolved.problem:
                problems[tid] = resolved.problem
            if resolved.class_index is not None:
                labels[tid] = int(resolved.class_index)
        return labels, problems

    # ---- changes from webhooks --------------------------------------------------------------------
    def upsert_annotation(self, task_id: int, annotation: dict) -> None:
        """ANNOTATION_CREATED / ANNOTATION_UPDATED: the annotation replaces any earlier copy of itself."""
        self._upsert(False, task_id, annotation)

    def remove_annotations(self, annotation_ids: Iterable[int]) -> list[int]:
        """ANNOTATIONS_DELETED carries only ids; returns the tasks that lost one."""
        return self._remove(False, annotation_ids)

    def upsert_queue_annotation(self, source_task_id: int, annotation: dict) -> None:
        """A queue project's ANNOTATION_CREATED / UPDATED, counted for the source task it copies."""
        self._upsert(True, source_task_id, annotation)

    def remove_queue_annotations(self, annotation_ids: Iterable[int]) -> list[int]:
        """A queue project's ANNOTATIONS_DELETED; returns the source tasks that lost one."""
        return self._remove(True, annotation_ids)

    def remove_queue_tasks(self, queue_task_ids: Iterable[int]) -> list[int]:
        """A queue project's TASKS_DELETED: the labels made on those copies; returns the source tasks that lost one.
        O(queue labels): the queue holds only the top of the ranking."""
        gone = {int(i) for i in queue_task_ids}
        with self.lock:
            ids = [a.get("id") for anns in self.queue_annotations.values() for a in anns if a.get("task") in gone]
        return self._remove(True, ids)

    def _store(self, queue: bool) -> dict[int, list[dict]]:
        """Read under the lock: a scan replaces the whole dict, and a change must land in the new one."""
        return self.queue_annotations if queue else self.annotations

    def _set_store(self, queue: bool, annotations: dict[int, list[dict]]) -> None:
        if queue:
            self.queue_annotations = annotations
        else:
            self.annotations = annotations

    def _upsert(self, queue: bool, task_id: int, annotation: dict) -> None:
        slim = _slim(annotation)
        with self.lock:
            store = self._store(queue)
            if any(a.get("id") == slim.get("id") and _newer(a, slim) for a in store.get(int(task_id), ())):
                return  # a webhook that arrived after a later save of its annotation was read
            anns = [a for a in store.get(int(task_id), []) if a.get("id") != slim.get("id")]
            store[int(task_id)] = [*anns, slim]  # a new list: labels() knows the task changed
            self._index.setdefault(queue, {})[slim.get("id")] = int(task_id)
            if queue in self._words:
                self._words[queue].said(task_id, slim)

    def _remove(self, queue: bool, annotation_ids: Iterable[int]) -> list[int]:
        gone = {int(i) for i in annotation_ids}
        with self.lock:
            store = self._store(queue)
            touched = sorted(set(self._tasks_of(queue, gone).values()))
            for i in gone:
                self._index.get(queue, {}).pop(i, None)
            for tid in touched:
                keep = [a for a in store[tid] if a.get("id") not in gone]
                if keep:
                    store[tid] = keep
                else:
                    del store[tid]
            if queue in self._words:
                self._words[queue].gone(gone)
        return touched

    def _tasks_of(self, queue: bool, annotation_ids: set[int]) -> dict[int, int]:
        """Annotation id -> its task, under the lock: O(ids) from an index, rebuilt only when it misses one.

        Scans replace the annotations wholesale, so an entry is trusted only once the task still holds it.
        """
        store, index = self._store(queue), self._index.setdefault(queue, {})

        def holds(i: int) -> bool:
            return i in index and any(a.get("id") == i for a in store.get(index[i], ()))

        if not all(holds(i) for i in annotation_ids):
            index.clear()
            index.update({a.get("id"): tid for tid, anns in store.items() for a in anns})
        return {i: index[i] for i in annotation_ids if holds(i)}

    @contextmanager
    def _webhooks_win(self, queue: bool = False) -> Iterator[_Words]:
        """While a scan reads Label Studio, collect what webhooks say: theirs is the newer word."""
        with self.lock:
            words = self._words[queue] = _Words()
        try:
            yield words
        finally:
            with self.lock:
                self._words.pop(queue, None)

    def remove_tasks(self, task_ids: Iterable[int]) -> int:
        ids = [int(t) for t in task_ids]
        with self.lock:
            self._removed.update(dict.fromkeys(ids))
            for old in list(itertools.islice(self._removed, max(0, len(self._removed) - REMEMBER_REMOVED))):
                del self._removed[old]
            for t in ids:
                for queue, store in ((False, self.annotations), (True, self.queue_annotations)):
                    for a in store.pop(t, None) or ():  # their index entries go too: weeks of deletions add up
                        self._index.get(queue, {}).pop(a.get("id"), None)
                self.skipped.pop(t, None)
                self.retrying.pop(t, None)
        return self.store.delete(ids)

    def compact(self) -> None:
        """Drop deleted tasks' rows before a training once they pass ``COMPACT_DEAD_SHARE`` of the pool: below it a
        training reads through them (:func:`service.training.pool_stretch`) and scoring gathers a shard at a time,
        and rewriting a pool of millions for a few deleted tasks would cost more than it saves."""
        with self.writer:
            self.store.compact(min_dead=COMPACT_DEAD_SHARE)

    def add_tasks(self, tasks: list[dict], config: LabelConfig, fetcher: DataFetcher, workers: int = 8,
                  words: _Words | None = None) -> np.ndarray:
        """Store tasks not stored yet, with their annotations (``words``: a webhook's since); returns the ids stored.

        A task deleted before or while its item is fetched (seconds) is not kept in the pool.
        """
        with self.writer:
            new = []
            with self.lock:
                for task in tasks:
                    tid = int(task["id"])
                    if tid in self._removed:  # deleted before this read of it got here
                        continue
                    anns = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
                    if anns:
                        slims = [_slim(a) for a in anns]
                        self.annotations[tid] = words.over(tid, slims) if words else slims
                    if tid in self.store:  # stored already: whatever else recorded it, it counts once
                        self.retrying.pop(tid, None)
                        self.skipped.pop(tid, None)
                    elif tid not in self.skipped:
                        new.append(task)
            if not new:
                return np.zeros(0, np.int64)
            unsettled = self._ensure_format(new, config, fetcher)
            codec = self.codec(config)

            def load(task: dict) -> np.ndarray | TaskDataError:
                value = _data_value(task, config.data_key)
                if value is None:
                    return TaskDataError(f"task data has no {config.data_key!r} field")
                try:
                    return codec.load(fetcher, value, task.get("id"))
                except TaskDataError as e:
                    return e
                except Exception as e:  # one odd task must not abort the batch, and with it every later ingest
                    return TaskDataError(f"unreadable ({type(e).__name__}: {str(e)[:200]})")

            if unsettled is not None:
                loaded: list[np.ndarray | TaskDataError] = [unsettled] * len(new)
            else:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
                    loaded = list(pool.map(load, new))
            ids, items = [], []
            shape = self.store.item_shape or _most_common_shape(loaded)
            with self.lock:  # save() may be writing these dicts out from another thread
                for task, item in zip(new, loaded, strict=True):
                    tid = int(task["id"])
                    if isinstance(item, TaskDataError):
                        tries = self.retrying.pop(tid, 0) + 1
                        if item.temporary and tries < TRIES:
                            self.retrying[tid] = tries
                        else:
                            self.skipped[tid] = str(item) + (f" ({tries} tries)" if item.temporary else "")
                    elif shape is not None and tuple(item.shape) != tuple(shape):
                        self.retrying.pop(tid, None)
                        self.skipped[tid] = f"item shape {item.shape} differs from the project's {tuple(shape)}"
                    else:
                        self.retrying.pop(tid, None)
                        shape = shape or tuple(item.shape)
                        ids.append(tid)
                        items.append(item)
            if ids:
                self.store.append(np.asarray(ids, np.int64), np.stack(items))
            with self.lock:  # deleted while its item was fetched: deleted again, now that it is stored or skipped
                gone = [int(t["id"]) for t in new if int(t["id"]) in self._removed]
            if gone:
                self.remove_tasks(gone)
            return np.asarray([t for t in ids if t not in gone], np.int64)

    def _ensure_format(self, tasks: list[dict], config: LabelConfig, fetcher: DataFetcher) -> TaskDataError | None:
        """Images: grey or colour and the side are fixed once per project, from its first readable images.

        Returns why it could not be fixed when a later try may (no image read, one failed for a temporary reason):
        decoded without it, the batch would set a wrong shape for good.
        """
        if config.kind != "image" or "mode" in self.state["fmt"]:
            return None
        raws, temporary = [], None
        for task in tasks:
            value = _data_value(task, config.data_key)
            if value is None:
                continue
            try:
                raw = fetcher.fetch_bytes(value, task.get("id"))
                pick_image_format(raw, None)
            except (TaskDataError, OSError, ValueError) as e:
                if isinstance(e, TaskDataError) and e.temporary:
                    temporary = e
                continue
            raws.append(raw)
            if len(raws) >= FORMAT_SAMPLE:
                break
        if raws:
            mode, size = pick_image_format(raws, self.state["fmt"].get("size"))
            with self.lock:  # save() copies the state from other threads
                self.state["fmt"].update(mode=mode, size=size)
            self.save()  # before any item is stored in it: a restart mid-ingest must find the form fixed
            return None
        if temporary is None:
            return None
        return TaskDataError(f"the project's image format could not be read yet: {temporary}", temporary=True)

    # ---- reading Label Studio -----------------------------------------------------------------------
    def ingest(self, client: LabelStudioClient, config: LabelConfig, fetcher: DataFetcher,
               progress: Progress | None = None, chunk: int = 500) -> None:
        """Read the whole project once; a restarted ingest skips items already stored."""
        with self.writer, self._webhooks_win() as words:
            counters, at = self._counters(client, self.project_id)
            total = max(int(counters.get("task_number") or 0), 1)
            seen_ids: list[int] = []
            with_annotations: set[int] = set()
            for part in _chunks(client.iter_tasks(self.project_id), chunk):
                self.add_tasks(part, config, fetcher, words=words)
                seen_ids += [int(t["id"]) for t in part]
                with_annotations |= {int(t["id"]) for t in part if t.get("annotations")}
                if progress:
                    progress(f"ingesting tasks ({len(seen_ids)} of {total})", min(len(seen_ids) / total, 1.0))
            with self.lock:
                for tid in set(self.annotations) - with_annotations - set(words.by_task):
                    del self.annotations[tid]
                gone = set(self.store.ids().tolist()) - set(seen_ids)
            if gone:
                self.remove_tasks(gone)
            with self.lock:
                self.state.update(ingested=True, counters=counters, full_scan_at=time.time())
                self._unreadable_retried = True  # its unreadable tasks were just read: the first poll leaves them
            if at is not None:
                self._mark(self.project_id, at, None, _clock())
            self.save()
            log.info("project %s: ingested %s tasks (%s stored, %s unreadable)", self.project_id, len(seen_ids),
                     len(self.store), len(self.skipped))

    @staticmethod
    def _counters(client: LabelStudioClient, project_id: int, newest: bool = True) -> tuple[dict, datetime | None]:
        """A few numbers that move when tasks or annotations do (the newest id catches an add plus a delete),
        and when Label Studio last saved one of its tasks: where the next read of saved tasks starts."""
        p = client.get_project(project_id)
        out = {k: p.get(k) for k in _COUNTERS}
        if newest:
            out["newest_task_id"] = client.newest_task_id(project_id)
            out["label_config"] = p.get("label_config")  # read with the counters: an edit is seen at the next poll
        at = client.last_saved(project_id)
        # never past this machine's now: a save stamped ahead (a server's local time taken for UTC) must not hide
        # the saves before it; an earlier start only reads more
        return out, None if at is None else min(at, datetime.now(timezone.utc))

    def reconcile(self, client: LabelStudioClient, config: LabelConfig, fetcher: DataFetcher,
                  full_scan_seconds: float, queue_project_id: int | None = None) -> dict:
        """Catch what webhooks missed. A few small requests when nothing moved; returns what was re-read
        (labels: ``"changed"`` for the tasks saved since the last read, ``"all"`` for every labeled task).

        The queue project is read last and fails alone (``queue_error``, ``queue_project``): the project's own
        reads stand. ``queue_gone``: Label Studio no longer has it (404).
        """
        with self.writer:
            counters, at = self._counters(client, self.project_id)
            full = time.time() - float(self.state.get("full_scan_at") or 0) >= full_scan_seconds
            old = self.state.get("counters") or {}
            done: dict[str, Any] = {"labels": False, "tasks": False, "queue": False, "retried": 0}
            if full or not self._unreadable_retried:  # a cause fixed since (a storage, a setting, a key) lets them in
                self._unreadable_retried = True
                with self.lock:
                    self.retrying.update(dict.fromkeys(self.skipped, 0))
                    self.skipped.clear()
            if self.retrying:
                done["retried"] = len(self.retrying)
                self._retry(client, config, fetcher)
            labels_moved = any(counters.get(k) != old.get(k) for k in _COUNTERS[1:])
            tasks_moved = any(counters.get(k) != old.get(k) for k in ("task_number", "newest_task_id")) \
                or counters.get("task_number") != len(self.store) + len(self.skipped) + len(self.retrying)

            def read_tasks(saved: list[dict] | None) -> None:  # before the annotation count: a deleted task's go first
                if full or tasks_moved:
                    done["tasks"] = self._read_tasks(client, config, fetcher, counters, saved)

            done["labels"] = self._read_labels(client, False, self.project_id, at, full, labels_moved, read_tasks)
            with self.lock:
                self.state["counters"] = counters
            if queue_project_id is not None:
                try:
                    q, q_at = self._counters(client, queue_project_id, newest=False)
                    q["project"] = queue_project_id
                    before = self.state.get("queue_counters") or {}
                    done["queue"] = self._read_labels(client, True, queue_project_id, q_at,
                                                      full or before.get("project") != queue_project_id, q != before)
                    with self.lock:
                        self.state["queue_counters"] = q
                except LabelStudioError as e:
                    done["queue_error"], done["queue_project"] = str(e), queue_project_id
                    done["queue_gone"] = e.status_code == 404  # the caller forgets it, unless a push made a new one
            if full:
                with self.lock:
                    self.state["full_scan_at"] = time.time()
            self.save()
            return done

    def _read_tasks(self, client: LabelStudioClient, config: LabelConfig, fetcher: DataFetcher, counters: dict,
                    saved: list[dict] | None) -> str:
        """Store new tasks and drop deleted ones: from the tasks saved since the last poll (a new task is one) when
        the project's task count then agrees with the mirror's, O(changes); else from every task id, O(pool)."""
        if saved is not None:
            self.add_tasks(self._unknown(saved), config, fetcher)
            if counters.get("task_number") == self._known_up_to(counters.get("newest_task_id")):
                return "changed"
        self._scan_tasks(client, config, fetcher)
        return "all"

    def _unknown(self, tasks: list[dict]) -> list[dict]:
        """Tasks neither stored, unreadable nor waiting for a retry (``_retry`` fetches those), read as they are
        less their annotations (``_scan_labels`` applied them, webhooks first) and predictions."""
        with self.lock:
            return [{k: v for k, v in t.items() if k not in ("annotations", "predictions")} for t in tasks
                    if int(t["id"]) not in self.store and int(t["id"]) not in self.skipped
                    and int(t["id"]) not in self.retrying]

    def _known_up_to(self, newest: int | None) -> int:
        """Tasks the mirror knows of with ids up to ``newest``: what Label Studio counted when that was its newest
        (ids only grow), so a task imported during the poll does not read as a deletion."""
        if newest is None:
            return 0
        with self.lock:
            ids = self.store.ids()
            return int((ids <= newest).sum()) + sum(1 for t in (*self.skipped, *self.retrying) if t <= newest)

    def _read_labels(self, client: LabelStudioClient, queue: bool, source: int, at: datetime | None,
                     full: bool, moved: bool,
                     between: Callable[[list[dict] | None], None] | None = None) -> str | bool:
        """Re-read a project's labels where they may have changed: ``"changed"``, ``"all"`` or False.

        The tasks saved since the last read, O(changes), so a correction whose webhook was lost counts at the next
        poll. A change that saves no task shows only in the annotation count, compared after ``between`` (the task
        step, given the saved tasks read, or None without that read); a difference two polls running reads every
        labeled task, as does a due full scan or an unknown mark.
        """
        mark = None if full else (self.state.get("read_at") or {}).get(str(source))
        if not isinstance(mark, dict):  # none, or one saved in another form: read every labeled task to set one
            mark = None
        started = _clock()
        n, saved = 0, None
        if mark is not None:
            saved = []
            back = 0.0 if mark.get("settled") else OVERLAP_SECONDS
            n = self._scan_labels(client, queue, source, datetime.fromisoformat(mark["at"]) - timedelta(seconds=back),
                                  saved)
        if between is not None:
            between(saved)
        how: str | bool = False
        differed = "differed" in ((self.state.get("counts") or {}).get(str(source)) or {})
        if mark is not None:
            if n or moved or differed:
                how = "changed" if self._counts_agree(client, queue, source) else "all"
        elif full or moved or at is not None or differed:
            # at: a mirror from before marks, read once to set one; differed: a count that moved as the project's
            # last task went (no save left to read from)
            how = "all"
        if how == "all":
            self._scan_labels(client, queue, source)
            self._count_gap(client, queue, source)
        if at is None or mark is not None or how:
            self._mark(source, at, mark, started)
        return how

    def _mark(self, source: int, at: datetime | None, mark: dict | None, started: float) -> None:
        """Where the next read of saved tasks starts: the newest save seen, less ``OVERLAP_SECONDS`` for saves
        stamped before it and committed after, until a read that began that long after it was first seen has read
        them all (``settled``): a quiet project then reads nothing, not the last push's burst of saves again."""
        with self.lock:  # save() copies the state from other threads
            read_at = self.state.setdefault("read_at", {})
            if at is None:
                read_at.pop(str(source), None)
            elif mark is not None and mark.get("at") == at.isoformat():
                read_at[str(source)] = {**mark, "settled": bool(mark.get("settled"))
                                        or started >= mark["seen"] + OVERLAP_SECONDS}
            else:
                read_at[str(source)] = {"at": at.isoformat(), "seen": started, "settled": False}

    def _counts_agree(self, client: LabelStudioClient, queue: bool, source: int) -> bool:
        """False once Label Studio's annotation count has differed from the mirror's by the same number at two polls
        running, beyond the difference after the last full read (queue tasks that copy no task of the project, say)."""
        gap = self._gap(client, queue, source)
        with self.lock:
            counts = self.state.setdefault("counts", {})
            known = counts.get(str(source)) or {"gap": 0}
            if gap == known["gap"]:
                counts[str(source)] = {"gap": known["gap"]}
                return True
            if known.get("differed") == gap:  # the same difference twice: not a webhook on its way
                return False
            counts[str(source)] = {"gap": known["gap"], "differed": gap}
            log.info("project %s: Label Studio counts %+d annotations against the mirror; read all if it stays",
                     source, gap - known["gap"])
            return True

    def _count_gap(self, client: LabelStudioClient, queue: bool, source: int) -> None:
        """After a full read: the difference later polls compare with (queue tasks copying no task, say)."""
        gap = self._gap(client, queue, source)
        if gap:
            log.info("project %s: after reading every labeled task, Label Studio counts %+d annotations against "
                     "the mirror", source, gap)
        with self.lock:
            self.state.setdefault("counts", {})[str(source)] = {"gap": gap}

    def _gap(self, client: LabelStudioClient, queue: bool, source: int) -> int:
        """Label Studio's ``total_annotations_number`` (annotations that are not skips) less the mirror's."""
        total = int(client.get_project(source).get("total_annotations_number") or 0)
        with self.lock:
            return total - sum(1 for anns in self._store(queue).values() for a in anns if not a.get("was_cancelled"))

    def _retry(self, client: LabelStudioClient, config: LabelConfig, fetcher: DataFetcher) -> None:
        """Fetch again the tasks a temporary failure kept out: O(those tasks), not a scan of the project."""
        with self.lock:
            waiting = set(self.retrying)
        read: set[int] = set()
        for part in _chunks(client.tasks_by_id(self.project_id, waiting), 500):  # items decoded a part at a time
            read |= {int(t["id"]) for t in part}
            self.add_tasks(part, config, fetcher)
        with self.lock:
            for tid in waiting - read:  # deleted meanwhile: their annotations go too (not marked deleted, so a task
                self.retrying.pop(tid, None)  # a read missed is still stored when a later read finds it)
                self.annotations.pop(tid, None)

    def _scan_labels(self, client: LabelStudioClient, queue: bool = False, source: int | None = None,
                     updated_after: datetime | None = None, saved: list[dict] | None = None) -> int:
        """Labeled tasks with their annotations (a queue's by source task): every one, O(labeled), or the tasks
        saved after ``updated_after``, O(changes), which go to ``saved`` as read. A webhook during the scan wins.
        Returns the tasks read (all) or the tasks whose annotations it changed (saved since)."""
        source = source or self.project_id
        with self._webhooks_win(queue) as words:
            if queue:
                reads = [(int(src), int(qid), [_slim(a) for a in anns])
                         for src, qid, anns in client.queue_labels(source, updated_after=updated_after)]
            else:
                tasks = list(client.labeled_tasks(source, updated_after))
                if saved is not None:
                    saved.extend(tasks)
                reads = [(int(t["id"]), int(t["id"]), [_slim(a) for a in t.get("annotations") or []]) for t in tasks]
            read: dict[int, tuple[set[int], list[dict]]] = {}  # task of this project -> (tasks read, annotations)
            for tid, qid, anns in reads:
                read.setdefault(tid, (set(), []))[0].add(qid)
                read[tid][1].extend(anns)
            with self.lock:
                if updated_after is None:  # a task read unchanged keeps its list: no save or label cache redone
                    before = self._store(queue)
                    self._set_store(queue, {t: before[t] if t in before and _by_id(before[t]) == _by_id(a) else a
                                            for t, a in words.over_all({t: a for t, (_, a) in read.items()}).items()})
                    return len(reads)
                store = self._store(queue)
                changed = 0
                for tid, (from_tasks, anns) in read.items():
                    if queue:  # a source task's labels may come from several queue tasks: replace the ones read
                        ids = {a.get("id") for a in anns}
                        anns = [*(a for a in store.get(tid, ())
                                  if a.get("id") not in ids and a.get("task") not in from_tasks), *anns]
                    merged = words.over(tid, anns)
                    if _by_id(merged) == _by_id(store.get(tid, [])):
                        continue  # read again (the overlap), unchanged: its cached label stays
                    changed += 1
                    if merged:
                        store[tid] = merged
                    else:
                        store.pop(tid, None)
                return changed

    def _scan_tasks(self, client: LabelStudioClient, config: LabelConfig, fetcher: DataFetcher) -> None:
        """Task ids only (no annotations): store the new ones, drop the deleted ones."""
        seen: set[int] = set()
        for part in _chunks(client.iter_tasks(self.project_id, fields="task_only"), 500):
            seen |= {int(t["id"]) for t in part}
            self.add_tasks(self._unknown(part), config, fetcher)
        gone = (set(self.store.ids().tolist()) | set(self.skipped)) - seen
        if gone:
            self.remove_tasks(gone)

    def forget_queue(self) -> None:
        """The queue project was deleted, and its annotations with it: they no longer count for their sources."""
        with self.lock:
            self._set_store(True, {})
            self._index.pop(True, None)
            self.state.pop("queue_counters", None)

    def scan_queue(self, client: LabelStudioClient, queue_project_id: int) -> None:
        """Labels made in the queue project count for their source tasks."""
        self._scan_labels(client, True, queue_project_id)
