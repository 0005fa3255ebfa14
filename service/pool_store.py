"""A project's decoded items on disk, so a pool of millions is memory-mapped instead of held in RAM
and a new model version reads only the rows that changed.

Layout of a store directory::

    meta.json   item shape and dtype, fixed by the first append
    items.bin   raw rows, appended
    ids.bin     one little-endian int64 task id per row, appended after that row's items are on disk
    dead.bin    little-endian int64 row numbers that were tombstoned, appended

The write to ``ids.bin`` is the commit point of an append: a crash before it leaves items past the
ids' end, which the next open truncates. A row is live when it is the last row of its task id and
not tombstoned, so a crash between ``ids.bin`` and ``dead.bin`` still loses nothing. One process
writes a store at a time.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np

log = logging.getLogger(__name__)

_FORMAT = 1
_ID_DTYPE = np.dtype("<i8")
COMPACT_DEAD_SHARE = 0.1  # deleted tasks' share of the rows past which a training first compacts the pool: each
# compaction rewrites every live row, so it comes once per tenth of the pool deleted, not after every deletion
_COMPACT_SUFFIX = ".compact"
_COMMIT_MARKER = "compact.commit"
_DATA_FILES = ("items.bin", "ids.bin", "dead.bin")
_GATHER_BYTES = 64 << 20
_instances = itertools.count()
ROOM_SPARE = 1 / 8  # spare room kept after sorted ids and scores that new tasks are appended to
Mark = tuple[int, int, int]  # (store object, generation, rows): a position in one store's rows


@dataclass(frozen=True)
class _State:
    """One consistent view for readers; the writer publishes a new one instead of editing this.

    ``row_ids`` and ``alive`` are buffers with spare capacity shared with later states, which only
    write past this state's ``n_rows``; ``keys``/``vals`` (sorted live ids and their rows) are never
    edited in place.
    """

    generation: int
    n_rows: int
    row_ids: np.ndarray
    alive: np.ndarray
    keys: np.ndarray
    vals: np.ndarray


def _empty_state(generation: int = 0) -> _State:
    return _State(generation, 0, np.empty(0, np.int64), np.empty(0, bool), np.empty(0, np.int64), np.empty(0, np.int64))


def with_capacity(buf: np.ndarray, used: int, needed: int, spare: float = 1.0) -> np.ndarray:
    """``buf`` if it holds ``needed`` items, else a copy of its first ``used`` in one grown by at least a ``spare``
    share of its length: amortised growth, so appending in chunks stays linear overall."""
    if needed <= len(buf):
        return buf
    grown = np.empty(max(needed, int(len(buf) * (1 + spare)), 1024), dtype=buf.dtype)
    grown[:used] = buf[:used]
    return grown


def _last_rows(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique ids and the index of each one's last occurrence (a later row supersedes)."""
    keys, first_in_reversed = np.unique(ids[::-1], return_index=True)
    return keys, len(ids) - 1 - first_in_reversed


