"""What a training pays to read a pool after some of its tasks were deleted, now and before.

Deleted tasks leave dead rows in the pool's memory map. Before, every training compacted the pool first
(``compact(min_dead=0)``: every live row rewritten, for one deleted task too); now it compacts only past
``COMPACT_DEAD_SHARE`` of the rows and otherwise reads through the dead rows
(:func:`service.training.pool_stretch`). The third way, gathering the live rows, copies the pool into memory. On a
pool of ``--pool`` 28x28 uint8 items, for each share of deleted tasks, this times:

* ``stretch``: the training's read now (``pool_stretch``, then one epoch's reads: every live row once, in random
  batches of 256, the deleted rows stepped over as the fit's ``mask`` does);
* ``gather``: the live rows gathered into memory (``live_items``), then the same epoch;
* ``compact``: what each training did before it read (a compaction of the whole pool, synced to disk).

Memory is the peak of numpy's allocations (``tracemalloc``): pages of the memory map are the page cache's.
The pool is written just before, so its pages are in the page cache: a pool on a cold disk reads slower in all
three.

    python benchmarks/pool_gaps.py --pool 1000000 --json benchmarks/results/pool-gaps-cpu.json
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
from machine import timed, write_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.pool_store import COMPACT_DEAD_SHARE, PoolStore
from service.training import live_items, pool_stretch

SHAPE = (1, 28, 28)
CHUNK = 100_000


def _epoch(x: np.ndarray, rows: np.ndarray, seed: int, batch: int = 256) -> int:
    """One read of every row in ``rows``, in random batches, as an epoch of the fit draws them."""
    order = rows[np.random.default_rng(seed).permutation(len(rows))]
    total = 0
    for s in range(0, len(order), batch):
        total += int(x[np.sort(order[s:s + batch])].sum(dtype=np.int64))
    return total


def _peak_mb(fn) -> tuple[object, float, float]:
    tracemalloc.start()
    try:
        out, seconds = timed(fn)
        return out, seconds, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def measure(pool: int, share: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    where = Path(tempfile.mkdtemp())
    try:
        store = PoolStore(where, fsync=False)
        for start in range(0, pool, CHUNK):
            k = min(CHUNK, pool - start)
            store.append(np.arange(start, start + k), rng.integers(0, 256, (k, *SHAPE), dtype=np.uint8))
        ids = store.ids()
        store.delete(rng.choice(ids, round(share * pool), replace=False))
        live_ids = store.ids()

        def stretch() -> int:
            _, x, live = pool_stretch(str(where), live_ids)
            assert isinstance(x, np.memmap) and int(live.sum()) == len(live_ids)
            return _epoch(x, np.flatnonzero(live), seed)

        def gather() -> int:
            _, x = live_items(str(where), live_ids)
            return _epoch(x, np.arange(len(x)), seed)

        (seen, t_stretch, mb_stretch) = _peak_mb(stretch)
        (gathered, t_gather, mb_gather) = _peak_mb(gather)
        assert seen == gathered, "the same items, read where they lie"
        _, t_compact = timed(lambda: store.compact(min_dead=0.0))
        assert len(store.items()) == len(live_ids)
        store.close()
        return {"pool": pool, "deleted_share": share, "live": len(live_ids),
                "pool_mb": round(pool * int(np.prod(SHAPE)) / 2**20, 1),
                "stretch_s": round(t_stretch, 3), "stretch_peak_mb": round(mb_stretch, 1),
                "gather_s": round(t_gather, 3), "gather_peak_mb": round(mb_gather, 1),
                "compact_s": round(t_compact, 3), "compacts_now": share > COMPACT_DEAD_SHARE,
                "dead_rows": pool - len(live_ids)}
    finally:
        shutil.rmtree(where, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--shares", type=float, nargs="+", default=[0.0001, 0.01, 0.05, 0.09])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    for pool in args.pool:
        for share in args.shares:
            rows.append(measure(pool, share, args.seed))
            print(rows[-1], flush=True)
    write_rows(args.json, rows)


if __name__ == "__main__":
    main()
