"""What a save of the project mirror costs as the labeled tasks grow: now (``mirror.db``) against before.

A busy project's mirror is saved at every poll that read a change (and after new tasks, at shutdown).
Before, a save serialised every annotation to one JSON string, hashed it to skip an unchanged write,
and rewrote the whole file. Now :class:`~service.mirror_db.MirrorDB` writes the tasks whose
annotation lists were replaced since the last save. For each size this times, median of ``--repeats``:

* ``changed``: a save after 10 labels and one correction arrived and one label was deleted;
* ``unchanged``: a save with nothing new (a quiet poll);
* ``load``: reading the mirror back at start-up;

the same three for the whole-file JSON save of before (reproduced here as it was), and the first save
that writes everything into a new database (once, as after an upgrade).

    python benchmarks/mirror_saves.py --labeled 100000 1000000 --json benchmarks/results/mirror-saves-cpu.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
from pathlib import Path

from machine import timed, write_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.mirror import ProjectMirror


def _annotation(i: int, label: str) -> dict:
    """One annotation as the mirror keeps it (Label Studio's fields it reads)."""
    stamp = "2026-01-01T00:00:00.000000Z"
    return {"id": i, "task": i, "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                           "value": {"choices": [label]}, "id": f"r{i}", "origin": "manual"}],
            "was_cancelled": False, "ground_truth": False, "created_at": stamp, "updated_at": stamp}


def _json_save(m: ProjectMirror, path: Path, saved: list[bytes | None]) -> None:
    """The save before mirror.db: the whole mirror as one JSON string, written when its digest moved."""
    body = json.dumps({"annotations": dict(m.annotations), "queue_annotations": dict(m.queue_annotations),
                       "skipped": dict(m.skipped), "retrying": dict(m.retrying), "state": m.state})
    digest = hashlib.blake2b(body.encode(), digest_size=16).digest()
    if digest == saved[0] and path.exists():
        return
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(body)
    tmp.replace(path)
    saved[0] = digest


def _json_load(path: Path) -> dict:
    """The load before mirror.db: the file parsed, task ids made ints again."""
    d = json.loads(path.read_text())
    return {k: {int(t): v for t, v in d[k].items()} for k in ("annotations", "queue_annotations", "skipped")}


def _changes(m: ProjectMirror, n: int, round_: int) -> None:
    """10 new labels, one correction, one deletion: what a poll of a busy project brings."""
    base = n + 100 * round_
    for k in range(10):
        m.upsert_annotation(base + k, _annotation(base + k, "Shirt"))
    m.upsert_annotation(round_, _annotation(round_, "Coat"))
    m.remove_annotations([n - 1 - round_])


def measure(n: int, repeats: int) -> dict:
    directory = Path(tempfile.mkdtemp())
    m = ProjectMirror(directory / "mirror", 1)
    m.annotations = {i: [_annotation(i, "Shirt")] for i in range(n)}
    m.state.update(ingested=True)
    _, first_s = timed(m.save)
    legacy, saved = directory / "old.json", [None]
    _json_save(m, legacy, saved)
    row: dict = {"labeled": n, "first_save_s": round(first_s, 3), "db_bytes": m.db.path.stat().st_size,
                 "json_bytes": legacy.stat().st_size, "changed_s": [], "changed_rows": [], "unchanged_s": [],
                 "json_changed_s": [], "json_unchanged_s": [], "load_s": [], "json_load_s": []}
    for r in range(repeats):
        _changes(m, n, r)
        row["changed_s"].append(round(timed(m.save)[1], 4))
        row["changed_rows"].append(m.db.rows_written)
        row["json_changed_s"].append(round(timed(lambda: _json_save(m, legacy, saved))[1], 4))
        row["unchanged_s"].append(round(timed(m.save)[1], 4))
        row["json_unchanged_s"].append(round(timed(lambda: _json_save(m, legacy, saved))[1], 4))
        again, load_s = timed(lambda: ProjectMirror(directory / "mirror", 1))
        assert again.annotations == m.annotations, "the database must give back what was saved"
        row["load_s"].append(round(load_s, 3))
        row["json_load_s"].append(round(timed(lambda: _json_load(legacy))[1], 3))
        del again
    print(json.dumps({k: statistics.median(v) if isinstance(v, list) else v for k, v in row.items()}), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labeled", type=int, nargs="+", default=[100_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the raw rows here")
    args = ap.parse_args()
    write_rows(args.json, [measure(n, args.repeats) for n in args.labeled])


if __name__ == "__main__":
    main()
