"""The on-disk pool: what an append, a replace or a delete leaves must survive a reopen or a crash."""

from __future__ import annotations

import gc
import os
import threading

import numpy as np
import pytest

from service.pool_store import PoolStore


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def _file_sizes(directory) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(directory.iterdir())}


def test_uint8_images_round_trip(tmp_path) -> None:
    store = PoolStore(tmp_path)
    assert store.item_shape is None and store.dtype is None and len(store) == 0
    x = _images(50)
    ids = np.arange(1000, 1050)
    store.append(ids[:20], x[:20])
    store.append(ids[20:], x[20:])
    assert store.item_shape == (28, 28) and store.dtype == np.uint8 and len(store) == 50
    np.testing.assert_array_equal(store.ids(), ids)
    np.testing.assert_array_equal(store.get([1049, 1000, 1007]), x[[49, 0, 7]])
    mapped = store.items()
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    np.testing.assert_array_equal(mapped, x)
    assert 1000 in store and 999 not in store


def test_float32_vectors_round_trip(tmp_path) -> None:
    store = PoolStore(tmp_path)
    v = np.random.default_rng(1).standard_normal((30, 64)).astype(np.float32)
    store.append(list(range(30)), v)
    assert store.item_shape == (64,) and store.dtype == np.float32
    np.testing.assert_array_equal(store.get(np.arange(29, -1, -1)), v[::-1])
    got_ids, rows = store.live()
    np.testing.assert_array_equal(store.items(rows), v[got_ids])


def test_replacing_an_id_returns_the_new_item_and_keeps_len(tmp_path) -> None:
    store = PoolStore(tmp_path)
    x = _images(10)
    store.append(np.arange(10), x)
    new = np.full((2, 28, 28), 7, dtype=np.uint8)
    store.append([3, 8], new)
    assert len(store) == 10
    np.testing.assert_array_equal(store.get([3, 8, 4]), np.stack([new[0], new[1], x[4]]))
    np.testing.assert_array_equal(store.ids(), [0, 1, 2, 4, 5, 6, 7, 9, 3, 8])
    store.append([5, 5], np.stack([x[0], x[1]]))
    assert len(store) == 10, "a duplicate inside one batch is one item"
    np.testing.assert_array_equal(store.get([5]), x[1:2])


def test_delete_then_get_raises_key_error(tmp_path) -> None:
    store = PoolStore(tmp_path)
    store.append(np.arange(5), _images(5))
    assert store.delete([1, 3, 3, 99]) == 2
    assert len(store) == 3 and 1 not in store
    with pytest.raises(KeyError, match="3"):
        store.get([0, 3])
    with pytest.raises(KeyError, match="1"):
        store.rows([1])
    np.testing.assert_array_equal(store.ids(), [0, 2, 4])
    ids, items = store.get_live([4, 3, 0, 99])
    np.testing.assert_array_equal(ids, [4, 0])
    np.testing.assert_array_equal(items, store.get([4, 0]))
    assert store.delete([1]) == 0
    assert store.holds([4, 3, 0, 99, -7]).tolist() == [True, False, True, False, False]
    assert PoolStore(tmp_path / "empty").holds([1, 2]).tolist() == [False, False] and store.holds([]).size == 0


def test_reopen_restores_ids_items_and_tombstones(tmp_path) -> None:
    x = _images(40)
    store = PoolStore(tmp_path)
    store.append(np.arange(40), x)
    store.delete([2, 30])
    store.append([5, 31], x[:2])
    ids, rows = store.live()
    items = store.items(rows)
    store.close()

    again = PoolStore(tmp_path)
    assert again.item_shape == (28, 28) and again.dtype == np.uint8 and len(again) == 38
    ids2, rows2 = again.live()
    np.testing.assert_array_equal(ids2, ids)
    np.testing.assert_array_equal(rows2, rows)
    np.testing.assert_array_equal(again.items(rows2), items)
    assert 2 not in again and 30 not in again
    np.testing.assert_array_equal(again.get([5, 31]), x[:2])


