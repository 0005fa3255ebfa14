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

from connectors.task_data import DataFetcher


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

    def load(self, fetcher: DataFetcher, value: Any) -> np.ndarray:
        """Fetch and decode one task's data (raises ``TaskDataError`` with a reason)."""
        return self.to_stored(fetcher.load_item(value, self.kind, self.mode, self.size))


def pick_image_format(raw: bytes, size: int | None) -> tuple[str, int]:
    """Grey or colour, and the square side every image of the project is resized to (from its first image)."""
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as img:
        rgb = img.convert("RGB")
        arr = np.asarray(rgb)
        grey = bool(np.all(arr[..., 0] == arr[..., 1]) and np.all(arr[..., 1] == arr[..., 2]))
        side = size or max(img.size)
    return ("L" if grey else "RGB"), int(min(max(side, 8), 128))
