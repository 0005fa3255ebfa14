"""One codec per project turns a task's data into the array the mirror stores and the model reads.

Training (through the mirror) and ``/predict`` both go through it, so an item is decoded
the same way on either path. Images are stored as uint8 ``(C, H, W)``: a million 28x28
items are 0.8 GB on disk instead of 3 GB as float32, and the model scales them by 1/255
batch by batch. Vectors stay float32.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from connectors.task_data import MAX_PIXELS, DataFetcher, TaskDataError


@dataclass(frozen=True)
class ItemCodec:
    """``kind`` is the label config's (``image`` or ``vector``); ``mode``/``size`` fix every image's form."""

    kind: str
    mode: str = "L"
    size: int | None = None

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.kind == "image" else np.dtype(np.float32)

    def to_stored(self, item: np.ndarray) -> np.ndarray:
        """A decoded float item in the stored form."""
        if self.kind == "image":
            return np.rint(np.clip(item, 0.0, 1.0) * 255.0).astype(np.uint8)
        return np.asarray(item, dtype=np.float32)

    def load(self, fetcher: DataFetcher, value: Any, task_id: int | None = None) -> np.ndarray:
        """Fetch and decode one task's data (raises ``TaskDataError`` with a reason); the id resolves cloud URIs."""
        return self.to_stored(fetcher.load_item(value, self.kind, self.mode, self.size, task_id))


def pick_image_format(raws: bytes | list[bytes], size: int | None) -> tuple[str, int]:
    """Grey or colour, and the square side every image of the project is resized to.

    Decided once per project from a sample of its first images: colour as soon as one of
    them has colour (a grey first photo must not make every later photo grey), and the
    side of the largest (``size`` when set), kept within 8..128. Every image is then
    squashed to that square: the aspect ratio is not kept, which a small conv net
    tolerates better than padding that differs between items.
    """
    from PIL import Image

    grey, side = True, 0
    for raw in [raws] if isinstance(raws, (bytes, bytearray)) else raws:
        with Image.open(io.BytesIO(raw)) as img:
            if img.size[0] * img.size[1] > MAX_PIXELS:  # before any decoding, as decode_image checks
                raise TaskDataError(f"image of {img.size[0]}x{img.size[1]} pixels exceeds the {MAX_PIXELS}-pixel limit")
            side = max(side, *img.size)
            if img.mode not in ("L", "1", "I", "I;16", "F"):
                img.draft("RGB", (64, 64))
                arr = np.asarray(img.convert("RGB"), dtype=np.int16)
                grey = grey and bool(np.abs(arr - arr[..., :1]).max() <= 2)
    return ("L" if grey else "RGB"), int(min(max(size or side, 8), 128))
