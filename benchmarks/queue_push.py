"""What ordering the queue project costs a push: the same versions pushed in view mode and in queue mode.

Two source projects of the same size on one fresh SQLite Label Studio, text tasks. Each version is a
ranking of the whole project whose scores drift a little from version to version (uncertain items stay
uncertain, so the head and the queue's copies overlap as they do in a live project); it is pushed to
one project with ``PUSH_MODE=view`` and to the other with ``PUSH_MODE=queue``, whose queue is seeded
with earlier copies first (a queue weeks old: copies of the tasks ranked just past the top-K, so nearly
every head task has one and the queue takes nearly as many rows as it can). The difference between the
two pushes is what the queue costs: copying the new top-K, its rows for the copies in the head, its model
version, view and the deletion of its earlier rows.

    python benchmarks/queue_push.py --tasks 60000 --queue-seed 5000 --json benchmarks/results/queue-push-60k.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import write_rows

from connectors.label_config import parse_label_config
from connectors.label_studio import LabelStudioClient
from connectors.label_studio_server import LabelStudioServer
from service.push import ORDERING, UNLABELED_FILTER, PushState, push_version
from service.served import ServedVersion
from service.settings import Settings

CONFIG = ('<View><Text name="t" value="$text"/><Choices name="c" toName="t">'
          '<Choice value="a"/><Choice value="b"/></Choices></View>')


def version(number: int, ids: np.ndarray, base: np.ndarray, drift: float, head: int,
            rng: np.random.Generator) -> ServedVersion:
    """A ranking of every task: the base scores plus a little noise, the head its ``head`` lowest."""
    score = 1 - np.abs(1 - np.abs(base + rng.normal(0, drift, len(base))))  # reflected into [0, 1]: no ties
    top = np.argsort(score, kind="stable")[:head]
    model = SimpleNamespace(class_names=["a", "b"])
    return ServedVersion(number, f"sae-v{number}", model, "margin", {}, ids, (score > 0.5).astype(np.int64),
                         score, 1 - score, ids[top], score[top])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=60000)
    p.add_argument("--head", type=int, default=500, help="PUSH_HEAD")
    p.add_argument("--top-k", type=int, default=50, help="PUSH_TOP_K: tasks copied into the queue a version")
    p.add_argument("--queue-seed", type=int, default=5000, help="copies in the queue before the first version")
    p.add_argument("--versions", type=int, default=6)
    p.add_argument("--drift", type=float, default=0.002, help="sd of the scores' change between versions")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    config = parse_label_config(CONFIG)
    with LabelStudioServer(Path(tempfile.mkdtemp()) / "ls") as ls:
        client = LabelStudioClient(ls.url, ls.token, timeout=600)
        projects, ids = {}, {}
        for mode in ("view", "queue"):
            projects[mode] = client.create_project(f"{mode} mode", CONFIG)
            ids[mode] = np.array(client.import_tasks(projects[mode], [{"text": f"item {i}"} for i in range(a.tasks)],
                                                     chunk=5000), np.int64)
        queue = client.ensure_queue_project(projects["queue"])
        base = rng.random(a.tasks)
        seeded = np.argsort(base)[a.top_k: a.top_k + a.queue_seed]
        t0 = time.perf_counter()
        client.import_tasks(queue, [{"data": {"text": f"item {i}"}, "meta": {"source_task": int(ids["queue"][i])}}
                                    for i in seeded], chunk=5000)
        seed_s = time.perf_counter() - t0
        states = {"view": PushState(), "queue": PushState()}
        model_dir = Path(tempfile.mkdtemp())
        settings = {mode: Settings(label_studio_url=ls.url, label_studio_api_key=ls.token, push_mode=mode,
                                   push_head=a.head, push_top_k=a.top_k, model_dir=model_dir)
                    for mode in ("view", "queue")}
        rounds = []
        for number in range(1, a.versions + 1):
            draw = rng.integers(2**32)
            row = {"version": number}
            for mode in ("view", "queue"):
                served = version(number, ids[mode], base, a.drift, a.head, np.random.default_rng(draw))
                t0 = time.perf_counter()
                report = push_version(client, projects[mode], config, served, settings[mode], states[mode])
                row[f"{mode}_s"] = round(time.perf_counter() - t0, 3)
                states[mode] = PushState(report.number, frozenset(report.marked), report.queued, report.rows)
                if mode == "queue":
                    row["queue_rows"] = len(report.queued.rows)
                    row["queue_tasks"] = len(report.queued.copies)
            print(json.dumps(row), flush=True)
            rounds.append(row)
        copies = client.queue_copies(queue)
        expected = [copies[int(t)] for t in served.head_ids if int(t) in copies][:20]
        shown = client.ordered_task_ids(queue, UNLABELED_FILTER, ORDERING, 20)
    write_rows(a.json, [{"tasks": a.tasks, "head": a.head, "top_k": a.top_k, "queue_seed": a.queue_seed,
                         "seed_s": round(seed_s, 1), "drift": a.drift, "rounds": rounds,
                         "queue_shows_the_ranking": shown == expected, "queue_first": len(expected)}])


if __name__ == "__main__":
    main()
