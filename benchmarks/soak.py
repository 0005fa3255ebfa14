"""Weeks of a project in minutes: many versions in a row, watching what the backend process holds.

Starts a real Label Studio (own venv, SQLite) and ``sae-backend serve`` as a separate process on
scikit-learn's digits, labels an initial round, then runs ``--rounds`` rounds. Every round makes
the changes a team makes: new labels, a correction, a deleted label, and every few rounds new
tasks and deleted tasks; polls and full re-reads run on short timers meanwhile. After each
version is served and pushed it records the backend's resident memory, open files, threads,
the size of ``MODEL_DIR`` (versions kept, mirror), Label Studio's database and prediction rows, the project's
views (the writer claim updates the backend's own) and whether the push took the project over (a holder whose
claim lapsed between its polls would read every mark again).
A leak shows as a slope; ``loop_tables.soak_table`` reads the result.

    python benchmarks/soak.py --rounds 150 --json benchmarks/results/soak-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from label_studio_sdk.core.api_error import ApiError
from loop_latency import db_bytes, pngs, serve
from machine import cpu_model, describe

from connectors.datasets import load_dataset
from connectors.label_studio import LabelStudioClient, LabelStudioError
from connectors.label_studio_server import LabelStudioServer


def proc_stats(pid: int) -> dict:
    """Resident and peak memory (MB), threads and open file descriptors of a Linux process."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": round(int(status["VmRSS"].split()[0]) / 1024, 1),
            "peak_rss_mb": round(int(status["VmHWM"].split()[0]) / 1024, 1),
            "threads": int(status["Threads"]), "open_fds": len(os.listdir(f"/proc/{pid}/fd"))}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def retried(fn, *args, **kwargs):
    """The driver's own writes, retried as the backend retries its own: a SQLite Label Studio answers 500
    ("database is locked") while another write holds the file, and the soak is about the backend, not the driver."""
    for attempt in range(6):
        try:
            return fn(*args, **kwargs)
        except (ApiError, LabelStudioError) as e:  # a 500 rolled the write back; a timeout may not have: not retried
            code = getattr(e, "status_code", None) or 0
            if attempt and code == 404:  # a delete that landed before its 500
                return None
            if attempt == 5 or code < 500:
                raise
            time.sleep(0.5 * 2 ** attempt)