def test_crash_mid_append_is_truncated_on_open(tmp_path) -> None:
    x = _images(12)
    store = PoolStore(tmp_path)
    store.append(np.arange(10), x[:10])
    store.close()
    with open(tmp_path / "items.bin", "ab") as fh:
        fh.write(x[10:].tobytes()[:1000])
    with open(tmp_path / "ids.bin", "ab") as fh:
        fh.write(b"\x01\x02\x03")

    store = PoolStore(tmp_path)
    assert (tmp_path / "items.bin").stat().st_size == 10 * 28 * 28
    assert (tmp_path / "ids.bin").stat().st_size == 10 * 8
    np.testing.assert_array_equal(store.ids(), np.arange(10))
    store.append([10, 11], x[10:])
    np.testing.assert_array_equal(store.get([11, 0]), x[[11, 0]])
    store.close()
    np.testing.assert_array_equal(PoolStore(tmp_path).get(np.arange(12)), x)


def test_crash_between_ids_and_tombstone_keeps_the_newer_row(tmp_path) -> None:
    x = _images(4)
    store = PoolStore(tmp_path)
    store.append([1, 2], x[:2])
    store.append([1], x[2:3])
    store.close()
    (tmp_path / "dead.bin").write_bytes(b"")
    store = PoolStore(tmp_path)
    assert len(store) == 2
    np.testing.assert_array_equal(store.ids(), [2, 1])
    np.testing.assert_array_equal(store.get([1]), x[2:3])


def test_tombstones_of_rows_a_crash_cut_do_not_kill_the_rows_appended_in_their_place(tmp_path) -> None:
    """After a power cut the rows' tail can be lost while dead.bin kept tombstones of them (no fsync orders the
    files): those row numbers are given to the next append, which must stay alive across the next open."""
    x = _images(6)
    store = PoolStore(tmp_path)
    store.append([1, 2, 3, 4], x[:4])
    store.append([4], x[4:5])  # row 3 tombstoned, row 4 holds task 4
    store.close()
    os.truncate(tmp_path / "items.bin", 3 * 28 * 28)  # the cut lost rows 3 and 4 but not the tombstone of row 3
    store = PoolStore(tmp_path)
    np.testing.assert_array_equal(store.ids(), [1, 2, 3])
    store.append([5], x[5:6])  # takes row 3 again
    store.close()
    store = PoolStore(tmp_path)
    np.testing.assert_array_equal(store.ids(), [1, 2, 3, 5])
    np.testing.assert_array_equal(store.get([5]), x[5:6])


def test_an_append_whose_tombstones_cannot_be_written_still_counts_as_done(tmp_path, monkeypatch) -> None:
    """The rows are committed once ids.bin is written; a full disk at dead.bin must not tell the caller they
    are not, or it would redo (or undo) what is stored."""
    x = _images(4)
    store = PoolStore(tmp_path)
    store.append([1, 2], x[:2])

    def full(self, rows):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PoolStore, "_append_dead", full)
    store.append([1, 3], x[2:4])
    np.testing.assert_array_equal(store.get([1, 2, 3]), x[[2, 1, 3]])
    monkeypatch.undo()
    store.close()
    reopened = PoolStore(tmp_path)
    assert len(reopened) == 3
    np.testing.assert_array_equal(reopened.get([1, 2, 3]), x[[2, 1, 3]])


@pytest.mark.parametrize(
    "items",
    [
        np.zeros((2, 28, 27), dtype=np.uint8),
        np.zeros((2, 28, 28), dtype=np.float32),
        np.zeros((3, 28, 28), dtype=np.uint8),
        np.zeros((2,), dtype=np.uint8),
    ],
    ids=["shape", "dtype", "count", "scalar-items"],
)
def test_wrong_shape_or_dtype_raises_and_writes_nothing(tmp_path, items) -> None:
    store = PoolStore(tmp_path)
    store.append([1, 2], _images(2))
    before = _file_sizes(tmp_path)
    with pytest.raises(ValueError, match=r"shape|dtype|one item per id"):
        store.append([3, 4], items)
    assert _file_sizes(tmp_path) == before
    assert len(store) == 2 and 3 not in store


def test_first_append_with_bad_ids_writes_no_meta(tmp_path) -> None:
    store = PoolStore(tmp_path)
    with pytest.raises(ValueError, match="integers"):
        store.append([0.5, 1.5], _images(2))
    with pytest.raises(ValueError, match="numeric"):
        store.append([1], np.array([["a"]]))
    assert store.item_shape is None and not (tmp_path / "meta.json").exists()
    assert _file_sizes(tmp_path) == {"dead.bin": 0, "ids.bin": 0, "items.bin": 0}


