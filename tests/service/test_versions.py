"""Versions on disk: numbers only grow, incomplete directories are never served."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from connectors.datasets import Dataset
from model.sae_classifier import SAEClassifier
from service.versions import VersionStore, version_name

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
