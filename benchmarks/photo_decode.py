"""Decoding photos for the mirror: JPEGs of 2-12 megapixels, with and without reduced-scale decoding.

Generates ``--count`` photos (random sizes from 2 to 12 MP, landscape and portrait, smooth
content with noise so they compress like photos), then decodes each one both ways, one after
the other, into the stored form (``--size`` square, RGB): so a busy machine slows both arms
alike. Writes photos/s of each arm, the speed-up, and how far the two pictures differ.

    python benchmarks/photo_decode.py --count 200 --out benchmarks/results/photo-decode-cpu.json
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import describe

from connectors.task_data import decode_image


def photo(rng: np.random.Generator) -> bytes:
    from PIL import Image

    mp = rng.uniform(2.0, 12.0) * 1e6
    aspect = rng.choice([4 / 3, 3 / 2, 16 / 9, 3 / 4, 2 / 3])
    w = int(np.sqrt(mp * aspect))
    h = int(mp / w)
    small = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    arr = np.asarray(small, dtype=np.int16) + rng.integers(-12, 12, (h, w, 1), dtype=np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    seconds = {"reduced": 0.0, "full": 0.0}
    megapixels, diffs, nbytes = [], [], 0
    for _ in range(a.count):
        data = photo(rng)
        nbytes += len(data)
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            megapixels.append(im.size[0] * im.size[1] / 1e6)
        out = {}
        for arm in ("reduced", "full"):
            t0 = time.perf_counter()
            out[arm] = decode_image(data, "RGB", a.size, reduced=arm == "reduced")
            seconds[arm] += time.perf_counter() - t0
        diffs.append(float(np.abs(out["reduced"] - out["full"]).mean()))
    result = {
        "machine": describe(),
        "count": a.count, "size": a.size, "megapixels_min": round(min(megapixels), 2),
        "megapixels_max": round(max(megapixels), 2), "megapixels_mean": round(float(np.mean(megapixels)), 2),
        "jpeg_mb_mean": round(nbytes / a.count / 1e6, 3),
        "photos_per_s_reduced": round(a.count / seconds["reduced"], 2),
        "photos_per_s_full": round(a.count / seconds["full"], 2),
        "speedup": round(seconds["full"] / seconds["reduced"], 2),
        "mean_abs_pixel_difference": round(float(np.mean(diffs)), 5),
    }
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