def test_compact_keeps_ids_and_items_and_shrinks_file(tmp_path) -> None:
    x = _images(100)
    store = PoolStore(tmp_path)
    store.append(np.arange(100), x)
    store.delete(np.arange(0, 100, 3))
    store.compact()
    assert (tmp_path / "items.bin").stat().st_size == 100 * 28 * 28, "a third dead is not worth a rewrite"

    store.delete(np.arange(1, 100, 3))
    store.append([2], x[50:51])
    ids, items = store.ids(), store.get(store.ids())
    old_view = store.items()
    store.compact()
    assert (tmp_path / "items.bin").stat().st_size == len(ids) * 28 * 28
    assert (tmp_path / "dead.bin").stat().st_size == 0
    np.testing.assert_array_equal(store.ids(), ids)
    np.testing.assert_array_equal(store.get(ids), items)
    np.testing.assert_array_equal(store.live()[1], np.arange(len(ids)))
    np.testing.assert_array_equal(old_view[:100], x, err_msg="a view handed out before the rewrite reads the old rows")

    store.close()

    again = PoolStore(tmp_path)
    np.testing.assert_array_equal(again.ids(), ids)
    np.testing.assert_array_equal(again.get(ids), items)
    assert not list(tmp_path.glob("*.compact")) and not (tmp_path / "compact.commit").exists()


def test_compact_with_no_threshold_drops_even_one_dead_row(tmp_path) -> None:
    store = PoolStore(tmp_path)
    store.append(np.arange(10), _images(10))
    store.compact(min_dead=0.0)
    assert (tmp_path / "items.bin").stat().st_size == 10 * 28 * 28, "nothing dead: nothing rewritten"
    store.delete([4])
    store.compact(min_dead=0.0)
    assert (tmp_path / "items.bin").stat().st_size == 9 * 28 * 28
    np.testing.assert_array_equal(store.live()[1], np.arange(9))


def test_a_compaction_that_fails_after_its_commit_is_finished_before_the_store_is_used_again(
        tmp_path, monkeypatch) -> None:
    """Half the files swapped: writing on with the old index would put rows at the old offsets of new files."""
    x = _images(100)
    store = PoolStore(tmp_path)
    store.append(np.arange(100), x)
    store.delete(np.arange(0, 100, 2))
    real, swaps = os.replace, []

    def second_fails(a, b):
        swaps.append(a)
        if len(swaps) == 2:
            raise OSError(5, "Input/output error")
        real(a, b)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(OSError, match="Input/output"):
        store.compact(min_dead=0.0)
    monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(5, "Input/output error")))
    with pytest.raises(OSError, match="Input/output"):
        store.get([1])  # neither read nor written while the disk still fails
    monkeypatch.undo()
    np.testing.assert_array_equal(store.get(np.arange(1, 100, 2)), x[1::2])
    store.append([300], x[:1])
    np.testing.assert_array_equal(store.get([300, 99]), x[[0, 99]])
    store.close()
    reopened = PoolStore(tmp_path)
    np.testing.assert_array_equal(reopened.ids(), [*range(1, 100, 2), 300])
    np.testing.assert_array_equal(reopened.get(np.arange(1, 100, 2)), x[1::2])
    reopened.append([200], x[:1])
    np.testing.assert_array_equal(PoolStore(tmp_path).get([200, 300, 99]), x[[0, 0, 99]])


def test_a_commit_marker_whose_sync_fails_still_counts_as_the_commit(tmp_path, monkeypatch) -> None:
    """The marker's file exists: a restart would roll the copies forward, so the store must too before it writes."""
    import service.pool_store as pool_store

    x = _images(40)
    store = PoolStore(tmp_path)
    store.append(np.arange(40), x)
    store.delete(np.arange(0, 40, 2))
    real = pool_store._write_file

    def marker_sync_fails(path, chunks, fsync=True):
        real(path, chunks, fsync=False)
        if path.name == pool_store._COMMIT_MARKER:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(pool_store, "_write_file", marker_sync_fails)
    with pytest.raises(OSError, match="Input/output"):
        store.compact(min_dead=0.0)
    monkeypatch.undo()
    store.append([100], x[:1])
    store.close()
    np.testing.assert_array_equal(PoolStore(tmp_path).ids(), [*range(1, 40, 2), 100])


