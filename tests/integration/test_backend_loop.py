"""The whole loop against a real Label Studio: connect, annotate in rounds, see versions pushed back."""

from __future__ import annotations

import httpx
import pytest

from connectors.label_studio import LabelStudioClient
from service.app import create_app
from service.push import META_KEY, ORDERING, UNLABELED_FILTER, VIEW_TITLE
from service.settings import Settings
from tests.integration.conftest import DIGITS_CONFIG, Backend, digits_pngs, wait_for

pytestmark = pytest.mark.integration
TOP_K = 10


def _settings(ls, model_dir, **kw) -> Settings:
    """A debounce of 3 s: the rounds annotate while connected, and a freshly installed Label Studio
    once paused over 0.5 s between two annotations, so a version trained on part of a round."""
    return Settings(label_studio_url=ls.url, label_studio_api_key=ls.token, model_dir=model_dir,
                    retrain_min_new_labels=10, retrain_debounce_seconds=3.0, sae_epochs=40, sae_warm_epochs=15,
                    push_top_k=TOP_K, poll_interval_seconds=3600, **kw)


def _annotate(client: LabelStudioClient, ids, truth) -> None:
    for tid in ids:
        client.create_annotation(tid, [{"from_name": "choice", "to_name": "image", "type": "choices",
                                        "value": {"choices": [str(truth[tid])]}}])


def _status(backend: Backend, pid: int) -> dict:
    return httpx.get(f"{backend.url}/projects/{pid}/status", timeout=10).json()


def _wait_version(backend: Backend, pid: int, version: str) -> dict:
    return wait_for(lambda: (s := _status(backend, pid))["model_version"] == version and not s["training"] and s)


def test_rounds_push_restart_and_queue(label_studio, ls_client: LabelStudioClient, tmp_path) -> None:
    pid = ls_client.create_project("digits loop", DIGITS_CONFIG)
    files, y = digits_pngs(200)
    ids = ls_client.upload_files(pid, files)
    assert len(ids) == 200
    truth = dict(zip(ids, y.tolist(), strict=True))
    backend = Backend(create_app(_settings(label_studio, tmp_path / "models"))).start()
    try:
        ls_client.connect_ml_backend(pid, backend.url)
        kept: dict[int, dict] = {}
        for round_no, chunk in enumerate((ids[:30], ids[30:50]), start=1):
            _annotate(ls_client, chunk, truth)
            status = _wait_version(backend, pid, f"sae-v{round_no}")
            assert status["labeled"] == len(ids[:30]) + (20 if round_no == 2 else 0)
            assert status["last_error"] is None and status["push_pending"] is False
            tasks = list(ls_client.iter_tasks(pid))
            preds = {t["id"]: t["predictions"] for t in tasks if not t["annotations"]}
            assert all(len(p) == 1 and p[0]["model_version"] == f"sae-v{round_no}" for p in preds.values()), \
                "the head (here every unlabeled task) holds one prediction of the new version"
            assert not any(t["predictions"] for t in tasks if t["annotations"]), "earlier versions' rows are gone"
            assert all(0.0 <= p[0]["score"] <= 1.0 for p in preds.values())
            unlabeled = {t["id"] for t in tasks if not t["annotations"]}
            marked = {t["id"]: t["meta"][META_KEY] for t in tasks if META_KEY in (t.get("meta") or {})}
            current = {t for t, m in marked.items() if t in unlabeled}
            assert len(current) == TOP_K, "exactly the top-K unlabeled tasks carry a mark"
            assert current == set(ls_client.ordered_task_ids(pid, UNLABELED_FILTER, ORDERING, TOP_K)), \
                "the marked tasks are the view's first K"
            assert all(marked[t] == kept[t] for t in current & set(kept)), "a task that stays keeps its mark"
            assert all(marked[t]["model_version"] == f"sae-v{round_no}" for t in current - set(kept))
            kept = {t: marked[t] for t in current}
            assert all(marked[t]["model_version"] != f"sae-v{round_no}" for t in set(marked) - unlabeled), \
                "a task labeled since keeps the mark of the version that asked for it"
            order = ls_client.ordered_task_ids(pid, UNLABELED_FILTER, ORDERING, 20)
            scores = [preds[t][0]["score"] for t in order]
            assert scores == sorted(scores)
            ranking = httpx.get(f"{backend.url}/projects/{pid}/ranking?limit=20").json()["ranking"]
            assert order == [r["task"] for r in ranking], "the saved view's order is the ranking"
        views = ls_client.ls.views.list(project=pid)
        assert sum(1 for v in views if (v.data or {}).get("title") == VIEW_TITLE) == 1
        ranking = httpx.get(f"{backend.url}/projects/{pid}/ranking?limit=5").json()["ranking"]
        assert len(ranking) == 5 and ranking[0]["value"] <= ranking[-1]["value"]
        png = httpx.get(f"{backend.url}/projects/{pid}/latent.png")
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    finally:
        backend.stop()

    restarted = Backend(create_app(_settings(label_studio, tmp_path / "models", push_mode="queue"))).start()
    try:
        status = _status(restarted, pid)
        assert status["model_version"] == "sae-v2" and status["training"] is False
        setup = httpx.post(f"{restarted.url}/setup", json={"project": f"{pid}.1", "schema": DIGITS_CONFIG}).json()
        assert setup["model_version"] == "sae-v2"
        for expected in ("sae-v3", "sae-v4"):
            httpx.post(f"{restarted.url}/webhook", json={"action": "START_TRAINING", "project": {"id": pid}})
            status = _wait_version(restarted, pid, expected)
        queue = status["queue_project"]
        assert queue is not None
        copies = list(ls_client.iter_tasks(queue))
        sources = [t["meta"]["source_task"] for t in copies]
        assert len(sources) == len(set(sources)) >= TOP_K
        _annotate(ls_client, [copies[0]["id"]], {copies[0]["id"]: truth[sources[0]]})
        httpx.post(f"{restarted.url}/webhook", json={"action": "START_TRAINING", "project": {"id": pid}})
        status = _wait_version(restarted, pid, "sae-v5")
        assert status["labeled"] == 51
        labeled_copy = copies[0]["id"]
        copies = {t["id"]: t["meta"]["source_task"] for t in ls_client.iter_tasks(queue)}
        assert labeled_copy in copies, "a copy someone labeled is never retired"
        assert len(copies) <= 2 * TOP_K + 1, "the queue holds the last two top-Ks and the labeled copy"
        ranking = httpx.get(f"{restarted.url}/projects/{pid}/ranking?limit=1000").json()["ranking"]
        rank = {r["task"]: i for i, r in enumerate(ranking)}
        in_head = [q for q, s in copies.items() if s in rank]  # the pool is smaller than the head
        order = ls_client.ordered_task_ids(queue, UNLABELED_FILTER, ORDERING, len(in_head))
        assert len(order) == len(in_head) >= TOP_K - 1
        assert [copies[q] for q in order] == sorted((copies[q] for q in in_head), key=rank.get), \
            "the queue's work comes in the ranking's order"
        assert set(ls_client.model_versions(queue)) == {"sae-v5"}, "the queue holds the version in service only"
    finally:
        restarted.stop()
