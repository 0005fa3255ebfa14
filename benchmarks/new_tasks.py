"""What the backend's own work costs for a batch of new tasks, and for a quiet poll, as the pool grows.

Every ``TASKS_CREATED`` webhook (and every poll that finds tasks saved since the last) stores the new
items, finds which stored tasks the version in service does not know, scores those and merges them into
its snapshot. Scoring is O(batch) and depends on the model, so it is left out; this times, on a pool of
``--pool`` tasks (tiny vector items: only the bookkeeping is timed), median of ``--batches``:

* ``append``: storing the batch (:meth:`PoolStore.append`), now with the new ids written into spare room after the
  store's sorted index, before inserted into a copy of it (timed here as today's append plus that copy of the index's
  ids and rows, which was the whole difference);
* ``find``: finding the tasks the snapshot does not know, now from the rows added since its mark
  (:meth:`PoolStore.ids_since`), before by comparing every stored id;
* ``merge``: the new snapshot, now appended in place where the ids come after every known one, before
  concatenated and sorted whole (reproduced here as it was);
* ``quiet``: a poll's look when nothing is new, now and before.

    python benchmarks/new_tasks.py --pool 1000000 5000000 --json benchmarks/results/new-tasks-cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
from machine import timed, write_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.stopping import stop_set
from service.pool_store import PoolStore
from service.served import LATENT_KEEP, Scored, ServedVersion

HEAD = 2000


def _with_items_before(self: ServedVersion, ids: np.ndarray, scored: Scored, keep: int) -> ServedVersion:
    """``ServedVersion.with_items`` as it was: every column concatenated and sorted again."""
    fresh = self.lookup(ids) < 0
    ids, pred, score, conf, value = (ids[fresh], scored.pred[fresh], scored.score[fresh],
                                     scored.confidence[fresh], scored.value[fresh])
    all_ids = np.concatenate([self.ids, ids])
    order = np.argsort(all_ids, kind="stable")
    head_ids = np.concatenate([self.head_ids, ids])
    head_values = np.concatenate([self.head_values, value])
    head_view = np.concatenate([self._head_view(), score])
    top = np.lexsort((head_ids, head_view))[:keep]
    return dataclasses.replace(
        self, ids=all_ids[order], pred=np.concatenate([self.pred, pred])[order],
        score=np.concatenate([self.score, score])[order],
        confidence=np.concatenate([self.confidence, conf])[order],
        head_ids=head_ids[top], head_values=head_values[top], head_view=head_view[top])


def _index_insert_before(keys: np.ndarray, vals: np.ndarray, ids: np.ndarray, first_row: int) -> None:
    """What ``PoolStore.append`` did to its index before: the sorted ids and their rows copied to insert new ones."""
    pos = np.searchsorted(keys, ids)
    np.insert(keys, pos, ids)
    np.insert(vals, pos, np.arange(first_row, first_row + len(ids)))


def _scored(rng: np.random.Generator, n: int) -> Scored:
    return Scored(rng.integers(0, 10, n), rng.random(n), rng.random(n), rng.random(n))


def _snapshot(store: PoolStore, rng: np.random.Generator) -> ServedVersion:
    ids, mark = store.ids_since(None)
    n = len(ids)
    s = _scored(rng, n)
    head = np.argsort(s.score)[:HEAD]
    pictured = np.union1d(stop_set(ids, 2 * LATENT_KEEP), ids[head])  # the latent picture's rows, as a version's
    latent = {"z": rng.random((len(pictured), 10), dtype=np.float32), "y": np.full(len(pictured), -1),
              "ids": pictured}
    return ServedVersion(1, "sae-v1", None, "margin", {}, np.sort(ids), s.pred, s.score, s.confidence, ids[head],
                         s.value[head], latent, s.score[head], rows_mark=mark)


def measure(pool: int, batch: int, batches: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    store = PoolStore(tempfile.mkdtemp(), fsync=False)
    for start in range(0, pool, 1_000_000):
        k = min(1_000_000, pool - start)
        store.append(np.arange(start, start + k), rng.random((k, 8), dtype=np.float32))
    now = before = _snapshot(store, rng)
    times: dict[str, list[float]] = {k: [] for k in ("append", "append_before", "find_now", "find_before", "merge_now",
                                                      "merge_before", "quiet_now", "quiet_before")}
    nxt = pool

    def unknown(version: ServedVersion, ids: np.ndarray) -> np.ndarray:
        return ids[version.lookup(ids) < 0]

    def compare_all(version: ServedVersion) -> np.ndarray:
        return unknown(version, store.ids())

    for _ in range(batches):
        ids = np.arange(nxt, nxt + batch)
        nxt += batch
        index = store._state
        _, t = timed(partial(store.append, ids, rng.random((batch, 8), dtype=np.float32)))
        times["append"].append(t)
        _, t2 = timed(partial(_index_insert_before, index.keys, index.vals, ids, index.n_rows))
        times["append_before"].append(t + t2)
        (since, mark), t = timed(partial(store.ids_since, now.rows_mark))
        found_now, t2 = timed(partial(unknown, now, since))
        times["find_now"].append(t + t2)
        found_before, t = timed(partial(compare_all, before))
        times["find_before"].append(t)
        assert found_now.tolist() == found_before.tolist() == ids.tolist()
        scored = _scored(rng, batch)
        codes = rng.random((batch, 10), dtype=np.float32)  # the service passes the batch's codes (the picture's)
        now, t = timed(partial(now.with_items, found_now, scored, HEAD, mark, codes))
        times["merge_now"].append(t)
        before, t = timed(partial(_with_items_before, before, found_before, scored, HEAD))
        times["merge_before"].append(t)
        assert np.array_equal(now.ids, before.ids) and np.array_equal(now.head_ids, before.head_ids)
        (quiet, _), t = timed(partial(store.ids_since, now.rows_mark))
        assert len(quiet) == 0
        times["quiet_now"].append(t)
        quiet, t = timed(partial(compare_all, before))
        assert len(quiet) == 0
        times["quiet_before"].append(t)
    row = {"pool": pool, "batch": batch, "batches": batches}
    for k, v in times.items():
        row[f"{k}_ms"] = round(1000 * statistics.median(v), 3)
        row[f"{k}_ms_max"] = round(1000 * max(v), 3)
    row["batch_now_ms"] = round(row["append_ms"] + row["find_now_ms"] + row["merge_now_ms"], 3)
    row["batch_before_ms"] = round(row["append_before_ms"] + row["find_before_ms"] + row["merge_before_ms"], 3)
    store.close()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=int, nargs="+", default=[1_000_000, 5_000_000])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    for pool in args.pool:
        rows.append(measure(pool, args.batch, args.batches, args.seed))
        print(rows[-1], flush=True)
    write_rows(args.json, rows)


if __name__ == "__main__":
    main()
