"""The project mirror's annotations and sync state on disk: one SQLite file that a save changes row by row.

The mirror used to rewrite one JSON file whole at every save that changed anything, O(labeled tasks)
each time: 0.75 s and 32 MB at 100k labeled tasks, 5.6 s and 326 MB at a million, every poll of a busy
project (benchmarks/mirror_saves.py). Here a save writes only the tasks whose annotation lists were
replaced since the last save (the mirror replaces a task's list on every change, never edits it in
place), in one transaction, so a crash leaves the previous save or this one, never a mix. A
``mirror.json`` from before is read once and moved into the database.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.pool_store import fsync_dir

_SCHEMA = """
CREATE TABLE IF NOT EXISTS annotations (queue INTEGER NOT NULL, task INTEGER NOT NULL, body TEXT NOT NULL,
                                        PRIMARY KEY (queue, task)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS skipped (task INTEGER PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, body TEXT NOT NULL);
"""


class MirrorDBError(Exception):
    """The file cannot be read as a mirror (a torn write on a file system without atomic renames, say)."""


@dataclass
class Snapshot:
    """What the mirror holds, as plain dicts (a save is handed shallow copies taken under the mirror's lock)."""

    annotations: dict[int, list[dict]]
    queue_annotations: dict[int, list[dict]]
    skipped: dict[int, str]
    retrying: dict[int, int]
    state: dict[str, Any]

    def copy(self) -> Snapshot:
        return Snapshot(dict(self.annotations), dict(self.queue_annotations), dict(self.skipped),
                        dict(self.retrying), self.state)


class MirrorDB:
    """Reads a mirror once at start-up, then writes what changed since the last save."""

    def __init__(self, path: Path | str, legacy_json: Path | str | None = None) -> None:
        self.path = Path(path)
        self.legacy_json = Path(legacy_json) if legacy_json is not None else None
        self._written: Snapshot | None = None  # as the file holds it; None: the next save writes everything
        self._meta: dict[str, str] = {}
        self.rows_written = 0  # by the last save: annotation and skip rows put or deleted

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One connection per load or save: saves are rare and come from several threads, taking turns."""
        with closing(sqlite3.connect(self.path, timeout=30.0)) as con:
            con.execute("PRAGMA synchronous=FULL")
            with con:
                yield con

    def load(self) -> Snapshot | None:
        """The saved mirror, or None if there is none. Raises :class:`MirrorDBError` if it cannot be read."""
        if not self.path.exists():
            if self.legacy_json is None or not self.legacy_json.exists():
                return None
            return self._migrate(self.legacy_json)
        try:
            with self._connect() as con:
                con.executescript(_SCHEMA)
                snap = Snapshot({}, {}, {}, {}, {})
                for queue, task, body in con.execute("SELECT queue, task, body FROM annotations"):
                    (snap.queue_annotations if queue else snap.annotations)[int(task)] = json.loads(body)
                snap.skipped = {int(t): str(r) for t, r in con.execute("SELECT task, reason FROM skipped")}
                meta = dict(con.execute("SELECT key, body FROM meta").fetchall())
            snap.retrying = {int(k): int(v) for k, v in json.loads(meta.get("retrying", "{}")).items()}
            snap.state = json.loads(meta.get("state", "{}"))
        except sqlite3.OperationalError:
            raise  # locked, unreadable directory, disk I/O: a fault to fix, not a mirror to throw away
        except (sqlite3.DatabaseError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as e:
            raise MirrorDBError(str(e)) from e
        self._written, self._meta = snap.copy(), meta
        return snap

    def set_aside(self) -> list[Path]:
        """Move an unreadable mirror (and a journal beside it) out of the way, kept for a look; returns where."""
        stamp, moved = int(time.time()), []
        for p in (self._journal(), self.path, self.legacy_json):  # the journal first: alone, it is inert
            if p is not None and p.exists():
                moved.append(p.replace(p.with_name(f"{p.name}.corrupt-{stamp}")))
        self._written, self._meta = None, {}
        return moved

    def _journal(self) -> Path:
        return self.path.with_name(self.path.name + "-journal")

    def _migrate(self, legacy: Path) -> Snapshot:
        """A mirror.json of an earlier release: its content becomes the database, then the file goes.

        The database is built under another name and renamed into place, so a migration cut short
        leaves no half-filled ``mirror.db`` that the next start would trust over the JSON.
        """
        try:
            d = json.loads(legacy.read_text())
            snap = Snapshot({int(k): v for k, v in d.get("annotations", {}).items()},
                            {int(k): v for k, v in d.get("queue_annotations", {}).items()},
                            {int(k): v for k, v in d.get("skipped", {}).items()},
                            {int(k): int(v) for k, v in d.get("retrying", {}).items()},
                            d.get("state", {}))
        except (UnicodeDecodeError, ValueError, TypeError, AttributeError) as e:  # an OSError is a fault to fix
            raise MirrorDBError(f"{legacy.name}: {e}") from e
        orphan = self._journal()
        if orphan.exists():  # left by a crash, it would be replayed onto the new file and wreck it
            orphan.replace(orphan.with_name(f"{orphan.name}.orphan-{int(time.time())}"))
        building = MirrorDB(self.path.with_name(self.path.name + ".migrating"))
        building.path.unlink(missing_ok=True)
        building.save(snap)
        building.path.replace(self.path)
        fsync_dir(self.path.parent)  # the rename is on disk before the JSON goes
        self._written, self._meta = snap.copy(), building._meta  # the mirror is handed snap's dicts
        legacy.unlink()
        return snap

    def save(self, snap: Snapshot) -> None:
        """Write what differs from the last save, in one transaction; nothing at all when nothing does.

        ``snap`` is kept as the last save, so its dicts must be the caller's own copies, left unchanged after.
        """
        old = self._written if self.path.exists() else None
        rows: list[tuple[int, int, str]] = []
        gone: list[tuple[int, int]] = []
        for queue, now, before in ((0, snap.annotations, old and old.annotations),
                                   (1, snap.queue_annotations, old and old.queue_annotations)):
            before = before or {}
            rows += [(queue, t, json.dumps(v)) for t, v in now.items() if before.get(t) is not v]
            gone += [(queue, t) for t in before.keys() - now.keys()]
        skipped_before = old.skipped if old else {}
        skips = [(t, r) for t, r in snap.skipped.items() if skipped_before.get(t) != r]
        unskipped = [(t,) for t in skipped_before.keys() - snap.skipped.keys()]
        meta = {"state": json.dumps(snap.state, sort_keys=True),
                "retrying": json.dumps({str(k): v for k, v in snap.retrying.items()}, sort_keys=True)}
        meta_rows = [(k, v) for k, v in meta.items() if self._meta.get(k) != v]
        if old is not None and not (rows or gone or skips or unskipped or meta_rows):
            self.rows_written = 0
            return
        with self._connect() as con:
            con.executescript(_SCHEMA)
            if old is None:  # a first save, or one after the file was set aside: it holds this snapshot only
                con.execute("DELETE FROM annotations")
                con.execute("DELETE FROM skipped")
                con.execute("DELETE FROM meta")
                meta_rows = list(meta.items())
            con.executemany("INSERT OR REPLACE INTO annotations VALUES (?, ?, ?)", rows)
            con.executemany("DELETE FROM annotations WHERE queue = ? AND task = ?", gone)
            con.executemany("INSERT OR REPLACE INTO skipped VALUES (?, ?)", skips)
            con.executemany("DELETE FROM skipped WHERE task = ?", unskipped)
            con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta_rows)
        self._written, self._meta = snap, {**self._meta, **dict(meta_rows)}
        self.rows_written = len(rows) + len(gone) + len(skips) + len(unskipped)