def test_a_compaction_that_runs_out_of_disk_drops_its_copy_and_keeps_the_pool(tmp_path, monkeypatch) -> None:
    """Left behind, the partial copy would keep the disk full (every save failing) until the next start."""
    import errno

    import service.pool_store as pool_store

    store = PoolStore(tmp_path)
    store.append(np.arange(100), _images(100))
    store.delete(np.arange(0, 100, 2))
    real = pool_store._write_file

    def full(path, chunks, fsync=True):
        real(path, chunks, fsync)
        if path.name.startswith("ids.bin"):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pool_store, "_write_file", full)
    with pytest.raises(OSError, match="No space"):
        store.compact(min_dead=0.0)
    monkeypatch.undo()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(pool_store._COMPACT_SUFFIX)]
    np.testing.assert_array_equal(store.live()[1], np.arange(1, 100, 2))
    assert np.array_equal(PoolStore(tmp_path).get([51]), _images(100)[[51]]), "the pool is as it was"


def test_a_file_replaced_durably_leaves_no_temporary_copy_when_its_write_fails(tmp_path) -> None:
    from service.pool_store import replacing

    (tmp_path / "served.npz").write_bytes(b"old")
    with pytest.raises(OSError), replacing(tmp_path / "served.npz", ".tmp.npz") as fh:
        fh.write(b"x" * 1000)
        raise OSError(28, "No space left on device")
    assert [p.name for p in tmp_path.iterdir()] == ["served.npz"] and (tmp_path / "served.npz").read_bytes() == b"old"


def test_interrupted_compaction_rolls_back_or_forward(tmp_path) -> None:
    x = _images(10)
    store = PoolStore(tmp_path)
    store.append(np.arange(10), x)
    store.delete(np.arange(8))
    store.close()
    (tmp_path / "items.bin.compact").write_bytes(b"partial")
    again = PoolStore(tmp_path)
    assert not (tmp_path / "items.bin.compact").exists(), "an uncommitted compaction is discarded"
    np.testing.assert_array_equal(again.get([8, 9]), x[8:])

    (tmp_path / "items.bin.compact").write_bytes(x[8:].tobytes())
    (tmp_path / "ids.bin.compact").write_bytes(np.array([8, 9], dtype="<i8").tobytes())
    (tmp_path / "dead.bin.compact").write_bytes(b"")
    (tmp_path / "compact.commit").write_bytes(b"")
    again = PoolStore(tmp_path)
    assert (tmp_path / "items.bin").stat().st_size == 2 * 28 * 28, "a committed one is finished"
    np.testing.assert_array_equal(again.live()[1], [0, 1])
    np.testing.assert_array_equal(again.get([8, 9]), x[8:])


def test_a_read_only_open_reads_complete_rows_and_never_cuts_an_append_in_flight(tmp_path) -> None:
    x = _images(6)
    store = PoolStore(tmp_path, fsync=False)
    store.append(np.arange(4), x[:4])
    with open(tmp_path / "items.bin", "ab") as fh:  # an append in flight: its items written, its ids not yet
        fh.write(x[4:].tobytes())
    with open(tmp_path / "ids.bin", "ab") as fh:
        fh.write(b"\x04\x00\x00")
    (tmp_path / "items.bin.compact").write_bytes(b"someone else's compaction")
    before = _file_sizes(tmp_path)
    reader = PoolStore(tmp_path, read_only=True)
    assert _file_sizes(tmp_path) == before, "a reader repairs nothing"
    np.testing.assert_array_equal(reader.ids(), np.arange(4))
    np.testing.assert_array_equal(reader.items(), x[:4])
    for write in (lambda: reader.append([9], x[:1]), lambda: reader.delete([0]), reader.compact):
        with pytest.raises(ValueError, match="read-only"):
            write()
    (tmp_path / "items.bin.compact").unlink()
    store.append(np.arange(4, 6), x[4:])
    np.testing.assert_array_equal(PoolStore(tmp_path).get(np.arange(6)), x)


def test_items_view_stays_valid_while_appending(tmp_path) -> None:
    store = PoolStore(tmp_path)
    store.append(np.arange(5), _images(5))
    view = store.items()
    store.append(np.arange(5, 10), _images(5, seed=1))
    assert view.shape == (5, 28, 28) and store.items().shape == (10, 28, 28)
    np.testing.assert_array_equal(view, store.items()[:5])


def test_concurrent_reader_sees_consistent_state(tmp_path) -> None:
    store = PoolStore(tmp_path, fsync=False)
    x = np.arange(2000, dtype=np.float32).reshape(-1, 1).repeat(4, axis=1)
    store.append(np.arange(100), x[:100])
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                ids, _ = store.live()
                assert len(np.unique(ids)) == len(ids)
                np.testing.assert_array_equal(store.get(ids[-5:])[:, 0], ids[-5:])
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for start in range(100, 2000, 100):
        store.append(np.arange(start, start + 100), x[start : start + 100])
        store.delete(np.arange(start - 100, start - 50))
    done.set()
    reader.join()
    assert not errors, errors[0]


