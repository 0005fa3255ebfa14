"""Time from the last annotation of a round to the new head in Label Studio, and what a version costs it.

Starts a real Label Studio (own venv, SQLite) and ``sae-backend serve`` as a separate
process, uploads N images (Fashion-MNIST when installed, else digits, tiled), labels an
initial round (the first version includes the one-time ingest, timed separately), then
labels ``--rounds`` more rounds of ``--per-round`` and, for each, measures until the new
version's head, view and marks are in Label Studio (the status route reports the push
done). Per version it records the prediction rows written and deleted, the growth of
Label Studio's SQLite file and of its prediction table, and the backend's peak memory.

    python benchmarks/loop_latency.py --tasks 10000 60000 --warm-steps 150 --json runs/loop.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import describe

from connectors.datasets import load_dataset
from connectors.label_studio import LabelStudioClient
from connectors.label_studio_server import LabelStudioServer, free_port


def pngs(x: np.ndarray) -> list[tuple[str, bytes]]:
    from PIL import Image

    out = []
    for i, img in enumerate(x):
        buf = io.BytesIO()
        Image.fromarray((img[0] * 255).astype(np.uint8), mode="L").save(buf, format="PNG")
        out.append((f"img{i:06d}.png", buf.getvalue()))
    return out


def peak_rss_mb(pid: int) -> float | None:
    """The backend process's peak resident memory (Linux ``VmHWM``), or None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def db_bytes(ls: LabelStudioServer) -> int:
    return sum(p.stat().st_size for p in ls.data_dir.glob("label_studio.sqlite3*"))


