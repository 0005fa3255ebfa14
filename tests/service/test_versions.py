"""Versions on disk: numbers only grow, incomplete directories are never served."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from connectors.datasets import Dataset
from model.sae_classifier import SAEClassifier
from service.versions import VersionStore, own_versions, version_name

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_save_load_history_and_monotonic_numbers(digits_model: SAEClassifier, digits: Dataset, tmp_path) -> None:
    store = VersionStore(tmp_path, 3)
    assert store.numbers() == [] and store.next_number() == 1
    n1, name1 = store.save(digits_model, {"labeled": 100, "cv_accuracy": 0.9, "train_seconds": 1.0})
    n2, name2 = store.save(digits_model, {"labeled": 120})
    assert (n1, name1, n2, name2) == (1, "sae-v1", 2, "sae-v2")
    hist = store.history()
    assert [h["model_version"] for h in hist] == ["sae-v1", "sae-v2"]
    assert hist[0]["labeled"] == 100 and hist[1]["cv_accuracy"] is None
    np.testing.assert_array_equal(store.load(2, "cpu").predict(digits.x_test), digits_model.predict(digits.x_test))
    shutil.rmtree(store.dir / "v000002")
    assert VersionStore(tmp_path, 3).next_number() == 3, "a number is never handed out twice"


def test_half_written_versions_are_ignored_and_cleaned(digits_model: SAEClassifier, tmp_path) -> None:
    store = VersionStore(tmp_path, 1)
    store.save(digits_model, {})
    (store.dir / "v000002").mkdir()
    leftover = store.dir / ".v000003.tmp-1234"
    leftover.mkdir()
    store = VersionStore(tmp_path, 1)
    assert store.numbers() == [1] and leftover.exists(), "creating a store never touches temporary directories"
    assert store.clean_temporary() == 1
    assert not leftover.exists()


def test_a_save_survives_another_store_being_created(digits_model: SAEClassifier, tmp_path, monkeypatch) -> None:
    """Persisting project info (e.g. on /setup) builds a store while a training may be saving."""
    import model.persistence as persistence

    real = persistence.np.savez
    created = []

    def savez_then_new_store(*args, **kwargs):
        created.append(VersionStore(tmp_path, 1))
        return real(*args, **kwargs)

    monkeypatch.setattr(persistence.np, "savez", savez_then_new_store)
    number, _ = VersionStore(tmp_path, 1).save(digits_model, {})
    assert created and VersionStore(tmp_path, 1).numbers() == [number]


def test_version_name_is_what_label_studio_sees() -> None:
    assert version_name(12) == "sae-v12"


def test_an_emptied_version_counter_does_not_stop_the_next_save(digits_model: SAEClassifier, tmp_path) -> None:
    store = VersionStore(tmp_path, 1)
    assert store.save(digits_model, {})[0] == 1
    (store.dir / "last_number").write_text("")  # a crash between truncating and writing it
    assert store.save(digits_model, {})[0] == 2, "the version directories still count"
    assert (store.dir / "last_number").read_text() == "2" and not (store.dir / "last_number.tmp").exists()


def test_prune_keeps_the_newest_and_the_served_and_only_the_served_snapshot(digits_model: SAEClassifier,
                                                                           tmp_path) -> None:
    store = VersionStore(tmp_path, 1)
    for _ in range(5):
        store.save(digits_model, {})
    for n in (2, 4, 5):
        (store.dir / f"served-v{n:06d}.npz").write_bytes(b"x")
    assert store.prune(2, serving=2) == [1, 3], "the served version stays even when it is not among the newest"
    assert store.numbers() == [2, 4, 5]
    assert sorted(p.name for p in store.dir.glob("served-v*")) == ["served-v000002.npz"]
    assert store.prune(2, serving=5) == [2] and store.numbers() == [4, 5]
    assert store.next_number() == 6, "numbers still only grow"
    (store.dir / "served-v000006.npz.tmp.npz").write_bytes(b"half")
    (store.dir / ".v000004.tmp-pruned").mkdir()
    assert store.clean_temporary() == 2, "a snapshot or a delete a crash cut short"


def test_a_version_that_cannot_be_pruned_keeps_neither_the_others_nor_the_snapshots(digits_model: SAEClassifier,
                                                                                  tmp_path, monkeypatch) -> None:
    store = VersionStore(tmp_path, 1)
    for _ in range(4):
        store.save(digits_model, {})
    (store.dir / "served-v000001.npz").write_bytes(b"x")
    (store.dir / ".v000002.tmp-pruned").mkdir()  # a delete cut short left it: the rename would fail onto it
    (store.dir / ".v000002.tmp-pruned" / "f").write_bytes(b"x")
    real = type(store.path(1)).replace

    def refuse_one(self, target):
        if self.name.endswith("000001"):
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, target)

    monkeypatch.setattr(type(store.path(1)), "replace", refuse_one)
    assert store.prune(1, serving=4) == [2, 3], "1 could not go; 2 and 3 did"
    assert store.numbers() == [1, 4] and not list(store.dir.glob("served-v*"))


def test_history_skips_a_version_pruned_while_it_is_read(digits_model: SAEClassifier, tmp_path,
                                                         monkeypatch) -> None:
    store = VersionStore(tmp_path, 1)
    store.save(digits_model, {})
    listed = store.numbers()
    store.save(digits_model, {})
    monkeypatch.setattr(store, "numbers", lambda: [*listed, 2, 3])  # 3 listed, then pruned by a training
    assert [h["model_version"] for h in store.history()] == ["sae-v1", "sae-v2"]


def test_skip_past_only_moves_the_counter_forward(digits_model: SAEClassifier, tmp_path) -> None:
    store = VersionStore(tmp_path, 1)
    store.skip_past(57)
    assert store.next_number() == 58
    store.skip_past(3)
    assert store.next_number() == 58 and store.save(digits_model, {})[1] == "sae-v58"


def test_own_versions_are_this_backend_s_names_with_rows() -> None:
    counts = {"sae-v3": 40, "sae-v0": 10, "sae-v9x": 5, "vendor-model": 7, "sae-v4": 0, "sae-v2-unread": 2}
    assert own_versions(counts) == {"sae-v3": 3, "sae-v0": 0, "sae-v2-unread": 2}
    near = {"sae-v03": 1, "sae-v3\n": 1, "sae-v\u0663": 1, "sae-v": 1, "xsae-v3": 1, "sae-v-1": 1, "SAE-v3": 1,
            "sae-v3-unreadx": 1, "sae-v3-Unread": 1, "sae-v3-unread\n": 1}
    assert own_versions(near) == {}, "only names this backend writes: another's rows are never deleted"


@pytest.mark.parametrize("content", [b"", b'{"id": 1, "label_con', b"\xff\xfe", b"[1, 2]"])
def test_a_project_record_that_cannot_be_read_is_set_aside_not_fatal(tmp_path, content: bytes) -> None:
    store = VersionStore(tmp_path, 1)
    (store.dir / "project.json").write_bytes(content)
    assert store.read_project() is None
    assert [p.name.startswith("project.json.corrupt-") for p in store.dir.iterdir()] == [True]
    store.write_project({"id": 1})
    assert store.read_project() == {"id": 1}


def test_the_service_starts_with_one_project_record_torn(tmp_path) -> None:
    from tests.service.test_app import CONFIG, make
    from tests.service.test_projects import first_version

    m, _, client, _ = first_version(tmp_path / "a")
    m.shutdown()
    (tmp_path / "a" / "project-1" / "project.json").write_text('{"id": 1, "label_con')
    m2, app, _ = make(tmp_path / "a", client=client)
    assert app.get("/projects/1/status").json()["model_version"] == "sae-v1", "its versions still serve"
    assert app.post("/setup", json={"project": "1.1", "schema": CONFIG}).status_code == 200
    m2.shutdown()
