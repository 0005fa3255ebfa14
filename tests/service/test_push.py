"""Pushing a version: the order of the steps, no duplicated rows, retries, the queue copy.

The Label Studio side is a recording fake here (the issue's unit level); the same push runs
against a real Label Studio in ``tests/integration``.
"""

from __future__ import annotations

import pytest

from connectors.label_config import parse_label_config
from connectors.label_studio import LabelStudioError
from service.projects import ProjectState
from service.push import META_KEY, VIEW_TITLE, PushError, push_version
from service.settings import Settings

CONFIG = ('<View><Image name="image" value="$image"/><Choices name="choice" toName="image" choice="single">'
          '<Choice value="cat"/><Choice value="dog"/></Choices></View>')


class Recorder:
    def __init__(self, fail: dict[str, list[LabelStudioError]] | None = None, versions: dict | None = None) -> None:
        self.calls: list[tuple] = []
        self.fail = fail or {}
        self.versions = versions if versions is not None else {}
        self.rows: list[dict] = []

    def _call(self, name: str, *args):
        self.calls.append((name, *args))
        if self.fail.get(name):
            raise self.fail[name].pop(0)

    def delete_predictions(self, pid, versions=None):
        self._call("delete_predictions", pid, versions)
        self.rows = [r for r in self.rows if r["model_version"] not in versions]
        return 0

    def import_predictions(self, pid, predictions):
        self._call("import_predictions", pid, len(predictions))
        self.rows += predictions
        return len(predictions)

    def set_model_version(self, pid, name):
        self._call("set_model_version", pid, name)

    def model_versions(self, pid):
        self._call("model_versions", pid)
        counts = dict(self.versions)
        for r in self.rows:
            counts[r["model_version"]] = counts.get(r["model_version"], 0) + 1
        return counts

    def ensure_view(self, pid, title, filters, ordering):
        self._call("ensure_view", pid, title)
        return 5

    def bulk_mark(self, pid, marks, key, previous=None):
        self._call("bulk_mark", pid, marks, key, previous)
        return len(marks)

    def ensure_queue_project(self, pid):
        self._call("ensure_queue_project", pid)
        return 99

    def copy_to_queue(self, qid, tasks):
        self._call("copy_to_queue", qid, [t["id"] for t in tasks])
        return len(tasks)


def _state() -> ProjectState:
    st = ProjectState(id=4, label_config=CONFIG, config=parse_label_config(CONFIG))
    st.version_name = "sae-v3"
    st.predictions = {10: (0, 0.9), 11: (1, 0.2), 12: (1, 0.05)}
    st.ranking = [(12, 0.05), (11, 0.2)]
    st.latent = {"data": {12: {"image": "/data/upload/4/a.png"}, 11: {"image": "/data/upload/4/b.png"}}}
    return st


def _settings(tmp_path, **kw) -> Settings:
    return Settings(**{"label_studio_url": "http://127.0.0.1:1", "label_studio_api_key": "k",
                       "model_dir": tmp_path, "push_top_k": 1, **kw})


def test_push_writes_one_row_per_task_then_view_and_marks(tmp_path) -> None:
    client = Recorder()
    client.rows = [{"task": t, "model_version": "sae-v2"} for t in (10, 11, 12)]
    st = _state()
    assert push_version(client, st, _settings(tmp_path)) is None
    names = [c[0] for c in client.calls]
    assert names == ["delete_predictions", "import_predictions", "set_model_version", "model_versions",
                     "delete_predictions", "ensure_view", "bulk_mark"]
    assert client.calls[0][2] == ["sae-v3"] and client.calls[4][2] == ["sae-v2"]
    assert sorted(r["task"] for r in client.rows) == [10, 11, 12]
    assert {r["model_version"] for r in client.rows} == {"sae-v3"}
    row = next(r for r in client.rows if r["task"] == 11)
    assert row["score"] == 0.2 and row["result"][0]["value"] == {"choices": ["dog"]}
    assert client.calls[5][2] == VIEW_TITLE
    assert client.calls[6][2] == {12: {"rank": 1, "margin": 0.05, "model_version": "sae-v3"}}
    assert client.calls[6][3] == META_KEY
    assert st.pushed == [12]
    assert st.last_push["model_version"] == "sae-v3" and st.last_push["predictions"] == 3
    assert set(st.last_push["seconds"]) == {"delete_predictions", "import_predictions", "set_model_version",
                                            "model_versions", "ensure_view", "bulk_mark"}


def test_a_repeated_push_does_not_duplicate(tmp_path) -> None:
    client, st = Recorder(), _state()
    push_version(client, st, _settings(tmp_path))
    push_version(client, st, _settings(tmp_path))
    assert len(client.rows) == 3


def test_marks_read_the_whole_project_once_then_only_the_marked_tasks(tmp_path) -> None:
    client, st = Recorder(), _state()
    push_version(client, st, _settings(tmp_path))
    st.version_name, st.ranking = "sae-v4", [(11, 0.2), (12, 0.05)]
    push_version(client, st, _settings(tmp_path))
    previous = [c[4] for c in client.calls if c[0] == "bulk_mark"]
    assert previous == [None, {12}]
    assert st.marked == {11}

    down = LabelStudioError("down", retryable=False)
    client.fail["bulk_mark"] = [down]
    st.version_name, st.ranking = "sae-v5", [(10, 0.3)]
    with pytest.raises(PushError):
        push_version(client, st, _settings(tmp_path))
    assert st.marked == {10, 11}, "a half-done marking leaves every task that may carry a mark known"


def test_transient_errors_are_retried_and_permanent_ones_raise(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("service.push.wait_exponential", lambda **kw: (lambda state: 0))
    down = LabelStudioError("Label Studio unreachable", retryable=True)
    client, st = Recorder(fail={"import_predictions": [down, down]}), _state()
    push_version(client, st, _settings(tmp_path, push_retries=3))
    assert [c[0] for c in client.calls].count("import_predictions") == 3
    assert len(client.rows) == 3

    refused = LabelStudioError("HTTP 400", retryable=False, status_code=400)
    client, st = Recorder(fail={"ensure_view": [refused]}), _state()
    with pytest.raises(PushError, match="ensure_view"):
        push_version(client, st, _settings(tmp_path))
    assert [c[0] for c in client.calls].count("ensure_view") == 1
    assert st.pushed == []


def test_queue_mode_copies_the_top_k(tmp_path) -> None:
    client, st = Recorder(), _state()
    assert push_version(client, st, _settings(tmp_path, push_mode="queue", push_top_k=2)) == 99
    assert client.calls[-1] == ("copy_to_queue", 99, [12, 11])


def test_nothing_to_push_before_the_first_version(tmp_path) -> None:
    client, st = Recorder(), _state()
    st.version_name = None
    push_version(client, st, _settings(tmp_path))
    assert client.calls == []
