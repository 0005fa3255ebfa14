"""What one poll reads from Label Studio after labels changed whose webhooks were lost, at a project size.

A fresh SQLite Label Studio holds ``--tasks`` vector tasks, ``--labeled`` of them with an annotation
(imported with it), imported more than the two minutes a poll reads back before the mirror ingests
the project. Then every round makes a few new labels and one correction through the API without
telling the mirror (their webhooks lost), and runs one poll (``ProjectMirror.reconcile``). Rounds
alternate between the two ways a poll can read labels:

* ``changed``: the tasks Label Studio saved since the last save the previous poll saw (a poll now);
* ``all``: every labeled task, what a poll did before whenever a counter moved (forced here by
  forgetting where the last read stopped).

Each round records the poll's seconds, the task pages it asked for and the labeled tasks it read,
and checks that the mirror then holds every annotation Label Studio does.

    python benchmarks/poll_reads.py --tasks 20000 100000 --json benchmarks/results/poll-reads-cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import timed, write_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.label_config import parse_label_config
from connectors.label_studio import LabelStudioClient
from connectors.label_studio_server import LabelStudioServer
from connectors.task_data import DataFetcher
from service.mirror import OVERLAP_SECONDS, ProjectMirror

CONFIG = ('<View><Text name="v" value="$v"/><Choices name="c" toName="v">'
          '<Choice value="a"/><Choice value="b"/></Choices></View>')


def _result(label: str) -> list[dict]:
    return [{"from_name": "c", "to_name": "v", "type": "choices", "value": {"choices": [label]}}]


def _results(annotations: list[dict]) -> list:
    return [a["result"] for a in sorted(annotations, key=lambda a: a["id"])]


def measure(n: int, labeled: int, new_per_round: int, rounds: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    with LabelStudioServer(Path(tempfile.mkdtemp()) / "ls") as ls:
        client = LabelStudioClient(ls.url, ls.token, timeout=600)
        pid = client.create_project("poll reads", CONFIG)
        tasks = [{"data": {"v": rng.normal(size=8).round(3).tolist()},
                  **({"annotations": [{"result": _result("ab"[i % 2])}]} if i < labeled else {})} for i in range(n)]
        ids, upload_s = timed(lambda: client.import_tasks(pid, tasks, chunk=5000))
        config = parse_label_config(CONFIG)
        mirror = ProjectMirror(Path(tempfile.mkdtemp()) / "mirror", pid)
        fetcher = DataFetcher(ls.url, ls.token)
        time.sleep(OVERLAP_SECONDS + 5)  # a project labeled before the backend came: its import lies past the overlap
        client.update_task_meta(ids[-1], {"touched": True})  # then one save, where the first poll reads from
        _, ingest_s = timed(lambda: mirror.ingest(client, config, fetcher))
        pages, read = [], []
        page, iter_tasks = client._page, client.iter_tasks

        def counted_page(params: dict, first: bool) -> tuple[list[dict], int]:
            pages.append(1)
            return page(params, first)

        def counted_tasks(*args: object, **kwargs: object):
            for t in iter_tasks(*args, **kwargs):
                if kwargs.get("labeled"):
                    read.append(t["id"])
                yield t

        client._page, client.iter_tasks = counted_page, counted_tasks
        unlabeled = iter(ids[labeled:])
        out = []
        for r in range(2 * rounds):
            how = ("changed", "all")[r % 2]
            for _ in range(new_per_round):
                client.create_annotation(next(unlabeled), _result("a"))
            corrected = int(ids[int(rng.integers(labeled))])
            first = client.ls.annotations.list(id=corrected)[0]
            client.ls.annotations.update(id=first.id, result=_result("b" if first.result == _result("a") else "a"))
            time.sleep(1.1)  # a poll's start apart from the saves
            if how == "all":
                mirror.state.pop("read_at", None)
            pages.clear()
            read.clear()
            done, seconds = timed(lambda: mirror.reconcile(client, config, fetcher, 3600))
            poll_pages, poll_read = len(pages), len(read)
            truth = {int(t["id"]): _results(t["annotations"]) for t in iter_tasks(pid, labeled=True)}
            held = {t: _results(a) for t, a in mirror.annotations.items() if a}
            out.append({"read": how, "poll_s": seconds, "task_pages": poll_pages, "labeled_tasks_read": poll_read,
                        "labels_read": done["labels"], "mirror_matches_label_studio": held == truth,
                        "labeled_after": len(truth)})
            print(json.dumps(out[-1]), flush=True)
        return {"tasks": n, "labeled": labeled, "new_labels_per_round": new_per_round, "corrections_per_round": 1,
                "import_s": upload_s, "ingest_s": ingest_s, "rounds": out}


def summary(row: dict) -> dict:
    """Median of each way's rounds, for the table."""
    def med(how: str, key: str) -> float:
        return statistics.median(r[key] for r in row["rounds"] if r["read"] == how)
    return {how: {k: med(how, k) for k in ("poll_s", "task_pages", "labeled_tasks_read")} for how in ("changed", "all")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, nargs="+", default=[20000])
    p.add_argument("--labeled", type=float, default=0.5, help="share of the tasks labeled at the start")
    p.add_argument("--new", type=int, default=10, help="new labels a round (plus one correction)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of each way")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    rows = []
    for n in a.tasks:
        row = measure(n, int(n * a.labeled), a.new, a.rounds)
        row["median"] = summary(row)
        rows.append(row)
        print(json.dumps(row["median"]), flush=True)
    write_rows(a.json, rows)


if __name__ == "__main__":
    main()
