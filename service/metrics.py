"""Prometheus metrics, one registry per app so tests and several apps never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.labeled = Gauge("sae_labeled_items", "Labeled tasks in the version in service", ["project"], registry=r)
        self.unlabeled = Gauge("sae_unlabeled_items", "Unlabeled tasks in the version in service", ["project"],
                               registry=r)
        self.version = Gauge("sae_model_version", "Number of the model version in service", ["project"], registry=r)
        self.versions = Gauge("sae_model_versions", "Complete model versions on disk", ["project"], registry=r)
        self.training = Gauge("sae_training_in_progress", "1 while a training runs", ["project"], registry=r)
        self.training_seconds = Histogram("sae_training_seconds", "Duration of trainings", ["project"], registry=r,
                                          buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600))
        self.predictions = Counter("sae_predictions_served", "Predictions answered on /predict", ["project"],
                                   registry=r)
        self.pushed = Counter("sae_predictions_pushed", "Predictions written to Label Studio", ["project"], registry=r)
        self.queue = Gauge("sae_training_queue_length", "Trainings waiting to run", registry=r)
        self.errors = Counter("sae_errors", "Errors by kind (training, push, data, poll, other_writer, project_gone)",
                              ["kind"], registry=r)
