"""One codec per project turns a task's data into the array the mirror stores and the model reads.

Training (through the mirror) and ``/predict`` both go through it, so an item is decoded
the same way on either path. Images are stored as uint8 ``(C, H, W)``: a million 28x28
items are 0.8 GB on disk instead of 3 GB as float32, and the model scales them by 1/255
batch by batch. Vectors stay float32.

Each kind of task data is one :class:`ItemKind` in :data:`KINDS`: the label-config tags it reads,
how a task's value becomes an array, and how that array is stored. The label config looks its
object tag up here, so a new kind is one class in this file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from connectors.task_data import MAX_PIXELS, DataFetcher, TaskDataError, decode_image, decode_vector


class ItemKind:
    """A kind of task data: which object tags hold it, how one task's value is read, how it is stored."""

    name: ClassVar[str]
    what: ClassVar[str] = "data"  # how an error message names it: "an image", "a list of numbers"
    tags: ClassVar[frozenset[str]] = frozenset()  # lower-case label-config tag names; the fallback kind has none
    dtype: ClassVar[np.dtype] = np.dtype(np.float32)

    def read(self, fetcher: DataFetcher, value: Any, form: ItemCodec, task_id: int | None) -> np.ndarray:
        """One task's value as a float array in the project's ``form``; raises ``TaskDataError`` with a reason the
        team can act on."""
        raise NotImplementedError

    def to_stored(self, item: np.ndarray) -> np.ndarray:
        return np.asarray(item, dtype=self.dtype)


class ImageKind(ItemKind):
    """``<Image value="$key">``: a URL, a /data/... path or a data: URI, decoded to ``(C, H, W)`` in [0, 1]."""

    name, what, tags, dtype = "image", "an image", frozenset({"image"}), np.dtype(np.uint8)

    def read(self, fetcher: DataFetcher, value: Any, form: ItemCodec, task_id: int | None) -> np.ndarray:
        if not isinstance(value, str) or not value.strip():
            raise TaskDataError(f"image data must be a URL, a /data/... path or a data: URI, not "
                                f"{type(value).__name__}")
        return decode_image(fetcher.fetch_bytes(value.strip(), task_id), form.mode, form.size, bits=form.bits)

    def to_stored(self, item: np.ndarray) -> np.ndarray:
        return np.rint(np.clip(item, 0.0, 1.0) * 255.0).astype(np.uint8)


class VectorKind(ItemKind):
    """Any other object tag with ``value="$key"`` (``<Text>``, ``<HyperText>``...): a list of numbers."""

    name, what, tags, dtype = "vector", "a list of numbers", frozenset(), np.dtype(np.float32)

    def read(self, fetcher: DataFetcher, value: Any, form: ItemCodec, task_id: int | None) -> np.ndarray:
        return decode_vector(value)


KINDS: dict[str, ItemKind] = {k.name: k for k in (ImageKind(), VectorKind())}
FALLBACK_KIND = "vector"  # what an object tag no kind names holds


def kind_of_tag(tag: str) -> str | None:
    """The kind that reads an object tag (lower case), or None when no kind names it."""
    return next((k.name for k in KINDS.values() if tag in k.tags), None)


@dataclass(frozen=True)
class ItemCodec:
    """``kind`` is the label config's (a key of :data:`KINDS`); ``mode``/``size`` fix every image's form, ``bits``
    the depth greyscale images deeper than 8 bits really use (None: their file's own, 16)."""

    kind: str
    mode: str = "L"
    size: int | None = None
    bits: int | None = None

    @property
    def _kind(self) -> ItemKind:
        if self.kind not in KINDS:
            raise TaskDataError(f"unknown data kind {self.kind!r} (expected one of {', '.join(KINDS)})")
        return KINDS[self.kind]

    @property
    def dtype(self) -> np.dtype:
        return self._kind.dtype

    def to_stored(self, item: np.ndarray) -> np.ndarray:
        """A decoded float item in the stored form."""
        return self._kind.to_stored(item)

    def load(self, fetcher: DataFetcher, value: Any, task_id: int | None = None) -> np.ndarray:
        """Fetch and decode one task's data (raises ``TaskDataError`` with a reason); the id resolves cloud URIs."""
        return self.to_stored(self._kind.read(fetcher, value, self, task_id))


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
        try:
            with Image.open(io.BytesIO(raw)) as img:
                if img.size[0] * img.size[1] > MAX_PIXELS:  # before any decoding, as decode_image checks
                    raise TaskDataError(f"image of {img.size[0]}x{img.size[1]} pixels exceeds the "
                                        f"{MAX_PIXELS}-pixel limit")
                side = max(side, *img.size)
                if img.mode not in ("L", "1", "I", "I;16", "F"):
                    img.draft("RGB", (64, 64))
                    arr = np.asarray(img.convert("RGB"), dtype=np.int16)
                    grey = grey and bool(np.abs(arr - arr[..., :1]).max() <= 2)
        except TaskDataError:
            raise
        except Image.DecompressionBombError:  # Pillow's own guard, raised by open above its limit
            raise TaskDataError("image has too many pixels (decompression bomb guard)") from None
        except Exception as e:
            raise TaskDataError(f"not a readable image ({type(e).__name__}: {str(e)[:200]})") from None
    return ("L" if grey else "RGB"), int(min(max(size or side, 8), 128))
