"""IDX files written in the tests, as Fashion-MNIST's Debian package ships them (plain or gzipped)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr)
    dtype = arr.dtype if arr.dtype.itemsize == 1 else arr.dtype.newbyteorder(">")
    header = bytes([0, 0, IDX_CODES[dtype], arr.ndim]) + b"".join(struct.pack(">I", n) for n in arr.shape)
    return header + arr.astype(dtype).tobytes()


def write_idx(path: Path, arr: np.ndarray) -> Path:
    """Gzip the file when its name ends in ``.gz``, as the loader expects."""
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path
