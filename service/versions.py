"""Model versions on disk: ``MODEL_DIR/project-<id>/v000001/`` and so on, never overwritten (the oldest pruned).

A version directory appears only complete (it is renamed into place by
:func:`model.persistence.save_model`), so after a crash the newest complete one is
served. Temporary leftovers are cleaned by :meth:`VersionStore.clean_temporary`, which
the service calls once at start-up and never while a save may be running. Numbers only
grow, across restarts too.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np

from model.persistence import load_model, read_settings, save_model
from model.sae_classifier import SAEClassifier
from service.pool_store import replacing, write_durably

log = logging.getLogger("sae_backend.versions")

MARKED_FILE = "marked.bin"  # int64 task ids, little-endian
_VERSION_DIR = re.compile(r"^v(\d{6,})$")
_OWN_NAME = re.compile(r"sae-v(0|[1-9][0-9]*)(?:-unread)?")  # exactly what the two below write, nothing near it


def version_name(number: int) -> str:
    """The string Label Studio sees as ``model_version``."""
    return f"sae-v{number}"


def unread_version_name(number: int) -> str:
    """The ``model_version`` of a ``/predict`` answer for a task whose data could not be read.

    Label Studio stores every answer as a prediction row; under the version's own name that empty row would
    count as the task's (the push would not write the real one, the view would sort the task by its placeholder
    score) and Label Studio would never ask for the task again. Under this name it does neither, and the row
    goes with the version's other rows when a newer version is pushed.
    """
    return f"{version_name(number)}-unread"


def own_version_number(name: str) -> int | None:
    """The number of a model version this backend wrote (its unread answers' too), or None for anybody else's
    predictions."""
    m = _OWN_NAME.fullmatch(str(name))
    return int(m.group(1)) if m else None


def own_versions(counts: dict[str, int]) -> dict[str, int]:
    """This backend's versions among Label Studio's prediction counts per version, with their numbers
    (only those with rows; anybody else's are never touched)."""
    return {v: n for v, count in counts.items() if count and (n := own_version_number(v)) is not None}


class VersionStore:
    def __init__(self, root: Path, project_id: int) -> None:
        self.dir = Path(root) / f"project-{project_id}"
        self.dir.mkdir(parents=True, exist_ok=True)

    def clean_temporary(self) -> int:
        """Remove half-written (or half-deleted) versions and snapshots a killed process left; call before any
        training starts."""
        leftovers = [*self.dir.glob(".v*.tmp-*"), *self.dir.glob("served-v*.npz.tmp.npz")]
        for leftover in leftovers:
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        return len(leftovers)

    def prune(self, keep: int, serving: int) -> list[int]:
        """Delete all but the newest ``keep`` versions, and every scored snapshot but the served one's.

        A project that retrains every few labels for weeks would otherwise fill the disk (a snapshot
        is about 32 bytes a task). The version in service is never deleted; a version is first renamed
        to a temporary name, so a crash mid-delete leaves nothing that looks complete.
        """
        numbers = self.numbers()
        doomed = [n for n in numbers[: max(len(numbers) - keep, 0)] if n != serving]
        pruned = [n for n in doomed if self.discard(n)]  # each on its own: one that cannot go keeps no other
        for snapshot in self.dir.glob("served-v*.npz"):
            m = re.match(r"^served-v(\d+)\.npz$", snapshot.name)
            if m and int(m.group(1)) != serving:
                try:
                    snapshot.unlink(missing_ok=True)
                except OSError as e:
                    log.warning("%s: %s could not be deleted: %s", self.dir, snapshot.name, e)
        return pruned

    def discard(self, number: int) -> bool:
        """Delete one version (renamed first, so a crash mid-delete leaves nothing that looks complete); whether it
        went. Also for a version whose scoring failed: never served, of no use, it must not pile up."""
        gone = self.dir / f".v{number:06d}.tmp-pruned"
        try:
            if gone.exists():  # left by a delete cut short: the rename would fail onto it
                shutil.rmtree(gone)
            self.path(number).replace(gone)
        except OSError as e:
            log.warning("%s: version %s could not be deleted: %s", self.dir, number, e)
            return False
        shutil.rmtree(gone, ignore_errors=True)
        return True

    def numbers(self) -> list[int]:
        out = []
        for p in self.dir.iterdir():
            m = _VERSION_DIR.match(p.name)
            if m and (p / "settings.json").exists():
                out.append(int(m.group(1)))
        return sorted(out)

    def next_number(self) -> int:
        nums = self.numbers()
        counter = self.dir / "last_number"
        text = counter.read_text().strip() if counter.exists() else ""
        last = int(text) if text.isdigit() else 0  # unreadable (a crash mid-write): the directories still count
        return max([last, *nums]) + 1

    def _write_counter(self, number: int) -> None:
        """The last number handed out, written atomically: a crash mid-write must not lower it."""
        tmp = self.dir / "last_number.tmp"
        tmp.write_text(str(int(number)))
        tmp.replace(self.dir / "last_number")

    def skip_past(self, number: int) -> None:
        """Number the next version above ``number``: a ``MODEL_DIR`` started afresh must not reuse the names
        of versions an earlier one left in Label Studio (their rows would never count as older)."""
        if number >= self.next_number():
            self._write_counter(number)

    def save(self, model: SAEClassifier, metrics: dict) -> tuple[int, str]:
        number = self.next_number()
        self._write_counter(number)
        name = version_name(number)
        meta = {"model_version": name, "number": number, "created_at": time.time(), **metrics}
        save_model(model, self.dir / f"v{number:06d}", meta)
        return number, name

    def path(self, number: int) -> Path:
        return self.dir / f"v{number:06d}"

    def load(self, number: int, device: str = "auto") -> SAEClassifier:
        return load_model(self.path(number), device)

    def history(self) -> list[dict]:
        """Metadata of every complete version, oldest first."""
        out = []
        for n in self.numbers():
            try:
                meta = read_settings(self.dir / f"v{n:06d}").get("metadata", {})
            except FileNotFoundError:  # pruned since it was listed
                continue
            out.append({k: meta.get(k) for k in ("model_version", "labeled", "cv_accuracy", "train_seconds",
                                                 "read_seconds", "created_at")})
        return out

    def write_marked(self, marked: frozenset[int]) -> dict:
        """The set of tasks that may carry a mark, beside ``project.json`` rather than in it: it keeps every labeled
        task that was asked for, O(labels), and is written when it changes, not at every record of the project.
        Returns what ``project.json`` keeps in its place."""
        with replacing(self.dir / MARKED_FILE) as fh:
            fh.write(np.asarray(sorted(marked), dtype="<i8").tobytes())
        return {"file": MARKED_FILE, "count": len(marked)}

    def read_marked(self, record: dict) -> frozenset[int] | None:
        """The set :meth:`write_marked` wrote, where it holds as many tasks as ``record`` (its place in
        ``project.json``) says; else None (unknown: the next push reads and rewrites every mark): the file is gone,
        cut short, or newer than the record (a crash between the two writes)."""
        try:
            data = (self.dir / MARKED_FILE).read_bytes()
        except OSError:
            return None
        if len(data) % 8 or len(data) // 8 != record.get("count"):
            return None
        return frozenset(np.frombuffer(data, dtype="<i8").tolist())

    def write_project(self, info: dict) -> None:
        """Synced before it replaces the old record, so a power cut leaves the old record or the new one."""
        write_durably(self.dir / "project.json", json.dumps(info, indent=1))

    def read_project(self) -> dict | None:
        """The project's record, or None. One that cannot be read (a file system that tore the write) is set
        aside as ``project.json.corrupt-<time>``: the project starts without it (its config comes again with the
        next request, the next push rewrites every mark) rather than keeping every project from starting."""
        p = self.dir / "project.json"
        if not p.exists():
            return None
        try:
            info = json.loads(p.read_text())
            if not isinstance(info, dict):
                raise ValueError(f"a {type(info).__name__}, not an object")
            return info
        except (ValueError, UnicodeDecodeError) as e:
            aside = p.with_name(f"project.json.corrupt-{int(time.time())}")
            p.replace(aside)
            log.error("%s could not be read (%s); set aside as %s, the project starts without it", p, e, aside.name)
            return None


def known_projects(root: Path) -> list[int]:
    root = Path(root)
    if not root.exists():
        return []
    out = []
    for p in root.glob("project-*"):
        try:
            out.append(int(p.name.split("-", 1)[1]))
        except ValueError:
            continue
    return sorted(out)
