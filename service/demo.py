"""``sae-backend demo``: the live loop on this machine, end to end.

Starts a real Label Studio on loopback (own venv and data directory, known login) and the
backend next to it, creates two identical projects from a data set, connects the backend
to both, and lets two simulated annotators label through the Label Studio API: one takes
the tasks at the top of the "Most uncertain first" view, the other labels in random order.
Each round prints the labeled count, the model version and the error of the current
predictions on a fixed held-out fifth of the tasks that neither annotator ever labels, so
both are scored on the same items; both start from the same random first labels (the cold start
is off here so the two projects differ only in the order of later labels). Label Studio on
SQLite answers concurrent writes with transient 500s ("database is locked"); the demo's own
calls retry them with backoff.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from tqdm.auto import tqdm

from connectors.datasets import load_dataset
from connectors.label_studio import LabelStudioClient, retrying
from connectors.label_studio_server import LabelStudioServer, free_port, port_busy
from service.push import ORDERING, UNLABELED_FILTER


@dataclass
class DemoSettings:
    dataset: str = "digits"
    data_path: str | None = None
    rounds: int = 8
    per_round: int = 20
    tasks: int | None = None
    epochs: int | None = None
    warm_epochs: int | None = None
    out: Path = Path("runs/demo")
    exit: bool = False
    ls_port: int = 8080
    backend_port: int = 9090
    seed: int = 0


def _label_config(names: list[str]) -> str:
    choices = "".join(f'<Choice value="{n}"/>' for n in names)
    return (f'<View><Image name="image" value="$image"/><Choices name="choice" toName="image" '
            f'choice="single" showInline="true">{choices}</Choices></View>')


_ITEM_FILE = re.compile(r"item(\d{6})\.png$")


def tasks_of_items(client: LabelStudioClient, project_id: int, n: int) -> list[int]:
    """The task of each uploaded item, read from its file name (``item000042.png``): the order of the ids an
    import answers is no promise, and one item taken for another would score both annotators wrongly."""
    found: dict[int, int] = {}
    for task in client.iter_tasks(project_id, fields="task_only"):
        for value in (task.get("data") or {}).values():
            m = _ITEM_FILE.search(str(value))
            if m:
                found[int(m.group(1))] = int(task["id"])
    missing = [i for i in range(n) if i not in found]
    if missing:
        raise RuntimeError(f"project {project_id}: {len(missing)} uploaded items have no task "
                           f"(first: item {missing[0]})")
    return [found[i] for i in range(n)]


def _pngs(x: np.ndarray, upscale: int) -> list[tuple[str, bytes]]:
    from PIL import Image

    files = []
    for i, img in enumerate(x):
        arr = (np.clip(img[0], 0, 1) * 255).astype(np.uint8)
        pil = Image.fromarray(arr, mode="L")
        if upscale > 1:
            pil = pil.resize((arr.shape[1] * upscale, arr.shape[0] * upscale), Image.NEAREST)
        buf = io.BytesIO()
        pil.save(buf, format="PNG")
        files.append((f"item{i:06d}.png", buf.getvalue()))
    return files


class _Backend:
    def __init__(self, app: object, port: int) -> None:
        import uvicorn

        self.port = port
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> _Backend:
        self.thread.start()
        for _ in range(300):
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the backend did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


def _port(preferred: int) -> int:
    return preferred if not port_busy(preferred) else free_port()

# Label Studio's transient failures (SQLite's "database is locked" 500s) are retried at most this often.
RETRIES = 8


def run_demo(s: DemoSettings, log: Callable[[str], None] = print) -> dict:
    from service.app import create_app
    from service.plots import learning_curve_png
    from service.settings import Settings

    ds = load_dataset(s.dataset, s.data_path)
    rng = np.random.default_rng(s.seed)
    n = min(s.tasks or (len(ds.x_train) if s.dataset == "digits" else 2000), len(ds.x_train))
    pick = np.sort(rng.choice(len(ds.x_train), n, replace=False))
    x, truth_all = ds.x_train[pick], ds.y_train[pick]
    small = x.shape[-1] < 16
    epochs = s.epochs or (60 if small else 15)
    warm = s.warm_epochs or (20 if small else 5)
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)

    ls = LabelStudioServer(out / "label-studio-data", port=_port(s.ls_port))
    log(f"starting Label Studio on {ls.url} (first start runs migrations: ~30 s)")
    ls.start()
    settings = Settings(label_studio_url=ls.url, label_studio_api_key=ls.token, model_dir=out / "models",
                        retrain_min_new_labels=s.per_round, retrain_debounce_seconds=2.0,
                        poll_interval_seconds=30, push_top_k=max(s.per_round, 20), sae_epochs=epochs,
                        sae_warm_epochs=warm, image_size=x.shape[-1], cold_start="none")
    backend = _Backend(create_app(settings), _port(s.backend_port)).start()
    log(f"backend on {backend.url}")
    client = LabelStudioClient(ls.url, ls.token)
    files = _pngs(x, upscale=8 if small else 2)
    config = _label_config(ds.class_names)
    projects: dict[str, dict] = {}
    stamp = time.strftime("%H:%M")
    for strategy, title in (("margin", "uncertainty order"), ("random", "random order")):
        pid = client.create_project(f"{s.dataset} {title} {stamp}", config)
        for c in tqdm(range(0, len(files), 100), desc=f"upload to '{title}'", unit="x100"):
            client.upload_files(pid, files[c:c + 100])
        ids = tasks_of_items(client, pid, len(files))
        ml = client.connect_ml_backend(pid, backend.url)
        projects[strategy] = {"id": pid, "ml": ml, "truth": dict(zip(ids, truth_all.tolist(), strict=True)),
                              "labeled": set(), "curve": [], "version": None}
    held_out = set(rng.choice(n, max(n // 5, 1), replace=False).tolist())
    first = rng.choice([i for i in range(n) if i not in held_out], s.per_round, replace=False)
    for p in projects.values():
        order = list(p["truth"])
        p["held_out"] = {order[i] for i in held_out}
    result_rows = []
    try:
        for r in range(s.rounds + 1):
            for strategy, p in projects.items():
                if r == 0:
                    ids = [list(p["truth"])[i] for i in first]
                elif strategy == "margin":
                    view = retrying(RETRIES, 0.25, 5)(client.ordered_task_ids, p["id"], UNLABELED_FILTER,
                                                      ORDERING, s.per_round + len(p["held_out"]))
                    ids = [t for t in view if t not in p["held_out"]][: s.per_round]
                else:
                    pool = [t for t in p["truth"] if t not in p["labeled"] and t not in p["held_out"]]
                    ids = [pool[i] for i in rng.choice(len(pool), min(s.per_round, len(pool)), replace=False)]
                for tid in ids:
                    retrying(RETRIES, 0.25, 5)(client.create_annotation, tid, [{
                        "from_name": "choice", "to_name": "image", "type": "choices",
                        "value": {"choices": [ds.class_names[p["truth"][tid]]]}}])
                p["labeled"].update(ids)
            for strategy, p in projects.items():
                status = _wait_for_version(backend, client, p, len(p["labeled"]))
                err = _held_out_error(backend, p, ds.class_names)
                secs = next((v["train_seconds"] for v in status["versions"]
                             if v["model_version"] == status["model_version"]), None)
                p["curve"].append({"labeled": len(p["labeled"]), "test_error": round(err, 5),
                                   "train_seconds": secs})
                log(f"round {r}: {strategy:>6} annotator, {len(p['labeled'])} labeled, "
                    f"{status['model_version']}, error on the {len(p['held_out'])} held-out tasks {100 * err:.1f} %")
        result_rows = [{"model": "sae", "strategy": k, "seed": s.seed, "curve": p["curve"]}
                       for k, p in projects.items()]
        result = {"settings": {"dataset": s.dataset, "tasks": n, "held_out": len(held_out), "rounds": s.rounds,
                               "per_round": s.per_round,
                               "epochs": epochs, "warm_epochs": warm, "class_names": ds.class_names,
                               "label_studio": ls.url, "backend": backend.url},
                  "runs": result_rows}
        (out / "curve.json").write_text(json.dumps(result, indent=1))
        (out / "curve.png").write_bytes(learning_curve_png(result_rows, title=f"{s.dataset}: live loop"))
        latent = httpx.get(f"{backend.url}/projects/{projects['margin']['id']}/latent.png", timeout=60)
        if latent.status_code == 200:
            (out / "latent.png").write_bytes(latent.content)
        log(f"wrote {out / 'curve.json'}, {out / 'curve.png'} and {out / 'latent.png'}")
        log(f"Label Studio: {ls.url}  login {ls.username} / {ls.password}")
        for k, p in projects.items():
            log(f"  project '{k}': {ls.url}/projects/{p['id']}/data  (view 'Most uncertain first')")
        if not s.exit:
            log("left running; press Ctrl-C to stop Label Studio and the backend")
            while True:
                time.sleep(3600)
        return result
    except KeyboardInterrupt:
        return {"runs": result_rows}
    finally:
        backend.stop()
        ls.stop()


def _wait_for_version(backend: _Backend, client: LabelStudioClient, p: dict, labeled: int,
                      timeout: float = 900) -> dict:
    """Until the backend serves (and has pushed) a version trained on ``labeled`` labels."""
    deadline = time.monotonic() + timeout
    nudged = False
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        st = httpx.get(f"{backend.url}/projects/{p['id']}/status", timeout=30).json()
        if st["training"]:
            quiet_since = time.monotonic()
        elif st["model_version"] and st["version_labeled"] == labeled and not st["push_pending"]:
            p["version"] = st["model_version"]
            return st
        elif not nudged and time.monotonic() - quiet_since > 20:
            retrying(RETRIES, 0.25, 5)(client.train, p["ml"])
            nudged = True
        time.sleep(0.5)
    raise RuntimeError(f"no version with {labeled} labels within {timeout:.0f} s")


def _held_out_error(backend: _Backend, p: dict, class_names: list[str]) -> float:
    """Error of the served version on the held-out tasks, asked the way Label Studio asks: ``/predict``."""
    ids = sorted(p["held_out"])
    body = {"tasks": [{"id": t, "data": {}} for t in ids], "project": str(p["id"])}
    results = httpx.post(f"{backend.url}/predict", json=body, timeout=120).json()["results"]
    wrong = 0
    for tid, r in zip(ids, results, strict=True):
        chosen = r["result"][0]["value"]["choices"][0] if r.get("result") else None
        wrong += chosen != class_names[p["truth"][tid]]
    return wrong / max(len(ids), 1)