def serve(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """``sae-backend serve`` in its own process on a free loopback port, once it answers ``/health``."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--log-level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the backend exited with {proc.returncode} before answering /health")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)


def wait_version(url: str, pid: int, labeled: int, timeout: float = 7200) -> dict:
    """Until a version trained on ``labeled`` labels is served and pushed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = httpx.get(f"{url}/projects/{pid}/status", timeout=60).json()
        if st["model_version"] and st["version_labeled"] == labeled and not st["training"] \
                and not st["push_pending"]:
            return st
        time.sleep(0.2)
    raise TimeoutError(f"no pushed version with {labeled} labels")


def measure(ls: LabelStudioServer, n: int, args: argparse.Namespace) -> dict:
    ds = load_dataset(args.dataset, args.data_path)
    reps = int(np.ceil(n / len(ds.x_train)))
    x = np.concatenate([ds.x_train] * reps)[:n]
    y = np.concatenate([ds.y_train] * reps)[:n]
    client = LabelStudioClient(ls.url, ls.token, timeout=300)
    config = ('<View><Image name="image" value="$image"/><Choices name="choice" toName="image" choice="single">'
              + "".join(f'<Choice value="{c}"/>' for c in ds.class_names) + "</Choices></View>")
    pid = client.create_project(f"latency {n}", config)
    t0 = time.perf_counter()
    ids = client.upload_files(pid, pngs(x))
    upload_s = time.perf_counter() - t0
    env = dict(os.environ, LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=ls.token,
               MODEL_DIR=tempfile.mkdtemp(), SAE_EPOCHS=str(args.epochs), SAE_WARM_EPOCHS=str(args.warm_epochs),
               RETRAIN_MIN_NEW_LABELS=str(args.per_round), RETRAIN_DEBOUNCE_SECONDS=str(args.debounce),
               POLL_INTERVAL_SECONDS="3600", PUSH_TOP_K=str(args.top_k), PUSH_HEAD=str(args.head),
               DEVICE=args.device, SAE_CHANNELS=args.channels)
    if args.warm_steps:
        env["SAE_WARM_STEPS"] = str(args.warm_steps)
    proc, url = serve(env)
    try:
        client.connect_ml_backend(pid, url)
        order = np.random.default_rng(0).permutation(len(ids))
        names = ds.class_names

        def annotate(sel: np.ndarray) -> None:
            for i in sel:
                client.create_annotation(ids[i], [{"from_name": "choice", "to_name": "image", "type": "choices",
                                                   "value": {"choices": [names[y[i]]]}}])

        annotate(order[: args.initial])
        t0 = time.perf_counter()
        first = wait_version(url, pid, args.initial)
        first_s = time.perf_counter() - t0
        v1 = first["versions"][-1]
        rounds = []
        labeled = args.initial
        for r in range(args.rounds):
            db0, rows0 = db_bytes(ls), sum(client.model_versions(pid).values())
            annotate(order[labeled: labeled + args.per_round])
            labeled += args.per_round
            t0, wall0 = time.perf_counter(), time.time()
            st = wait_version(url, pid, labeled)
            loop_s = time.perf_counter() - t0
            v = next(v for v in st["versions"] if v["model_version"] == st["model_version"])
            push = st.get("last_push") or {}
            rounds.append({
                "round": r + 1, "labeled": labeled, "annotation_to_head_s": round(loop_s, 1),
                "annotation_to_view_s": round(push["head_visible_at"] - wall0, 1)
                if push.get("head_visible_at") else None,
                "reading_changes_s": v.get("read_seconds"), "training_s": v["train_seconds"],
                "scoring_s": st.get("scoring_seconds"),
                "push_s": push.get("total_seconds"), "push_until_view_s": push.get("seconds_until_view"),
                "push_steps_s": push.get("seconds"),
                "rows_written": push.get("rows_written"), "rows_deleted": push.get("rows_deleted"),
                "marks_written": push.get("marks_written"),
                "prediction_rows_after": sum(client.model_versions(pid).values()),
                "prediction_rows_growth": sum(client.model_versions(pid).values()) - rows0,
                "db_growth_bytes": db_bytes(ls) - db0, "cv_accuracy": v.get("cv_accuracy")})
            print(json.dumps(rounds[-1]), flush=True)
        row = {"tasks": n, "dataset": ds.name, "upload_s": round(upload_s, 1), "first_version_s": round(first_s, 1),
               "of_which_ingest_s": v1.get("read_seconds"), "first_train_s": v1["train_seconds"],
               "rounds": rounds, "annotation_to_head_s_median": float(np.median([r["annotation_to_head_s"]
                                                                               for r in rounds])),
               "annotation_to_view_s_median": float(np.median([r["annotation_to_view_s"] or np.nan
                                                               for r in rounds])),
               "epochs": args.epochs, "warm_epochs": args.warm_epochs, "warm_steps": args.warm_steps,
               "channels": args.channels, "head": args.head,
               "top_k": args.top_k, "per_round": args.per_round, "debounce_s": args.debounce,
               "device": args.device, "backend_peak_rss_mb": peak_rss_mb(proc.pid)}
        print(json.dumps({k: v for k, v in row.items() if k != "rounds"}), flush=True)
        return row
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tasks", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (28x28 PNGs) or digits (8x8)")
    p.add_argument("--data-path", default=None)
    p.add_argument("--initial", type=int, default=100)
    p.add_argument("--per-round", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--warm-epochs", type=int, default=1)
    p.add_argument("--warm-steps", type=int, default=None, help="SAE_WARM_STEPS (default: full passes)")
    p.add_argument("--channels", default="16,32,64", help="SAE_CHANNELS")
    p.add_argument("--head", type=int, default=500)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--debounce", type=float, default=1.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--label-studio-env", action="append", default=[], metavar="KEY=VALUE",
                   help="an environment variable for Label Studio (e.g. one of its feature flags); repeatable")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    ls_env = dict(kv.split("=", 1) for kv in a.label_studio_env)
    with LabelStudioServer(Path(tempfile.mkdtemp()) / "ls", env=ls_env) as ls:
        rows = [measure(ls, n, a) for n in a.tasks]
    result = {"machine": describe(),
              "label_studio_env": ls_env, "rows": rows}
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
