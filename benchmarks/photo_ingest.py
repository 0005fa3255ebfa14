"""Ingesting photos into a project mirror: 10k JPEGs of 2-12 megapixels, with and without reduced decoding.

The mirror's own path (``ProjectMirror.add_tasks``: fetch over HTTP with its thread pool,
decode, resize, store as uint8) on tasks whose image URLs point at a local HTTP server on
loopback (an allowed host). ``--distinct`` photos are generated once (``--photos`` caches them)
and the ``--count`` tasks cycle through them, so every arm decodes the same photos in the same
order; the tasks arrive in batches of ``--batch`` as ``TASKS_CREATED`` webhooks bring them.
Each arm runs in its own process (``--arm``) so its peak memory is its own; ``full`` makes the
decoder read every photo at full resolution (what the mirror did before reduced decoding).

    python benchmarks/photo_ingest.py --count 10000 --distinct 300 --arm reduced --out ingest-reduced.json
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe
from photo_decode import photo

import connectors.task_data as task_data
from connectors.label_config import parse_label_config
from service.mirror import ProjectMirror

CONFIG = ('<View><Image name="image" value="$image"/><Choices name="label" toName="image">'
          '<Choice value="a"/><Choice value="b"/></Choices></View>')


def make_photos(folder: Path, distinct: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo-{i:05d}.jpg" for i in range(distinct)]
    rng = np.random.default_rng(seed)
    for path in paths:
        data = photo(rng)  # drawn even for cached files, so the set does not depend on what is cached
        if not path.exists():
            path.write_bytes(data)
    return paths


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--distinct", type=int, default=1000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--arm", choices=["reduced", "full"], required=True)
    p.add_argument("--photos", default=None, help="folder caching the generated photos (default: a temp folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    from PIL import Image

    folder = Path(a.photos) if a.photos else Path(tempfile.mkdtemp(prefix="photos-"))
    paths = make_photos(folder, a.distinct, a.seed)
    pixels = []
    for path in paths:
        with Image.open(path) as im:
            pixels.append(im.size[0] * im.size[1] / 1e6)
    if a.arm == "full":
        task_data.decode_image = functools.partial(task_data.decode_image, reduced=False)
    server, port = serve(folder)
    fetcher = task_data.DataFetcher("http://127.0.0.1:1", None, [f"127.0.0.1:{port}"])
    config = parse_label_config(CONFIG)
    with tempfile.TemporaryDirectory(prefix="mirror-") as tmp:
        mirror = ProjectMirror(Path(tmp), 1)
        tasks = [{"id": i + 1, "data": {"image": f"http://127.0.0.1:{port}/{paths[i % len(paths)].name}"}}
                 for i in range(a.count)]
        t0 = time.perf_counter()
        for start in range(0, a.count, a.batch):
            mirror.add_tasks(tasks[start:start + a.batch], config, fetcher)
        seconds = time.perf_counter() - t0
        stored = len(mirror.store.ids())
        shape = list(mirror.store.item_shape or [])
        mb = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / 2**20
    server.shutdown()
    cycled = [pixels[i % len(pixels)] for i in range(a.count)]
    out = {
        "benchmark": "photo_ingest", "arm": a.arm, "count": a.count, "distinct": a.distinct, "batch": a.batch,
        "stored": stored, "skipped": a.count - stored, "item_shape": shape,
        "megapixels_min": round(min(pixels), 2), "megapixels_max": round(max(pixels), 2),
        "megapixels_mean": round(float(np.mean(cycled)), 2),
        "jpeg_mb_mean": round(float(np.mean([paths[i % len(paths)].stat().st_size for i in range(a.count)])) / 1e6, 3),
        "seconds": round(seconds, 2), "photos_per_s": round(a.count / seconds, 2),
        "store_mb": round(mb, 1), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": describe(),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
