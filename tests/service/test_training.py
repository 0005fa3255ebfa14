"""The training job on its own: a plain-data spec (pool on disk, labels, settings), first fit, warm start."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import service.training
from connectors.datasets import Dataset
from model.persistence import save_model
from service.pool_store import PoolStore
from service.settings import SAESettings
from service.training import (
    LocalTrainingBackend,
    ScoringJob,
    TrainingJob,
    pool_items,
    pool_stretch,
    score_pool,
    suggest_first,
    train_project,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")
CLASSES = [str(i) for i in range(10)]
N = 300


@pytest.fixture
def pool_dir(digits: Dataset, tmp_path) -> str:
    store = PoolStore(tmp_path / "pool", fsync=False)
    items = np.rint(digits.x_train[:N] * 255).astype(np.uint8)
    store.append(np.arange(1000, 1000 + N), items)
    store.close()
    return str(tmp_path / "pool")


def job(pool_dir: str, y: np.ndarray, previous: str | None = None, max_shift: int = 0,
        warm_steps: int | None = None, flip: bool = False, class_distances=None, **semi) -> TrainingJob:
    ids = np.arange(1000, 1000 + N)
    labels = {int(t): int(c) for t, c in zip(ids, y[:N], strict=True) if c >= 0}
    return TrainingJob(1, pool_dir, ids, labels, CLASSES,
                       SAESettings(epochs=3, warm_epochs=1, latent_dim=6, lam=0.9, max_shift=max_shift,
                                   warm_steps=warm_steps, flip=flip, **semi), previous, "cpu",
                       class_distances=class_distances)


def test_the_job_is_plain_data(pool_dir: str, digits_labels: np.ndarray) -> None:
    spec = job(pool_dir, digits_labels)
    plain = {**asdict(spec), "task_ids": spec.task_ids.tolist()}
    assert json.loads(json.dumps(plain))["pool_dir"] == pool_dir


def test_first_training_then_warm_start_with_new_settings(pool_dir: str, digits_labels: np.ndarray,
                                                         tmp_path) -> None:
    progress = []
    result = train_project(job(pool_dir, digits_labels, max_shift=1, flip=True),
                           lambda msg, frac: progress.append(msg))
    sae = result.model.sae_
    assert (sae.latent_dim, sae.epochs, sae.max_shift, sae.flip) == (6, 3, 1, True)
    assert progress == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert result.metrics["warm_start"] is False
    assert result.metrics["labeled"] == int((digits_labels[:N] >= 0).sum())
    assert "on_epoch" not in result.model.sae_params  # nothing unpicklable stays in the saved model

    save_model(result.model, tmp_path / "v1")
    again = train_project(job(pool_dir, digits_labels, previous=str(tmp_path / "v1"), max_shift=0, warm_steps=2))
    assert again.metrics["warm_start"] is True
    assert (again.model.sae_.epochs, again.model.sae_.max_shift, again.model.sae_.flip) == (1, 0, False)
    assert again.model.sae_.steps_per_epoch == 2, "the per-round budget reaches the autoencoder"
    assert len(again.model.sae_.history_) == 4
    assert result.model.sae_.max_shift == 1  # the model that was passed in is not touched


def test_the_cold_start_trains_with_the_project_augmentation(pool_dir: str, digits_labels: np.ndarray,
                                                             monkeypatch) -> None:
    from model.sae import StructuringAutoencoder

    seen, fit = [], StructuringAutoencoder.fit

    def recording_fit(self, x, y=None, pseudo=None, **kw):
        seen.append((self.lam, self.max_shift, self.flip))
        return fit(self, x, y, pseudo=pseudo, **kw)

    monkeypatch.setattr(StructuringAutoencoder, "fit", recording_fit)
    picks = suggest_first(job(pool_dir, digits_labels, max_shift=1, flip=True), 5)
    assert seen == [(0.0, 1, True)]
    assert len(set(picks.tolist())) == 5


def test_semi_supervised_terms_reach_the_trainings_once_enough_labels_exist(
        pool_dir: str, digits_labels: np.ndarray, tmp_path, monkeypatch) -> None:
    from model.sae import StructuringAutoencoder

    seen, fit = [], StructuringAutoencoder.fit

    def recording_fit(self, x, y=None, pseudo=None, **kw):
        seen.append((self.consistency, None if pseudo is None else int((pseudo >= 0).sum())))
        return fit(self, x, y, pseudo=pseudo, **kw)

    monkeypatch.setattr(StructuringAutoencoder, "fit", recording_fit)
    labeled = int((digits_labels[:N] >= 0).sum())
    semi = dict(self_training=0.3, self_training_threshold=0.0, consistency=1.0, max_shift=1)
    first = train_project(job(pool_dir, digits_labels, **semi, semi_supervised_from=labeled))
    assert seen[0] == (1.0, None), "first training: consistency on, no previous model to pseudo-label with"
    plain = train_project(job(pool_dir, digits_labels, max_shift=1))
    save_model(plain.model, tmp_path / "v1")
    train_project(job(pool_dir, digits_labels, str(tmp_path / "v1"), **semi, semi_supervised_from=labeled + 1))
    train_project(job(pool_dir, digits_labels, str(tmp_path / "v1"), **semi, semi_supervised_from=labeled))
    assert first.model.sae_.consistency == 1.0 and seen[1] == (0.0, None)
    assert seen[2] == (0.0, None), "one label short of the schedule: both off"
    assert seen[3] == (1.0, N - labeled), "settings reach a warm retrain of a version trained without them"


def test_test_time_flips_reach_the_first_training_and_warm_retrains(pool_dir: str, digits_labels: np.ndarray,
                                                                   tmp_path) -> None:
    first = train_project(job(pool_dir, digits_labels, flip=True, test_time_flip=True))
    assert first.model.test_time_flip
    save_model(first.model, tmp_path / "v1")
    warm = train_project(job(pool_dir, digits_labels, str(tmp_path / "v1"), flip=True, test_time_flip=True))
    assert warm.metrics["warm_start"] and warm.model.test_time_flip
    assert not train_project(job(pool_dir, digits_labels, str(tmp_path / "v1"), flip=True)).model.test_time_flip


@pytest.mark.parametrize(("name", "first_value", "warm_value"), [("mixup", 0.5, 2.0), ("ema_decay", 0.95, 0.9)])
def test_sae_settings_reach_the_first_training_and_warm_retrains(pool_dir: str, digits_labels: np.ndarray, tmp_path,
                                                                 name: str, first_value: float,
                                                                 warm_value: float) -> None:
    first = train_project(job(pool_dir, digits_labels, **{name: first_value}))
    assert getattr(first.model.sae_, name) == first_value
    save_model(first.model, tmp_path / "v1")
    warm = train_project(job(pool_dir, digits_labels, str(tmp_path / "v1"), **{name: warm_value}))
    assert warm.metrics["warm_start"] and getattr(warm.model.sae_, name) == warm_value
    assert getattr(train_project(job(pool_dir, digits_labels, str(tmp_path / "v1"))).model.sae_, name) == 0.0


def test_class_distances_shape_the_first_training_and_a_warm_retrain(pool_dir: str, digits_labels: np.ndarray,
                                                                    tmp_path) -> None:
    near = np.ones((10, 10)) - np.eye(10)
    near[3, 8] = near[8, 3] = 0.25  # a team's say: 3 and 8 look alike
    spec = job(pool_dir, digits_labels, class_distances=tuple(map(tuple, near)))
    assert json.loads(json.dumps(asdict(spec) | {"task_ids": []}))["class_distances"][3][8] == 0.25, "plain data"
    first = train_project(spec)
    np.testing.assert_array_equal(first.model.sae_.distances_, near)
    targets = first.model.sae_.positions_
    assert np.linalg.norm(targets[3] - targets[8]) < 0.5 * np.linalg.norm(targets[3] - targets[7])
    save_model(first.model, tmp_path / "v1")
    warm = train_project(job(pool_dir, digits_labels, str(tmp_path / "v1")))
    assert warm.metrics["warm_start"] and warm.model.sae_.class_distances is None, "an edit takes effect warm"
    np.testing.assert_allclose(warm.model.sae_.distances_, np.ones((10, 10)) - np.eye(10))


def test_a_version_trained_on_other_class_names_is_not_warm_started(pool_dir: str, digits_labels: np.ndarray,
                                                                     tmp_path) -> None:
    save_model(train_project(job(pool_dir, digits_labels)).model, tmp_path / "v1")
    renamed = dataclasses.replace(job(pool_dir, digits_labels, str(tmp_path / "v1")), class_names=CLASSES[::-1])
    assert train_project(renamed).metrics["warm_start"] is False, "class i now names another class"
    assert train_project(job(pool_dir, digits_labels, str(tmp_path / "v1"))).metrics["warm_start"] is True


def test_a_task_deleted_after_the_job_was_made_is_left_out_not_a_failure(pool_dir: str, digits_labels: np.ndarray,
                                                                         tmp_path) -> None:
    spec = job(pool_dir, digits_labels)
    labeled = sorted(spec.labels)[:3]
    store = PoolStore(pool_dir, fsync=False)
    store.delete([1000 + N - 1, *labeled])
    store.close()
    result = train_project(spec)
    assert result.metrics["labeled"] == len(spec.labels) - 3 and result.metrics["unlabeled"] == N - len(spec.labels) - 1
    save_model(result.model, tmp_path / "v1")
    scoring = ScoringJob(pool_dir, spec.task_ids, np.array(labeled), str(tmp_path / "v1"), "margin", 10)
    shard = score_pool(scoring, 0, N)
    assert len(shard.ids) == N - 4 and not set(shard.ids.tolist()) & {1000 + N - 1, *labeled}
    assert len(suggest_first(dataclasses.replace(spec, labels={}), 5)) == 5


def test_shards_of_a_random_ranking_draw_their_own_numbers(pool_dir: str, digits_labels: np.ndarray,
                                                           tmp_path) -> None:
    save_model(train_project(job(pool_dir, digits_labels)).model, tmp_path / "v1")
    scoring = ScoringJob(pool_dir, np.arange(1000, 1000 + N), np.zeros(0, np.int64), str(tmp_path / "v1"), "random",
                         10)
    first, second = score_pool(scoring, 0, 100), score_pool(scoring, 100, 200)
    assert not np.allclose(first.part.values, second.part.values), "the same draws would favour the earlier shard"


def test_one_class_is_not_enough(pool_dir: str, digits: Dataset) -> None:
    y = np.full(N, -1)
    y[:20] = 4
    with pytest.raises(ValueError, match="at least two classes"):
        train_project(job(pool_dir, y))


def test_pool_items_maps_the_store_without_copying_when_it_can(pool_dir: str) -> None:
    store = PoolStore(pool_dir)
    ids = store.ids()
    assert isinstance(pool_items(store, ids), np.memmap)
    some = ids[[5, 2, 9]]
    np.testing.assert_array_equal(pool_items(store, some), store.get(some))


def test_a_training_reads_through_the_rows_of_deleted_tasks_instead_of_gathering_the_pool(pool_dir: str) -> None:
    """The pool is compacted only once a tenth of it was deleted: a gathered copy of millions of items would not fit."""
    store = PoolStore(pool_dir, fsync=False)
    ids = store.ids()
    gone = ids[10:40:3]
    store.delete(gone)
    stretch, x, live = pool_stretch(pool_dir, ids)
    assert isinstance(x, np.memmap) and len(x) == N, "the memory map as it lies"
    assert set(stretch[~live].tolist()) == {-1} and (~live).sum() == len(gone)
    np.testing.assert_array_equal(stretch[live], np.setdiff1d(ids, gone))
    store.delete(ids[50:150])  # past a quarter of the stretch: gathered
    stretch, x, live = pool_stretch(pool_dir, ids)
    assert live.all() and len(x) == len(stretch) == N - len(gone) - 100 and not isinstance(x, np.memmap)
    np.testing.assert_array_equal(x, store.get(stretch))


def test_tasks_deleted_but_not_compacted_are_never_suggested_or_scored(pool_dir: str, digits_labels: np.ndarray,
                                                                       tmp_path, monkeypatch) -> None:
    spec = job(pool_dir, digits_labels)
    store = PoolStore(pool_dir, fsync=False)
    gone = spec.task_ids[::5]  # a fifth, read through
    store.delete(gone)
    store.close()
    suggested = suggest_first(dataclasses.replace(spec, labels={}), 80)
    assert len(suggested) == 80 and set(suggested.tolist()) <= set(np.setdiff1d(spec.task_ids, gone).tolist())
    result = train_project(spec)
    assert result.metrics["labeled"] + result.metrics["unlabeled"] == N - len(gone)
    save_model(result.model, tmp_path / "v1")
    monkeypatch.setattr(service.training, "SCORE_SHARD", 64)
    scoring = ScoringJob(pool_dir, spec.task_ids, np.zeros(0, np.int64), str(tmp_path / "v1"), "margin", 10)
    opened = []
    real_init = PoolStore.__init__
    monkeypatch.setattr(PoolStore, "__init__", lambda self, *a, **k: opened.append(a) or real_init(self, *a, **k))
    shards = LocalTrainingBackend().score(scoring, result.model)
    assert len(shards) == 5, "scored a shard at a time: a pool with gaps gathers one shard, not all of it"
    assert len(opened) == 1, "the pool's index is read once, not once a shard"
    np.testing.assert_array_equal(np.concatenate([sh.ids for sh in shards]), np.setdiff1d(spec.task_ids, gone))


def test_the_single_machine_path_never_imports_ray() -> None:
    code = ("import sys; from service.app import create_app; from service.projects import make_backend; "
            "from service.settings import Settings; make_backend(Settings(_env_file=None)); "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_the_ray_backend_without_ray_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from service.ray_backend import RayTrainingBackend

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RuntimeError, match=r"pip install 'sae-backend\[ray\]'"):
        RayTrainingBackend(tmp_path / "staging")


def test_a_changed_latent_size_or_encoder_trains_anew_and_a_changed_lambda_reaches_a_warm_retrain(
        pool_dir: str, digits_labels: np.ndarray, tmp_path) -> None:
    save_model(train_project(job(pool_dir, digits_labels)).model, tmp_path / "v1")
    spec = job(pool_dir, digits_labels, previous=str(tmp_path / "v1"))

    def again(**change):
        return train_project(dataclasses.replace(spec, sae=dataclasses.replace(spec.sae, **change)))

    warm = again(lam=0.5)
    assert warm.metrics["warm_start"] and warm.model.sae_.lam == 0.5
    cold = again(latent_dim=4)
    assert cold.metrics["warm_start"] is False and cold.model.transform(np.zeros((1, 1, 8, 8), np.uint8)).shape[1] == 4
    assert again(channels=(8, 16, 32)).metrics["warm_start"], "8x8 digits get the MLP, which takes no channels"


def test_a_changed_encoder_width_trains_a_conv_model_anew(digits: Dataset, digits_labels: np.ndarray,
                                                          tmp_path) -> None:
    store = PoolStore(tmp_path / "pool16", fsync=False)
    items = np.rint(digits.x_train[:N] * 255).astype(np.uint8).repeat(2, axis=-1).repeat(2, axis=-2)  # 16x16: conv
    store.append(np.arange(1000, 1000 + N), items)
    store.close()
    small = SAESettings(epochs=1, warm_epochs=1, latent_dim=6, channels=(4, 8, 8))
    first = job(str(tmp_path / "pool16"), digits_labels)
    save_model(train_project(dataclasses.replace(first, sae=small)).model, tmp_path / "v1")
    spec = dataclasses.replace(first, sae=small, previous_dir=str(tmp_path / "v1"))
    assert train_project(spec).metrics["warm_start"]
    wider = train_project(dataclasses.replace(spec, sae=dataclasses.replace(small, channels=(4, 8, 16))))
    assert wider.metrics["warm_start"] is False and tuple(wider.model.sae_.channels) == (4, 8, 16)


def test_closing_the_local_backend_stops_a_running_training_at_its_next_epoch(pool_dir: str,
                                                                                digits_labels: np.ndarray) -> None:
    import threading

    from service.training import JobCancelledError, LocalTrainingBackend

    backend, epochs, out = LocalTrainingBackend(), [], {}

    def progress(stage: str, fraction: float) -> None:
        epochs.append(stage)
        if len(epochs) == 2:
            backend.close()

    def train() -> None:
        try:
            long = job(pool_dir, digits_labels)
            out["result"] = backend.run(dataclasses.replace(long, sae=dataclasses.replace(long.sae, epochs=500)),
                                        progress)
        except JobCancelledError as e:
            out["error"] = e

    worker = threading.Thread(target=train)
    worker.start()
    worker.join(120)
    assert not worker.is_alive() and "result" not in out and isinstance(out.get("error"), JobCancelledError)
    assert len(epochs) == 2, "no epoch after the close reported progress"
    with pytest.raises(JobCancelledError):  # a job that starts after the close does not start at all
        backend.run(job(pool_dir, digits_labels))


def test_the_calibration_holdout_is_picked_by_task_id_in_first_and_warm_trainings(pool_dir: str,
                                                                                 digits_labels: np.ndarray,
                                                                                 tmp_path, monkeypatch) -> None:
    from model.calibration import holdout
    from model.sae import StructuringAutoencoder

    seen, fit = [], StructuringAutoencoder.fit

    def recording_fit(self, x, y=None, pseudo=None, **kw):
        seen.append(np.asarray(y).copy())
        return fit(self, x, y, pseudo=pseudo, **kw)

    monkeypatch.setattr(StructuringAutoencoder, "fit", recording_fit)
    first = train_project(job(pool_dir, digits_labels, calibration_holdout=0.3))
    save_model(first.model, tmp_path / "v1")
    warm = train_project(job(pool_dir, digits_labels, str(tmp_path / "v1"), calibration_holdout=0.3))
    ids = np.arange(1000, 1000 + N)
    held = (digits_labels[:N] >= 0) & holdout(ids, 0.3)
    assert held.any() and warm.metrics["warm_start"] and warm.model.calibration_holdout == 0.3
    for y in seen:
        assert (y[held] == -1).all() and (y[~held] == digits_labels[:N][~held]).all()


def test_another_calibration_holdout_trains_afresh(pool_dir: str, digits_labels: np.ndarray, tmp_path) -> None:
    first = train_project(job(pool_dir, digits_labels))
    save_model(first.model, tmp_path / "v1")
    assert not train_project(job(pool_dir, digits_labels, str(tmp_path / "v1"),
                                 calibration_holdout=0.2)).metrics["warm_start"]
    assert train_project(job(pool_dir, digits_labels, str(tmp_path / "v1"))).metrics["warm_start"]


def test_a_version_whose_few_labels_all_pulled_is_not_warm_started_from(pool_dir: str, digits_labels: np.ndarray,
                                                                        tmp_path) -> None:
    from model.calibration import holdout

    ids = np.arange(1000, 1000 + N)
    y = digits_labels[:N]
    held = (y >= 0) & holdout(ids, 0.3)
    one_held = int(np.flatnonzero(held)[0])
    other = int(np.flatnonzero((y >= 0) & ~held & (y != y[one_held]))[0])
    few = np.full_like(digits_labels, -1)
    few[[one_held, other]] = digits_labels[[one_held, other]]  # one class outside the holdout: both pull
    first = train_project(job(pool_dir, few, calibration_holdout=0.3))
    assert first.model.pulled_held_
    save_model(first.model, tmp_path / "v1")
    second = train_project(job(pool_dir, digits_labels, str(tmp_path / "v1"), calibration_holdout=0.3))
    assert not second.metrics["warm_start"] and not second.model.pulled_held_, "the held label it pulled is let go"
    save_model(second.model, tmp_path / "v2")
    assert train_project(job(pool_dir, digits_labels, str(tmp_path / "v2"), calibration_holdout=0.3)).metrics[
        "warm_start"]
    assert train_project(job(pool_dir, few, str(tmp_path / "v1"), calibration_holdout=0.0)).metrics["warm_start"], \
        "nothing held out now: codes every label pulled carry no held label"