def test_100k_store_reopens_with_consistent_ids(tmp_path) -> None:
    n = 100_000
    rng = np.random.default_rng(2)
    ids = rng.permutation(10 * n)[:n].astype(np.int64)
    x = rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
    store = PoolStore(tmp_path, fsync=False)
    for start in range(0, n, 10_000):
        store.append(ids[start : start + 10_000], x[start : start + 10_000])
    store.append(ids[:1000], x[:1000][::-1])
    store.delete(ids[1000:2000])
    expected = np.concatenate([ids[2000:], ids[:1000]])
    store.close()

    again = PoolStore(tmp_path)
    assert len(again) == n - 1000
    np.testing.assert_array_equal(again.ids(), expected)
    np.testing.assert_array_equal(again.get(ids[:1000]), x[:1000][::-1])
    np.testing.assert_array_equal(again.get(ids[-3:]), x[-3:])
    got_ids, rows = again.live()
    np.testing.assert_array_equal(got_ids, expected)
    np.testing.assert_array_equal(again.rows(got_ids), rows)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads Linux's list of mapped files")
def test_a_compaction_lets_go_of_the_old_file_once_its_arrays_are_dropped(tmp_path) -> None:
    store = PoolStore(tmp_path)
    x = _images(100)
    store.append(np.arange(100), x)
    store.delete(np.arange(60))
    before = store.get([70, 99])
    view = store.items()
    store.compact(min_dead=0.0)
    np.testing.assert_array_equal(view[99], x[99])  # an array handed out before still reads the old file
    np.testing.assert_array_equal(store.get([70, 99]), before)
    del view
    gc.collect()
    with open("/proc/self/maps") as f:
        held = [line for line in f if str(tmp_path) in line and "(deleted)" in line]
    assert held == [], "the replaced items file would keep its disk space"


def test_ids_since_a_mark_are_the_live_ones_appended_after_it(tmp_path) -> None:
    store = PoolStore(tmp_path, fsync=False)
    store.append(np.arange(10), _images(10))
    first, mark = store.ids_since(None)
    np.testing.assert_array_equal(first, np.arange(10))
    store.append(np.arange(10, 15), _images(5, seed=1))
    store.delete([12, 3])
    since, mark2 = store.ids_since(mark)
    np.testing.assert_array_equal(since, [10, 11, 13, 14])
    assert store.ids_since(mark2)[0].size == 0
    store.append([4], _images(1, seed=2))  # a replaced item is a new row
    np.testing.assert_array_equal(store.ids_since(mark2)[0], [4])


def test_ids_since_a_mark_from_before_a_compaction_or_of_another_store_are_all_of_them(tmp_path) -> None:
    store = PoolStore(tmp_path / "a", fsync=False)
    store.append(np.arange(10), _images(10))
    store.delete([0, 1, 2, 3, 4, 5])
    _, mark = store.ids_since(None)
    store.compact(min_dead=0.0)
    np.testing.assert_array_equal(store.ids_since(mark)[0], [6, 7, 8, 9])
    other = PoolStore(tmp_path / "b", fsync=False)
    other.append(np.arange(20, 30), _images(10))
    assert len(other.ids_since(store.ids_since(None)[1])[0]) == 10


def test_ids_past_every_stored_one_extend_the_index_in_place_and_earlier_states_keep_theirs(tmp_path) -> None:
    store = PoolStore(tmp_path, fsync=False)
    store.append(np.arange(10), _images(10))
    store.append(np.arange(10, 20), _images(10, seed=1))
    before = store._state
    store.append(np.arange(20, 25), _images(5, seed=2))
    assert store._state.keys.base is before.keys.base, "appended into the same room, not copied"
    np.testing.assert_array_equal(before.keys, np.arange(20))
    store.append([5, 30], _images(2, seed=3))  # an id stored already: the index is rebuilt, as before
    store.delete([7])
    store.append([31], _images(1, seed=4))
    np.testing.assert_array_equal(store._state.keys, [*range(7), *range(8, 25), 30, 31])
    np.testing.assert_array_equal(store.get([5, 31, 24]), [_images(2, seed=3)[0], _images(1, seed=4)[0],
                                                           _images(5, seed=2)[4]])
    reopened = PoolStore(tmp_path, fsync=False)
    np.testing.assert_array_equal(reopened.ids_since(None)[0], store.ids_since(None)[0])
