"""Shared fixtures: scikit-learn's digits and one small SAE + SVM fitted on them once per session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from connectors.datasets import Dataset, load_digits_dataset
from model.sae_classifier import SAEClassifier

# Class 9 gets no labels in the shared model, so "a class without labels" is always at hand.
UNLABELED_CLASS = 9


@contextmanager
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def torch_one_thread() -> Iterator[None]:
    """One intra-op thread for the tiny test networks: on a busy 2-core machine two threads spin
    against each other and make small steps several times slower (results are the same)."""
    with _one_thread():
        yield


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_digits_dataset()


@pytest.fixture(scope="session")
def digits_labels(digits: Dataset) -> np.ndarray:
    """100 random labels from classes 0..8 (``-1`` elsewhere)."""
    rng = np.random.default_rng(0)
    candidates = np.flatnonzero(digits.y_train != UNLABELED_CLASS)
    chosen = rng.choice(candidates, 100, replace=False)
    y = np.full(len(digits.y_train), -1, dtype=np.int64)
    y[chosen] = digits.y_train[chosen]
    return y


@pytest.fixture(scope="session")
def digits_model(digits: Dataset, digits_labels: np.ndarray) -> SAEClassifier:
    """A small CPU model (MLP, latent 10, 10 classes) trained briefly. Treat it as read-only."""
    with _one_thread():
        return SAEClassifier(class_names=digits.class_names, epochs=15, device="cpu",
                             random_state=0).fit(digits.x_train, digits_labels)
