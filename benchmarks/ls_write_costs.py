"""What each Label Studio write of a push costs at a project size, with and without an operator's flag.

A version's push is a few Label Studio writes: import the head's predictions, set the project's
model version, read and PATCH the ``meta`` marks, delete an earlier version's rows; and the writer claim's
requests (a poll reads the project's views, a claim writes the backend's view and reads it back), and the read a
retried push makes of its head's tasks with their rows (which hold a row of the version). Label Studio 1.23's
prediction import recounts every task of the project after each request, unless its operator
turns on its feature flag (``IMPORT_RECOUNT_FLAG`` in ``connectors/label_studio_server.py``, off
in the flags file Label Studio ships), which recounts only the tasks imported into. This
measures each write on a fresh SQLite Label Studio per setting, text tasks (the counters Label
Studio recounts do not depend on the data):

    python benchmarks/ls_write_costs.py --tasks 60000 --json benchmarks/results/ls-write-costs-60k.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

from machine import timed, write_rows

from connectors.label_studio import REREAD, LabelStudioClient
from connectors.label_studio_server import IMPORT_RECOUNT_FLAG, LabelStudioServer
from service.push import VIEW
from service.writer_claim import Claim, Writer, claim_writer

CONFIG = ('<View><Text name="t" value="$text"/><Choices name="c" toName="t">'
          '<Choice value="a"/><Choice value="b"/></Choices></View>')


def measure(n: int, head: int, marks: int, repeats: int, env: dict[str, str], claims: int = 20) -> dict:
    with LabelStudioServer(Path(tempfile.mkdtemp()) / "ls", env=env) as ls:
        client = LabelStudioClient(ls.url, ls.token, timeout=600)
        pid = client.create_project("write costs", CONFIG)
        t0 = time.perf_counter()
        ids = client.import_tasks(pid, [{"text": f"item {i}"} for i in range(n)], chunk=5000)
        upload_s = time.perf_counter() - t0
        rows = lambda v: [{"task": t, "model_version": v, "score": i / head,  # noqa: E731
                           "result": [{"from_name": "c", "to_name": "t", "type": "choices",
                                       "value": {"choices": ["a"]}}]} for i, t in enumerate(ids[:head])]
        imports, versions, deletes = [], [], []
        for r in range(repeats):
            name = f"sae-v{r + 1}"
            imports.append(timed(partial(client.import_predictions, pid, rows(name)))[1])
            versions.append(timed(partial(client.set_model_version, pid, name))[1])
            if r:
                deletes.append(timed(partial(client.delete_predictions, pid, [f"sae-v{r}"]))[1])
        held = [timed(partial(client.prediction_versions, pid, ids[:head]))[1] for _ in range(3)]
        marked = ids[head: head + marks]
        rereads = [timed(lambda b=marked[i:i + REREAD]: list(client.tasks_by_id(pid, b)))[1]  # marks read meta again
                   for i in range(0, len(marked), REREAD)]
        patches = [timed(partial(client.update_task_meta, t, {"sae": {"rank": i + 1}}, merge=False))[1]
                   for i, t in enumerate(marked)]
        taken = [timed(partial(claim_writer, client, pid, Writer(f"install-{i}"), 0, time.time(), VIEW))[1]
                 for i in range(claims)]  # lease 0: each claim takes the project, so each writes and reads back
        reads = [timed(partial(Claim.read, client, pid))[1] for _ in range(claims)]
        return {"tasks": n, "head": head, "env": env, "upload_s": round(upload_s, 1),
                "import_head_s": [round(x, 3) for x in imports],
                "set_model_version_s": [round(x, 3) for x in versions],
                "delete_version_s": [round(x, 3) for x in deletes],
                "meta_patch_ms_median": round(1000 * statistics.median(patches), 1), "meta_patches": len(patches),
                "meta_reread_ms_median": round(1000 * statistics.median(rereads), 1), "meta_reread_tasks": REREAD,
                "claim_read_ms_median": round(1000 * statistics.median(reads), 1),
                "claim_write_ms_median": round(1000 * statistics.median(taken), 1), "claims": claims,
                "head_read_s_median": round(statistics.median(held), 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=60000)
    p.add_argument("--head", type=int, default=500, help="PUSH_HEAD: rows a version imports")
    p.add_argument("--marks", type=int, default=50, help="meta PATCHes timed")
    p.add_argument("--repeats", type=int, default=3, help="versions pushed per setting")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    settings = [("Label Studio's defaults", {}), (f"{IMPORT_RECOUNT_FLAG}=true", {IMPORT_RECOUNT_FLAG: "true"})]
    rows = []
    for name, env in settings:
        row = {"setting": name, **measure(a.tasks, a.head, a.marks, a.repeats, env)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    write_rows(a.json, rows)


if __name__ == "__main__":
    main()
