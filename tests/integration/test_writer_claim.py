"""One writer per project, with two backends (each its own MODEL_DIR) on one real Label Studio project."""

from __future__ import annotations

import pytest

from connectors.label_studio import LabelStudioClient
from service.projects import ProjectManager
from service.settings import Settings
from service.writer_claim import Claim
from tests.integration.conftest import DIGITS_CONFIG, digits_pngs

pytestmark = pytest.mark.integration


def test_the_second_backend_writes_nothing_until_it_takes_over(label_studio, ls_client: LabelStudioClient,
                                                               tmp_path) -> None:
    pid = ls_client.create_project("two backends", DIGITS_CONFIG)
    files, y = digits_pngs(60)
    ids = ls_client.upload_files(pid, files)
    for tid, label in zip(ids[:20], y[:20].tolist(), strict=True):
        ls_client.create_annotation(tid, [{"from_name": "choice", "to_name": "image", "type": "choices",
                                           "value": {"choices": [str(label)]}}])
    managers = [ProjectManager(Settings(label_studio_url=label_studio.url, label_studio_api_key=label_studio.token,
                                        model_dir=tmp_path / d, sae_epochs=5, sae_warm_epochs=2, push_head=20,
                                        push_top_k=5, poll_interval_seconds=3600), start_scheduler=False)
                for d in "ab"]
    first, second = managers
    try:
        for m in managers:
            m.setup(pid, DIGITS_CONFIG, None, None)
            m.request_training(pid, "first")
            assert m.runner.wait_idle(300)
        assert second.projects[pid].served.name == "sae-v2", "it trains and serves all the same"
        assert ls_client.model_versions(pid) == {"sae-v1": 20}, "only the first's rows"
        assert Claim.read(ls_client, pid).install == first.install
        assert second.projects[pid].push_pending and "another sae-backend" in second.projects[pid].last_push_error

        view = next(v for v in ls_client.list_views(pid) if (v.get("data") or {}).get("sae_backend_writer"))
        edited = {k: v for k, v in view["data"].items() if k != "sae_backend_writer"}  # as the Data Manager saves a tab
        ls_client.ls.views.update(id=str(view["id"]), project=pid, data=edited)
        assert Claim.read(ls_client, pid) is None, "Label Studio keeps only the data a tab's save sends"
        second.poll()
        assert second.runner.wait_idle(300)
        assert ls_client.model_versions(pid) == {"sae-v1": 20}, "the claim it read last still holds"
        assert Claim.read(ls_client, pid) is None and second.projects[pid].push_pending
        first.poll()
        assert Claim.read(ls_client, pid).install == first.install, "the holder writes its claim again"

        first.shutdown()  # the first stops; a day later its claim has lapsed
        view = next(v for v in ls_client.list_views(pid) if (v.get("data") or {}).get("sae_backend_writer"))
        ls_client.ls.views.update(id=str(view["id"]), project=pid, data={
            **view["data"], "sae_backend_writer": {"install": first.install, "at": 0.0}})
        second.poll()
        assert second.runner.wait_idle(300)
        assert ls_client.model_versions(pid) == {"sae-v2": 20}, "taken over: the first's rows are gone"
        assert Claim.read(ls_client, pid).install == second.install
        assert second.projects[pid].last_push["took_over"] and not second.projects[pid].push_pending
    finally:
        for m in managers:
            m.shutdown()
