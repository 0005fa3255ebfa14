"""Time from the last annotation of a round to the new ranking written to Label Studio.

Starts a real Label Studio (own venv) and ``sae-backend serve`` as a separate process,
uploads N images (Fashion-MNIST when installed, else digits), labels an initial round,
then labels one more round and measures until the new version's predictions, view and
marks are in Label Studio (the status route reports the push done).

    python benchmarks/loop_latency.py --tasks 1000 10000 --json runs/loop_latency.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.datasets import DatasetError, load_dataset
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


def wait_status(url: str, pid: int, labeled: int, timeout: float = 3600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = httpx.get(f"{url}/projects/{pid}/status", timeout=30).json()
        if st["model_version"] and st["labeled"] == labeled and not st["training"] and not st["push_pending"]:
            return st
        time.sleep(0.2)
    raise TimeoutError(f"no pushed version with {labeled} labels")


def measure(ls: LabelStudioServer, n: int, data_path: str | None, args: argparse.Namespace) -> dict:
    try:
        ds = load_dataset("fashion-mnist", data_path)
    except DatasetError:
        ds = load_dataset("digits")
    reps = int(np.ceil(n / len(ds.x_train)))
    x = np.concatenate([ds.x_train] * reps)[:n]
    y = np.concatenate([ds.y_train] * reps)[:n]
    client = LabelStudioClient(ls.url, ls.token)
    config = ('<View><Image name="image" value="$image"/><Choices name="choice" toName="image" choice="single">'
              + "".join(f'<Choice value="{c}"/>' for c in ds.class_names) + "</Choices></View>")
    pid = client.create_project(f"latency {n}", config)
    t0 = time.perf_counter()
    ids = client.upload_files(pid, pngs(x))
    upload_s = time.perf_counter() - t0
    port = free_port()
    env = dict(os.environ, LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=ls.token,
               MODEL_DIR=tempfile.mkdtemp(), SAE_EPOCHS=str(args.epochs), SAE_WARM_EPOCHS=str(args.warm_epochs),
               RETRAIN_MIN_NEW_LABELS=str(args.per_round), RETRAIN_DEBOUNCE_SECONDS=str(args.debounce),
               POLL_INTERVAL_SECONDS="3600", PUSH_TOP_K="50", DEVICE=args.device)
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--log-level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        client.connect_ml_backend(pid, url)
        rng = np.random.default_rng(0)
        order = rng.permutation(len(ids))
        names = ds.class_names

        def annotate(sel: np.ndarray) -> None:
            for i in sel:
                client.create_annotation(ids[i], [{"from_name": "choice", "to_name": "image", "type": "choices",
                                                   "value": {"choices": [names[y[i]]]}}])

        annotate(order[: args.initial])
        t0 = time.perf_counter()
        first = wait_status(url, pid, args.initial)
        first_s = time.perf_counter() - t0
        annotate(order[args.initial: args.initial + args.per_round])
        t0 = time.perf_counter()
        second = wait_status(url, pid, args.initial + args.per_round)
        loop_s = time.perf_counter() - t0
        v2 = next(v for v in second["versions"] if v["model_version"] == second["model_version"])
        push = second.get("last_push") or {}
        row = {"tasks": n, "upload_s": round(upload_s, 1), "first_version_s": round(first_s, 1),
               "first_train_s": first["versions"][-1]["train_seconds"], "annotation_to_ranking_s": round(loop_s, 1),
               "of_which_reading_tasks_s": v2.get("load_seconds"), "of_which_training_s": v2["train_seconds"],
               "of_which_push_s": push.get("total_seconds"), "push_steps_s": push.get("seconds"),
               "epochs": args.epochs, "warm_epochs": args.warm_epochs,
               "debounce_s": args.debounce, "device": args.device, "backend_peak_rss_mb": peak_rss_mb(proc.pid)}
        print(json.dumps(row), flush=True)
        return row
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tasks", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--data-path", default=None)
    p.add_argument("--initial", type=int, default=100)
    p.add_argument("--per-round", type=int, default=50)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--warm-epochs", type=int, default=3)
    p.add_argument("--debounce", type=float, default=1.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    with LabelStudioServer(Path(tempfile.mkdtemp()) / "ls") as ls:
        rows = [measure(ls, n, a.data_path, a) for n in a.tasks]
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "rows": rows}
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