def _lookup(keys: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``ids`` in the sorted ``keys`` and whether each is there."""
    pos = np.searchsorted(keys, ids)
    found = pos < len(keys)
    found[found] = keys[pos[found]] == ids[found]
    return pos, found


def _as_ids(task_ids: Sequence[int] | np.ndarray | int) -> np.ndarray:
    arr = np.asarray(task_ids)
    if arr.size == 0:
        return np.empty(0, np.int64)
    if arr.ndim > 1 or arr.dtype.kind not in "iu":
        raise ValueError(f"task ids must be a 1-D sequence of integers, got dtype {arr.dtype} and shape {arr.shape}")
    return arr.reshape(-1).astype(np.int64, copy=False)


def fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable; where a file system cannot sync a directory, go on without."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def replacing(path: Path, tmp_suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` once written and synced, so that a crash or power cut leaves the old
    content or the new, never a mix (nor, after a power cut, the new name without its data)."""
    tmp = path.with_name(path.name + tmp_suffix)
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk must not stay full of a half-written copy until the next start
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_durably(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (see :func:`replacing`)."""
    with replacing(path) as fh:
        fh.write(text.encode())


def _append_bytes(path: Path, expected_size: int, data: np.ndarray, fsync: bool) -> None:
    """Append after cutting anything a failed earlier write left past ``expected_size``."""
    with open(path, "ab") as fh:
        if fh.tell() != expected_size:
            fh.truncate(expected_size)
        fh.write(memoryview(np.ascontiguousarray(data)).cast("B"))
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())


def _write_file(path: Path, chunks: list[np.ndarray] | tuple[np.ndarray, ...], fsync: bool = True) -> None:
    with open(path, "wb") as fh:
        for chunk in chunks:
            fh.write(memoryview(np.ascontiguousarray(chunk)).cast("B"))
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())


class PoolStore:
    """Append-only item store keyed by Label Studio task id, with tombstones.

    One writer and any number of reader threads: mutations hold a lock and publish a new immutable
    index, so readers never lock and never see half an update. ``fsync=False`` trades durability on
    power loss (not on a process crash) for speed, e.g. for a pool that can be rebuilt.
    ``read_only=True`` opens the files another object (or process) writes, as a job does: it reads
    the complete rows and repairs nothing, since what looks half written may be an append in flight.
    """

    def __init__(self, directory: Path | str, *, fsync: bool = True, read_only: bool = False) -> None:
        self.directory = Path(directory)
        self.read_only = read_only
        if not read_only:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._lock = threading.Lock()
        self._closed = False
        self._unfinished = False  # a compaction failed past its commit: the next access under the lock finishes it
        self._maps: dict[int, np.ndarray] = {}
        self._rooms: dict[str, np.ndarray] = {}  # the index's sorted ids and rows, with room to append
        self.item_shape: tuple[int, ...] | None = None
        self.dtype: np.dtype | None = None
        if not read_only:
            self._finish_compaction()
        meta = self._path("meta.json")
        if meta.exists():
            info = json.loads(meta.read_text())
            self.item_shape = tuple(int(d) for d in info["item_shape"])
            self.dtype = np.dtype(info["dtype"])
        self._dead_entries = 0
        self._instance = next(_instances)
        self._state = self._recover()

    def _path(self, name: str) -> Path:
        return self.directory / name

    @property
    def _row_bytes(self) -> int:
        assert self.item_shape is not None and self.dtype is not None
        return int(np.prod(self.item_shape, dtype=np.int64)) * self.dtype.itemsize

    def _finish_compaction(self) -> None:
        """Roll an interrupted compaction forward if it committed, else drop its files."""
        committed = self._path(_COMMIT_MARKER).exists()
        for name in _DATA_FILES:
            pending = self._path(name + _COMPACT_SUFFIX)
            if pending.exists():
                if committed:
                    os.replace(pending, self._path(name))
                else:
                    pending.unlink()
        if committed:
            fsync_dir(self.directory)
            self._path(_COMMIT_MARKER).unlink()
            fsync_dir(self.directory)  # a marker back after a power cut would commit a later compaction's partial files
        for leftover in self.directory.glob("*.tmp"):
            leftover.unlink()

    def _read_int64s(self, name: str) -> np.ndarray:
        path = self._path(name)
        if not path.exists():
            if not self.read_only:
                path.touch()
            return np.empty(0, np.int64)
        size = path.stat().st_size
        if size % _ID_DTYPE.itemsize and not self.read_only:
            log.warning("%s: dropping a partly written trailing entry", path)
            os.truncate(path, size - size % _ID_DTYPE.itemsize)
        count = size // _ID_DTYPE.itemsize
        return np.fromfile(path, dtype=_ID_DTYPE, count=count).astype(np.int64, copy=False)

    def _recover(self) -> _State:
        """Rebuild the index from ids.bin and dead.bin, cutting whatever a crash left half written."""
        ids = self._read_int64s("ids.bin")
        dead = self._read_int64s("dead.bin")
        items_path = self._path("items.bin")
        if not self.read_only:
            items_path.touch()
        items_size = items_path.stat().st_size if items_path.exists() else 0
        if self.item_shape is None:
            if len(ids):
                raise ValueError(f"{self.directory}: ids.bin has {len(ids)} rows but meta.json is missing")
            if not self.read_only:
                for name in _DATA_FILES:
                    os.truncate(self._path(name), 0)
            return _empty_state()
        row_bytes = self._row_bytes
        n = len(ids)
        if items_size // row_bytes < n:
            n = items_size // row_bytes
            if not self.read_only:
                log.warning("%s: items.bin holds %d rows but ids.bin %d; keeping %d", self.directory, n,
                            len(ids), n)
                os.truncate(self._path("ids.bin"), n * _ID_DTYPE.itemsize)
            ids = ids[:n]
        if items_size != n * row_bytes and not self.read_only:
            log.warning("%s: truncating %d bytes of an unfinished append", items_path, items_size - n * row_bytes)
            os.truncate(items_path, n * row_bytes)
        valid = (dead >= 0) & (dead < n)
        if not valid.all() and not self.read_only:  # else the next append's rows, numbered as the cut ones, die
            log.warning("%s: dropping %d tombstones of rows that are not there", self.directory, int((~valid).sum()))
            with replacing(self._path("dead.bin")) as fh:
                fh.write(dead[valid].astype(_ID_DTYPE).tobytes())
        dead = dead[valid]
        self._dead_entries = len(dead)
        alive = np.zeros(n, dtype=bool)
        keys, last = _last_rows(ids)
        alive[last] = True
        alive[dead] = False
        keep = alive[last]
        return _State(0, n, ids, alive, keys[keep], last[keep].astype(np.int64, copy=False))

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"PoolStore at {self.directory} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise ValueError(f"PoolStore at {self.directory} is open read-only")
        self._finish_unfinished()

    def _finish_unfinished(self) -> None:
        """Under the lock: finish the swap of a compaction that failed past its commit and read the index again,
        as a reopen would (raises again while the disk still fails)."""
        if not self._unfinished:
            return
        self._finish_compaction()
        self._maps, self._rooms = {}, {}
        self._state = replace(self._recover(), generation=self._state.generation + 1)
        self._unfinished = False

    def _validate(self, task_ids: Sequence[int] | np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = _as_ids(task_ids)
        items = np.asarray(items)
        if items.ndim < 1 or items.shape[0] != len(ids):
            raise ValueError(f"got {len(ids)} task ids but items of shape {items.shape}: need one item per id")
        if items.dtype.kind not in "biuf":
            raise ValueError(f"items must be numeric (uint8 images, float32 vectors), got dtype {items.dtype}")
        if self.item_shape is not None:
            if items.shape[1:] != self.item_shape:
                raise ValueError(
                    f"items of shape {items.shape[1:]} do not fit this store's item shape {self.item_shape}"
                )
            if items.dtype != self.dtype:
                raise ValueError(f"items of dtype {items.dtype} do not match this store's dtype {self.dtype}")
        return ids, items

    def _write_meta(self, item_shape: tuple[int, ...], dtype: np.dtype) -> None:
        write_durably(self._path("meta.json"),
                      json.dumps({"format": _FORMAT, "item_shape": list(item_shape), "dtype": dtype.str}))

    def append(self, task_ids: Sequence[int] | np.ndarray, items: np.ndarray) -> None:
        """Store ``items[i]`` under ``task_ids[i]``; an id that is live already is replaced.

        The first append fixes the item shape and dtype; a mismatching batch raises ValueError and
        writes nothing. Within one batch a later duplicate id wins.
        """
        with self._lock:
            self._check_writable()
            ids, items = self._validate(task_ids, items)
            if len(ids) == 0:
                return
            if self.item_shape is None:
                self._write_meta(items.shape[1:], items.dtype)
                self.item_shape, self.dtype = items.shape[1:], items.dtype
            s = self._state
            n, r0 = len(ids), s.n_rows
            batch_keys, batch_last = _last_rows(ids)
            batch_rows = r0 + batch_last
            pos, found = _lookup(s.keys, batch_keys)
            superseded = np.ones(n, dtype=bool)
            superseded[batch_last] = False
            tombs = np.concatenate([s.vals[pos[found]], r0 + np.flatnonzero(superseded)])

            _append_bytes(self._path("items.bin"), r0 * self._row_bytes, items, self._fsync)
            _append_bytes(self._path("ids.bin"), r0 * _ID_DTYPE.itemsize, ids.astype(_ID_DTYPE), self._fsync)

            row_ids = with_capacity(s.row_ids, r0, r0 + n)
            row_ids[r0 : r0 + n] = ids
            alive = with_capacity(s.alive, r0, r0 + n)
            if len(tombs):
                alive = alive.copy()
            alive[r0 : r0 + n] = True
            alive[tombs] = False
            if not found.any() and (len(s.keys) == 0 or batch_keys[0] > s.keys[-1]):  # as Label Studio numbers tasks
                keys, vals = self._extended("keys", s.keys, batch_keys), self._extended("vals", s.vals, batch_rows)
            else:
                vals = s.vals.copy() if found.any() else s.vals
                vals[pos[found]] = batch_rows[found]
                new = ~found
                keys = np.insert(s.keys, pos[new], batch_keys[new])
                vals = np.insert(vals, pos[new], batch_rows[new])
            self._state = _State(s.generation, r0 + n, row_ids, alive, keys, vals)

            if len(tombs):
                try:
                    self._append_dead(tombs)
                except OSError as e:  # committed already: a reopen finds these rows superseded by their ids alone
                    log.warning("%s: %d tombstones of replaced rows not written (%s)", self.directory, len(tombs), e)

    def _extended(self, name: str, current: np.ndarray, tail: np.ndarray) -> np.ndarray:
        """``current`` + ``tail`` written into spare room after it where ``current`` is the newest state's (O(tail));
        earlier states view a prefix, which is never written again."""
        n, k = len(current), len(tail)
        buf = self._rooms.get(name)
        buf = with_capacity(buf if buf is not None and current.base is buf else current, n, n + k, spare=ROOM_SPARE)
        buf[n:n + k] = tail
        self._rooms[name] = buf
        return buf[:n + k]

    def _append_dead(self, rows: np.ndarray) -> None:
        _append_bytes(
            self._path("dead.bin"), self._dead_entries * _ID_DTYPE.itemsize, rows.astype(_ID_DTYPE), self._fsync
        )
        self._dead_entries += len(rows)

    def delete(self, task_ids: Sequence[int] | np.ndarray) -> int:
        """Tombstone these ids; returns how many were live (unknown ids are ignored)."""
        with self._lock:
            self._check_writable()
            s = self._state
            ids = np.unique(_as_ids(task_ids))
            pos, found = _lookup(s.keys, ids)
            if not found.any():
                return 0
            rows = s.vals[pos[found]]
            self._append_dead(rows)
            alive = s.alive.copy()
            alive[rows] = False
            keep = np.ones(len(s.keys), dtype=bool)
            keep[pos[found]] = False
            self._state = _State(s.generation, s.n_rows, s.row_ids, alive, s.keys[keep], s.vals[keep])
            return int(found.sum())

    def compact(self, min_dead: float = 0.5) -> None:
        """Rewrite the files without dead rows once those are over ``min_dead`` of them; rows change, ids stay.

        New files are written beside the old ones and a commit marker decides, on a crash, whether
        the next open finishes the swap or discards them. Arrays handed out before keep the old
        file open until they are dropped; the store itself lets go of it at once, so the pool does
        not take twice its size on disk.
        """
        with self._lock:
            self._check_writable()
            s = self._state
            n_live = len(s.keys)
            if s.n_rows == n_live or s.n_rows - n_live <= min_dead * s.n_rows:
                return
            live_rows = np.sort(s.vals)
            live_ids = s.row_ids[live_rows]
            source = self._map(s)
            step = max(1, _GATHER_BYTES // max(1, self._row_bytes))
            copies = [self._path(name + _COMPACT_SUFFIX) for name in ("items.bin", "ids.bin", "dead.bin")]
            try:
                with open(copies[0], "wb") as fh:
                    for start in range(0, n_live, step):
                        fh.write(memoryview(np.ascontiguousarray(source[live_rows[start : start + step]])).cast("B"))
                    fh.flush()
                    os.fsync(fh.fileno())
                _write_file(copies[1], [live_ids.astype(_ID_DTYPE)])
                _write_file(copies[2], [])
                fsync_dir(self.directory)
            except BaseException:  # before the commit marker: the copy is dropped, not left filling the disk
                for copy in copies:
                    copy.unlink(missing_ok=True)
                raise
            try:  # from the marker on (its file may exist though its sync failed), the disk may hold the new files
                _write_file(self._path(_COMMIT_MARKER), [])
                fsync_dir(self.directory)
                self._finish_compaction()
            except BaseException:  # files half swapped: the old index must neither write nor read them
                self._unfinished, self._maps = True, {}
                raise

            row_ids = with_capacity(np.empty(0, np.int64), 0, n_live)
            row_ids[:n_live] = live_ids
            alive = with_capacity(np.empty(0, bool), 0, n_live)
            alive[:n_live] = True
            vals = np.searchsorted(live_rows, s.vals).astype(np.int64)
            self._dead_entries = 0
            self._state = _State(s.generation + 1, n_live, row_ids, alive, s.keys, vals)
            self._maps = {}  # readers take state and mapping together (_snapshot), so none can need the old one
            log.info("%s: compacted %d rows to %d", self.directory, s.n_rows, n_live)

    def close(self) -> None:
        """Drop this store's own mapping; arrays already handed out stay valid."""
        with self._lock:
            self._closed = True
            self._maps = {}

    def __enter__(self) -> PoolStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._state.keys)

    def __contains__(self, task_id: object) -> bool:
        if not isinstance(task_id, (int, np.integer)) or isinstance(task_id, bool):
            return False
        if not -(2**63) <= int(task_id) < 2**63:
            return False
        keys = self._state.keys
        pos = int(np.searchsorted(keys, task_id))
        return pos < len(keys) and int(keys[pos]) == task_id

    def holds(self, task_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Which of these ids are live, as a mask: O(ids · log pool); ``np.isin`` with :meth:`ids` sorts the pool."""
        return _lookup(self._state.keys, _as_ids(task_ids))[1]

    def ids(self) -> np.ndarray:
        """Live task ids (int64) in insertion order."""
        s = self._state
        return s.row_ids[: s.n_rows][s.alive[: s.n_rows]]

    def ids_since(self, mark: Mark | None) -> tuple[np.ndarray, Mark]:
        """Live ids in the rows appended since ``mark`` (every live id without one, or after a compaction renumbered
        the rows), and the mark to pass next time: what a pool of millions added is found in O(added)."""
        s = self._state
        start = mark[2] if mark is not None and mark[:2] == (self._instance, s.generation) else 0
        rows = slice(min(start, s.n_rows), s.n_rows)
        return s.row_ids[rows][s.alive[rows]], (self._instance, s.generation, s.n_rows)

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, rows) of the live items, in row order: rows index into :meth:`items`."""
        s = self._state
        rows = np.flatnonzero(s.alive[: s.n_rows])
        return s.row_ids[rows], rows

    def rows(self, task_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Row numbers of these live ids; KeyError names the first one that is not live."""
        return self._rows(self._state, _as_ids(task_ids))

    @staticmethod
    def _rows(s: _State, ids: np.ndarray) -> np.ndarray:
        pos, found = _lookup(s.keys, ids)
        if not found.all():
            raise KeyError(int(ids[np.argmin(found)]))
        return s.vals[pos]

    def _snapshot(self) -> tuple[_State, np.ndarray]:
        """The state and its mapping, taken together: a compaction cannot come between them."""
        with self._lock:
            if not self.read_only:
                self._finish_unfinished()
            s = self._state
            return s, self._map(s)

    def _map(self, s: _State) -> np.ndarray:
        """The mapping of ``s``'s rows (under the lock: readers go through :meth:`_snapshot`)."""
        mapped = self._maps.get(s.generation)
        if mapped is None or len(mapped) < s.n_rows:
            if self.item_shape is None or self.dtype is None:
                mapped = np.empty(0, dtype=np.float32)
            elif s.n_rows == 0:
                mapped = np.empty((0, *self.item_shape), dtype=self.dtype)
            else:
                shape = (s.n_rows, *self.item_shape)
                mapped = np.memmap(self._path("items.bin"), dtype=self.dtype, mode="r", shape=shape)
            mapped.flags.writeable = False
            self._maps[s.generation] = mapped
        return mapped if len(mapped) == s.n_rows else mapped[: s.n_rows]

    @staticmethod
    def _gather(s: _State, mapped: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if rows.size == 0:
            return np.empty((0, *mapped.shape[1:]), dtype=mapped.dtype)
        if rows.dtype.kind not in "iu":
            raise ValueError(f"rows must be integers, got dtype {rows.dtype}")
        if rows.min() < 0 or rows.max() >= s.n_rows:
            raise IndexError(f"rows must lie in [0, {s.n_rows}), got {int(rows.min())}..{int(rows.max())}")
        return np.asarray(mapped[rows])

    def items(self, rows: np.ndarray | None = None) -> np.ndarray:
        """A read-only memmap of every row (dead ones included), or a gathered copy of ``rows``.

        The memmap keeps its length: call again after an append to see the new rows. Before the
        first append the store has no shape and this is an empty float32 array.
        """
        self._check_open()
        s, mapped = self._snapshot()
        return mapped if rows is None else self._gather(s, mapped, np.asarray(rows))

    def get(self, task_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Items of these ids in the order given (KeyError for an id that is not live)."""
        self._check_open()
        s, mapped = self._snapshot()
        return self._gather(s, mapped, self._rows(s, _as_ids(task_ids)))

    def get_live(self, task_ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Those of these ids still live, and their items, read from one state: a delete meanwhile cannot fail it."""
        self._check_open()
        s, mapped = self._snapshot()
        ids = _as_ids(task_ids)
        pos, found = _lookup(s.keys, ids)
        return ids[found], self._gather(s, mapped, s.vals[pos[found]])
