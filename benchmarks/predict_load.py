"""/predict latency and throughput under concurrent clients, idle and during a training.

The backend runs in a child process (uvicorn, the real app) over an in-memory task source of
scikit-learn digits encoded as data: URIs, so the numbers are the backend's own: request
parsing, image decoding for tasks the last training pass did not see, the model, JSON.

    python benchmarks/predict_load.py --requests 400 --json runs/predict_load.json
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from machine import describe

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIG = ('<View><Image name="image" value="$image"/><Choices name="choice" toName="image" choice="single">'
          + "".join(f'<Choice value="{i}"/>' for i in range(10)) + "</Choices></View>")


def digits_tasks(n_labeled: int = 200) -> list[dict]:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    tasks = []
    for i, img in enumerate(d.images):
        buf = io.BytesIO()
        Image.fromarray((img * 255 / 16).astype(np.uint8), mode="L").save(buf, format="PNG")
        anns = []
        if i < n_labeled:
            anns = [{"id": i, "result": [{"from_name": "choice", "to_name": "image", "type": "choices",
                                          "value": {"choices": [str(d.target[i])]}}]}]
        tasks.append({"id": i + 1, "data": {"image": "data:image/png;base64," + base64.b64encode(buf.getvalue())
                                            .decode()}, "annotations": anns})
    return tasks


class MemoryClient:
    """Just enough of the Label Studio client for training and a no-op push."""

    def __init__(self, tasks: list[dict]) -> None:
        self.tasks = tasks

    def iter_tasks(self, project_id, labeled=None, **kw):
        return iter([t for t in self.tasks if labeled is None or bool(t["annotations"]) == labeled])

    def labeled_tasks(self, project_id, updated_after=None):
        return self.iter_tasks(project_id, labeled=True)

    def labeled_count(self, project_id):
        return sum(1 for t in self.tasks if t["annotations"])

    def get_project(self, project_id):  # the counters the mirror's ingest and polls read
        return {"label_config": CONFIG, "task_number": len(self.tasks),
                "num_tasks_with_annotations": self.labeled_count(project_id),
                "total_annotations_number": self.labeled_count(project_id), "skipped_annotations_number": 0}

    def newest_task_id(self, project_id):
        return max(t["id"] for t in self.tasks)

    def last_saved(self, project_id):
        return None

    def delete_predictions(self, *a, **k): return 0
    def import_predictions(self, project_id, predictions, *a): return len(predictions)
    def set_model_version(self, *a): ...
    def model_versions(self, *a): return {}
    def ensure_view(self, *a): return 1
    def bulk_mark(self, *a, **k): return 0


def serve(port: int, model_dir: str, warm_epochs: int) -> None:
    import uvicorn

    from service.app import create_app
    from service.projects import ProjectManager
    from service.settings import Settings

    client = MemoryClient(digits_tasks())
    s = Settings(label_studio_url="http://127.0.0.1:1", label_studio_api_key="x", model_dir=model_dir,
                 sae_epochs=60, sae_warm_epochs=warm_epochs, poll_interval_seconds=3600, device="cpu")
    m = ProjectManager(s, client_factory=lambda url, key: client)
    uvicorn.run(create_app(s, manager=m), host="127.0.0.1", port=port, log_level="warning")


def run_load(url: str, tasks: list[dict], per_request: int, concurrency: int, requests: int) -> dict:
    rng = np.random.default_rng(0)
    bodies = []
    for _ in range(requests):
        pick = rng.choice(len(tasks), per_request, replace=False)
        bodies.append({"tasks": [{"id": 100_000 + int(i), "data": tasks[i]["data"]} for i in pick],
                       "project": "1.1"})
    client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=concurrency))

    def one(body: dict) -> float:
        t0 = time.perf_counter()
        r = client.post(f"{url}/predict", json=body)
        r.raise_for_status()
        assert len(r.json()["results"]) == len(body["tasks"])
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        lat = sorted(pool.map(one, bodies))
    wall = time.perf_counter() - t0
    return {"per_request": per_request, "concurrency": concurrency, "requests": requests,
            "p50_ms": round(1000 * statistics.median(lat), 1),
            "p99_ms": round(1000 * lat[int(0.99 * (len(lat) - 1))], 1),
            "requests_per_s": round(requests / wall, 1), "tasks_per_s": round(requests * per_request / wall, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    from connectors.label_studio_server import free_port

    port = free_port()
    model_dir = tempfile.mkdtemp()
    proc = mp.get_context("spawn").Process(target=serve, args=(port, model_dir, 100_000), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    httpx.post(f"{url}/setup", json={"project": "1.1", "schema": CONFIG})
    httpx.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    while httpx.get(f"{url}/projects/1/status").json()["model_version"] is None:
        time.sleep(0.5)
    tasks = digits_tasks(0)
    rows = []
    for phase in ("idle", "training"):
        if phase == "training":
            httpx.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
            while not httpx.get(f"{url}/projects/1/status").json()["progress"].get("stage", "").startswith("epoch"):
                time.sleep(0.2)
        for per_request, concurrency in ((1, 1), (1, 16), (100, 1), (100, 8)):
            n = a.requests if per_request == 1 else max(a.requests // 10, 20)
            row = {"phase": phase, **run_load(url, tasks, per_request, concurrency, n)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    proc.terminate()
    result = {"machine": describe(), "rows": rows}
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
