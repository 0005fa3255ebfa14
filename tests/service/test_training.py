"""The training job on its own: first fit, warm start, augmentation settings, too few classes."""

from __future__ import annotations

import numpy as np
import pytest

from connectors.datasets import Dataset
from connectors.label_config import LabelConfig
from service.training import Pool, TrainingJob, train_project

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CONFIG = LabelConfig("label", "image", "image", "image", [str(i) for i in range(10)])


def job(digits: Dataset, y: np.ndarray, previous=None, max_shift: int = 0) -> TrainingJob:
    n = 300
    pool = Pool(task_ids=np.arange(n), x=digits.x_train[:n], y=y[:n])
    return TrainingJob(1, CONFIG, pool, previous, epochs=3, warm_epochs=1, latent_dim=6, lam=0.9, device="cpu",
                       max_shift=max_shift)


def test_first_training_then_warm_start_with_new_settings(digits: Dataset, digits_labels: np.ndarray) -> None:
    progress = []
    first = job(digits, digits_labels, max_shift=1)
    first.progress = lambda msg, frac: progress.append(msg)
    result = train_project(first)
    sae = result.model.sae_
    assert (sae.latent_dim, sae.epochs, sae.max_shift) == (6, 3, 1)
    assert progress == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert result.metrics["warm_start"] is False
    assert result.metrics["labeled"] == int((digits_labels[:300] >= 0).sum())
    assert "on_epoch" not in result.model.sae_params  # nothing unpicklable stays in the saved model

    again = train_project(job(digits, digits_labels, previous=result.model, max_shift=0))
    assert again.metrics["warm_start"] is True
    assert (again.model.sae_.epochs, again.model.sae_.max_shift) == (1, 0)
    assert len(again.model.sae_.history_) == 4
    assert result.model.sae_.max_shift == 1  # the version in service is not touched
    assert len(result.model.sae_.history_) == 3


def test_one_class_is_not_enough(digits: Dataset) -> None:
    y = np.full(len(digits.y_train), -1)
    y[:20] = 4
    with pytest.raises(ValueError, match="at least two classes"):
        train_project(job(digits, y))