def wait_settled(url: str, pid: int, labeled: int, after: str | None, timeout: float = 600) -> dict:
    """Until a version newer than ``after``, trained on ``labeled`` labels, is served and pushed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = httpx.get(f"{url}/projects/{pid}/status", timeout=60).json()
        if st["model_version"] not in (None, after) and st["version_labeled"] == labeled and not st["training"] \
                and not st["push_pending"]:
            return st
        time.sleep(0.2)
    raise TimeoutError(f"no new pushed version with {labeled} labels after {after}")


def run(ls: LabelStudioServer, args: argparse.Namespace) -> dict:
    ds = load_dataset("digits")
    n = min(args.tasks, len(ds.x_train))
    x, y = ds.x_train[:n], ds.y_train[:n]
    names = ds.class_names
    client = LabelStudioClient(ls.url, ls.token, timeout=300)
    config = ('<View><Image name="image" value="$image"/><Choices name="choice" toName="image" choice="single">'
              + "".join(f'<Choice value="{c}"/>' for c in names) + "</Choices></View>")
    pid = client.create_project("soak", config)
    ids = client.upload_files(pid, pngs(x))
    model_dir = Path(tempfile.mkdtemp()) / "model_store"
    env = dict(os.environ, LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=ls.token, MODEL_DIR=str(model_dir),
               SAE_EPOCHS=str(args.epochs), SAE_WARM_EPOCHS=str(args.warm_epochs),
               RETRAIN_MIN_NEW_LABELS="1", RETRAIN_DEBOUNCE_SECONDS=str(args.debounce),
               POLL_INTERVAL_SECONDS=str(args.poll), RECONCILE_FULL_SCAN_SECONDS=str(args.full_scan),
               PUSH_TOP_K=str(args.top_k), PUSH_HEAD=str(args.head), KEEP_VERSIONS=str(args.keep), DEVICE="cpu",
               WRITER_LEASE_SECONDS=str(args.lease))
    proc, url = serve(env)
    rng = np.random.default_rng(0)
    try:
        client.connect_ml_backend(pid, url)
        by_task = {t: i for i, t in enumerate(ids)}  # task -> item index (new tasks reuse an item)
        unlabeled = list(rng.permutation(ids))
        annotations: dict[int, int] = {}  # task -> annotation id

        def label(task: int, cls: int | None = None) -> None:
            c = int(y[by_task[task]]) if cls is None else cls
            annotations[task] = retried(client.create_annotation, task, [
                {"from_name": "choice", "to_name": "image", "type": "choices", "value": {"choices": [names[c]]}}])

        for _ in range(args.initial):
            label(int(unlabeled.pop()))
        st = wait_settled(url, pid, len(annotations), None)
        rounds = []
        for r in range(1, args.rounds + 1):
            t0 = time.perf_counter()
            for _ in range(args.per_round):
                label(int(unlabeled.pop()))
            fixed = int(rng.choice(list(annotations)))  # a correction: the annotation is replaced by a new word
            retried(client.ls.annotations.update, id=annotations[fixed], result=[
                {"from_name": "choice", "to_name": "image", "type": "choices",
                 "value": {"choices": [names[(int(y[by_task[fixed]]) + 1) % len(names)]]}}])
            gone = int(rng.choice([t for t in annotations if t != fixed]))
            retried(client.delete_annotation, annotations.pop(gone))
            unlabeled.insert(0, gone)
            if r % args.task_churn_every == 0:
                src = [int(unlabeled[i]) for i in range(2)]
                data = {int(t["id"]): t["data"] for t in client.tasks_by_id(pid, src)}
                new = retried(client.import_tasks, pid, [{"data": data[t]} for t in src])
                for t, s in zip(new, src, strict=True):
                    by_task[int(t)] = by_task[s]
                    unlabeled.insert(0, int(t))
                for t in (int(unlabeled.pop()), int(unlabeled.pop())):  # two unlabeled tasks deleted
                    retried(client.ls.tasks.delete, id=t)
            st = wait_settled(url, pid, len(annotations), st["model_version"])
            row = {"round": r, "version": st["model_version"], "labeled": len(annotations),
                   "seconds": round(time.perf_counter() - t0, 2), **proc_stats(proc.pid),
                   "model_dir_bytes": dir_bytes(model_dir), "versions_kept": len(st["versions"]),
                   "mirror_db_bytes": (model_dir / f"project-{pid}" / "mirror" / "mirror.db").stat().st_size,
                   "ls_db_bytes": db_bytes(ls), "prediction_rows": sum(client.model_versions(pid).values()),
                   "cv_accuracy": st["versions"][-1].get("cv_accuracy"), "views": len(client.list_views(pid)),
                   "took_over": bool((st.get("last_push") or {}).get("took_over"))}
            rounds.append(row)
            print(json.dumps(row), flush=True)
        return {"machine": describe(), "processor": cpu_model(), "tasks": n,
                "settings": {k: v for k, v in vars(args).items() if k != "json"}, "rounds": rounds}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tasks", type=int, default=1348, help="at most the 1,348 digits of the training split")
    p.add_argument("--initial", type=int, default=50)
    p.add_argument("--rounds", type=int, default=150)
    p.add_argument("--per-round", type=int, default=6, help="new labels a round (plus a correction and a deletion)")
    p.add_argument("--task-churn-every", type=int, default=5, help="every this many rounds: 2 tasks added, 2 deleted")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--warm-epochs", type=int, default=1)
    p.add_argument("--debounce", type=float, default=0.5)
    p.add_argument("--poll", type=float, default=20, help="POLL_INTERVAL_SECONDS")
    p.add_argument("--full-scan", type=float, default=120, help="RECONCILE_FULL_SCAN_SECONDS")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--head", type=int, default=100)
    p.add_argument("--keep", type=int, default=5, help="KEEP_VERSIONS")
    p.add_argument("--lease", type=float, default=3600, help="WRITER_LEASE_SECONDS (short: the poll renews often)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    with LabelStudioServer(Path(tempfile.mkdtemp()) / "ls") as ls:
        result = run(ls, a)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
