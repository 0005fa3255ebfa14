"""LabelStudioClient against a real Label Studio 1.23.2 (started once per session by the fixture)."""

from __future__ import annotations

import socket
import sqlite3
import traceback

import pytest

from connectors.label_studio import UNLABELED_FILTER, VIEW_MARK, LabelStudioClient, LabelStudioError, parse_time
from connectors.label_studio_server import LabelStudioServer, free_port
from tests.integration.conftest import DIGITS_CONFIG, digits_pngs

pytestmark = pytest.mark.integration
SCORE_ORDER = ["tasks:predictions_score"]


def choice(label: str) -> list[dict]:
    return [{"from_name": "choice", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]


def import_n(client: LabelStudioClient, pid: int, n: int, meta: dict | None = None) -> list[int]:
    return client.import_tasks(pid, [{"data": {"image": f"/img/{i}.png"}, "meta": dict(meta or {})} for i in range(n)])


def test_upload_files_and_paginate_lazily(ls_client: LabelStudioClient, digits_project: int,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    files, _ = digits_pngs(20)
    ids = ls_client.upload_files(digits_project, files, chunk=8)
    assert len(ids) == len(set(ids)) == 20
    assert ls_client.get_project(digits_project)["task_number"] == 20

    pages: list[str] = []
    fetch = ls_client._page
    monkeypatch.setattr(ls_client, "_page", lambda params, first: pages.append(params["query"]) or fetch(params, first))
    it = ls_client.iter_tasks(digits_project, page_size=7)
    first = next(it)
    assert len(pages) == 1, "iter_tasks must stream, not fetch every page first"
    tasks = [first, *it]
    assert len(pages) == 3 and '"greater"' in pages[1], "pages follow the last id seen"
    assert [t["id"] for t in tasks] == ids
    for t in tasks:
        assert t["data"]["image"].startswith(f"/data/upload/{digits_project}/")
        assert t["meta"] == {} and t["annotations"] == []


def test_tasks_deleted_during_a_scan_do_not_hide_later_ones(ls_client: LabelStudioClient, digits_project: int) -> None:
    ids = import_n(ls_client, digits_project, 12)
    seen = []
    for t in ls_client.iter_tasks(digits_project, page_size=4, fields="task_only"):
        seen.append(t["id"])
        if len(seen) == 4:  # a user deletes three tasks of the page already read
            for tid in ids[:3]:
                ls_client.ls.tasks.delete(id=tid)
    assert seen == ids, "page numbers would have shifted past three tasks"


def test_labeled_filter_and_annotation_round_trip(ls_client: LabelStudioClient, digits_project: int) -> None:
    ids = import_n(ls_client, digits_project, 6)
    ann = {tid: ls_client.create_annotation(tid, choice(str(k))) for k, tid in enumerate(ids[:3])}
    assert ls_client.labeled_count(digits_project) == 3

    labeled = list(ls_client.iter_tasks(digits_project, page_size=2, labeled=True))
    assert [t["id"] for t in labeled] == ids[:3]
    for k, t in enumerate(labeled):
        (a,) = t["annotations"]
        assert a["id"] == ann[t["id"]] and a["result"] == choice(str(k)) and a["was_cancelled"] is False
        assert a["created_at"] and a["updated_at"]
    assert [t["id"] for t in ls_client.iter_tasks(digits_project, labeled=False)] == ids[3:]

    ls_client.delete_annotation(ann[ids[0]])
    ls_client.delete_annotation(ann[ids[0]])
    assert ls_client.labeled_count(digits_project) == 2
    assert [t["id"] for t in ls_client.iter_tasks(digits_project, labeled=True)] == ids[1:3]


def test_predictions_model_version_and_uncertain_view(ls_client: LabelStudioClient, digits_project: int) -> None:
    pid = digits_project
    ids = import_n(ls_client, pid, 7)
    scores = dict(zip(ids[:6], [0.5, 0.1, 0.9, 0.3, 0.7, 0.2], strict=True))
    old = [{"task": t, "model_version": "v1", "score": 0.0, "result": choice("1")} for t in ids]
    new = [{"task": t, "model_version": "v2", "score": s, "result": choice("2")} for t, s in scores.items()]
    assert ls_client.import_predictions(pid, old, chunk_size=3) == 7
    assert ls_client.import_predictions(pid, new, chunk_size=4) == 6
    assert ls_client.model_versions(pid) == {"v1": 7, "v2": 6}
    ls_client.create_annotation(ids[1], choice("4"))
    ls_client.set_model_version(pid, "v2")
    assert ls_client.get_project(pid)["model_version"] == "v2"

    vid = ls_client.ensure_view(pid, "Most uncertain first", UNLABELED_FILTER, SCORE_ORDER)
    unlabeled = sorted((t for t in scores if t != ids[1]), key=scores.__getitem__)
    expected = [*unlabeled, ids[6]]  # tasks without a current-version score sort last
    assert [t["id"] for t in ls_client.iter_tasks(pid, view=vid, page_size=3)] == expected
    assert ls_client.ordered_task_ids(pid, UNLABELED_FILTER, SCORE_ORDER) == expected

    assert ls_client.ensure_view(pid, "Most uncertain first", UNLABELED_FILTER, SCORE_ORDER) == vid
    assert ls_client.ensure_view(pid, "Most uncertain first", UNLABELED_FILTER, ["-tasks:predictions_score"]) == vid
    titles = [v["data"]["title"] for v in ls_client.list_views(pid)]
    assert titles.count("Most uncertain first") == 1
    assert next(v for v in ls_client.list_views(pid) if v["id"] == vid)["data"][VIEW_MARK] is True
    tab = {"type": "list", "target": "tasks", "title": "Most uncertain first", "filters": UNLABELED_FILTER,
           "ordering": ["tasks:id"]}
    theirs = int(ls_client.ls.views.create(project=pid, data=tab).id)
    assert ls_client.ensure_view(pid, "Most uncertain first", UNLABELED_FILTER, ["-tasks:predictions_score"]) == vid
    mine = next(v for v in ls_client.list_views(pid) if v["id"] == theirs)["data"]
    assert mine["ordering"] == ["tasks:id"] and VIEW_MARK not in mine, "a team's tab of the same title is left alone"
    assert [t["id"] for t in ls_client.iter_tasks(pid, view=vid)] == [*unlabeled[::-1], ids[6]]

    assert ls_client.delete_predictions(pid, ["v1"]) == 7
    assert ls_client.delete_predictions(pid, ["v1"]) == 0
    assert ls_client.model_versions(pid) == {"v2": 6}
    assert ls_client.delete_predictions(pid, ["v2"]) == 6
    assert ls_client.model_versions(pid) == {}, "deleting the project's own version clears it, so none is listed"
    assert all(t["predictions"] == [] for t in ls_client.iter_tasks(pid))


def test_an_import_naming_a_deleted_task_is_refused_whole_with_400(ls_client: LabelStudioClient,
                                                                   digits_project: int) -> None:
    """What the push relies on when a head task was deleted before the mirror heard of it."""
    pid = digits_project
    ids = import_n(ls_client, pid, 5)
    ls_client.ls.tasks.delete(id=ids[2])
    rows = [{"task": t, "model_version": "v1", "score": 0.1 * i, "result": choice("1")} for i, t in enumerate(ids)]
    with pytest.raises(LabelStudioError) as refused:
        ls_client.import_predictions(pid, rows)
    assert refused.value.status_code == 400 and not refused.value.retryable
    assert ls_client.model_versions(pid) == {}, "by default nothing of the request is imported"
    assert [t["id"] for t in ls_client.tasks_by_id(pid, ids)] == [t for t in ids if t != ids[2]]
    ls_client.import_predictions(pid, [rows[0], rows[1], {**rows[4], "model_version": "v2"}])
    found = ls_client.prediction_versions(pid, ids)  # what a retried push reads
    assert found == {ids[0]: {"v1"}, ids[1]: {"v1"}, ids[3]: set(), ids[4]: {"v2"}}, "the deleted task is not there"


def test_the_writer_claim_lives_in_the_backend_s_view_and_outlasts_its_updates(ls_client: LabelStudioClient,
                                                                               digits_project: int) -> None:
    from service.writer_claim import Claim, Writer, claim_writer

    pid, view = digits_project, ("Most uncertain first", UNLABELED_FILTER, SCORE_ORDER)
    assert claim_writer(ls_client, pid, Writer("first"), 3600, 1000.0, view).other is None
    assert claim_writer(ls_client, pid, Writer("second"), 3600, 1010.0, view).other == Claim("first", 1000.0)
    ls_client.ensure_view(pid, *view)  # every push's own step: the claim stays
    assert Claim.read(ls_client, pid) == Claim("first", 1000.0)
    turn = claim_writer(ls_client, pid, Writer("second"), 3600, 4601.0, view)
    assert turn.other is None and turn.replaced == Claim("first", 1000.0), "an hour without a renewal: taken over"
    assert Claim.read(ls_client, pid) == Claim("second", 4601.0)
    assert sum(bool((v.get("data") or {}).get(VIEW_MARK)) for v in ls_client.list_views(pid)) == 1


def test_bulk_mark_sets_and_clears_only_its_key(ls_client: LabelStudioClient, digits_project: int) -> None:
    ids = import_n(ls_client, digits_project, 5, meta={"origin": "import"})
    assert ls_client.bulk_mark(digits_project, {ids[0]: {"rank": 1}, ids[1]: {"rank": 2}}) == 2
    assert ls_client.bulk_mark(digits_project, {ids[1]: {"rank": 1}, ids[2]: {"rank": 2}}) == 3
    assert ls_client.bulk_mark(digits_project, {ids[1]: {"rank": 1}, ids[2]: {"rank": 2}}) == 0
    meta = {t["id"]: t["meta"] for t in ls_client.iter_tasks(digits_project, fields="task_only")}
    assert meta[ids[0]] == {"origin": "import"}
    assert meta[ids[1]] == {"origin": "import", "sae": {"rank": 1}}
    assert meta[ids[2]] == {"origin": "import", "sae": {"rank": 2}}
    assert meta[ids[3]] == meta[ids[4]] == {"origin": "import"}

    # knowing which tasks carry a mark, only those and the new ones are read
    assert sorted(t["id"] for t in ls_client.tasks_by_id(digits_project, [ids[4], ids[1], 10**9])) == [ids[1], ids[4]]
    assert ls_client.bulk_mark(digits_project, {ids[3]: {"rank": 1}}, previous={ids[1], ids[2]}) == 3
    meta = {t["id"]: t["meta"] for t in ls_client.iter_tasks(digits_project, fields="task_only")}
    assert [i for i in ids if "sae" in meta[i]] == [ids[3]] and meta[ids[3]]["origin"] == "import"
    assert ls_client.bulk_mark(digits_project, {}, previous={ids[3]}) == 1

    # keeping existing marks writes only the tasks that enter or leave the set
    assert ls_client.bulk_mark(digits_project, {ids[0]: {"rank": 1}, ids[1]: {"rank": 2}}, previous=set()) == 2
    assert ls_client.bulk_mark(digits_project, {ids[1]: {"rank": 1}, ids[2]: {"rank": 2}},
                               previous={ids[0], ids[1]}, keep_existing=True) == 2
    meta = {t["id"]: t["meta"] for t in ls_client.iter_tasks(digits_project, fields="task_only")}
    assert "sae" not in meta[ids[0]] and meta[ids[1]]["sae"] == {"rank": 2} and meta[ids[2]]["sae"] == {"rank": 2}

    assert ls_client.update_task_meta(ids[3], {"note": 1}) == {"origin": "import", "note": 1}
    assert ls_client.update_task_meta(ids[3], {"note": None}) == {"origin": "import"}


def test_queue_project_copies_once_and_reports_labels(ls_client: LabelStudioClient, digits_project: int) -> None:
    src = digits_project
    ids = import_n(ls_client, src, 5)
    tasks = {t["id"]: t for t in ls_client.iter_tasks(src)}
    queue = ls_client.ensure_queue_project(src)
    assert ls_client.ensure_queue_project(src) == queue
    q = ls_client.get_project(queue)
    assert q["label_config"] == DIGITS_CONFIG and q["title"].endswith("uncertain queue") and len(q["title"]) <= 50

    first = ls_client.copy_to_queue(queue, [tasks[t] for t in ids[:3]])
    assert sorted(first) == ids[:3]
    assert ls_client.copy_to_queue(queue, [tasks[t] for t in ids[1:]], first) == ls_client.queue_copies(queue)
    assert ls_client.copy_to_queue(queue, [tasks[t] for t in ids]) == ls_client.queue_copies(queue)
    copies = {t["meta"]["source_task"]: t for t in ls_client.iter_tasks(queue)}
    assert sorted(copies) == ids
    assert ls_client.queue_copies(queue) == {s: t["id"] for s, t in copies.items()}, "each copy's id, as imported"
    assert all(copies[t]["data"] == tasks[t]["data"] for t in ids)

    ls_client.create_annotation(copies[ids[0]]["id"], choice("7"))
    ls_client.create_annotation(copies[ids[3]]["id"], choice("3"))
    labels = {src: (qid, anns) for src, qid, anns in ls_client.queue_labels(queue)}
    assert sorted(labels) == [ids[0], ids[3]]
    worked = {copies[ids[0]]["id"], copies[ids[3]]["id"]}
    assert ls_client.read_queue(queue) == (ls_client.queue_copies(queue), worked), \
        "the queue's read names the copies someone labeled"
    assert labels[ids[3]][0] == copies[ids[3]]["id"] and labels[ids[3]][1][0]["result"] == choice("3")
    at = ls_client.last_saved(queue)
    ls_client.delete_annotation(labels[ids[0]][1][0]["id"])
    assert list(ls_client.queue_labels(queue, updated_after=at)) == [(ids[0], copies[ids[0]]["id"], [])], \
        "a queue task saved since and left without labels is named, with none"

    other = ls_client.create_project("not a queue", '<View><Text name="t" value="$text"/></View>')
    assert ls_client.ensure_queue_project(src, known=other) == queue, "an unrelated project at that id is not taken"
    ls_client.ls.projects.update(id=queue, title="Next up", description="our own words")
    assert ls_client.ensure_queue_project(src, known=queue) == queue, "a queue the team edited is kept"
    edited = DIGITS_CONFIG.replace('<Choice value="9"/>', '<Choice value="9"/><Choice value="x"/>')
    ls_client.ls.projects.update(id=src, label_config=edited)
    assert ls_client.ensure_queue_project(src, known=queue) == queue, "and kept when the source's config changes"
    assert ls_client.match_label_config(queue, src) and ls_client.get_project(queue)["label_config"] == edited
    assert not ls_client.match_label_config(queue, src), "as Label Studio stored it: not written again"
    ls_client.ls.projects.delete(id=queue)
    again = ls_client.ensure_queue_project(src, known=queue)
    assert again != queue and ls_client.ensure_queue_project(src) == again, "a deleted one is made again, once"


def test_delete_untouched_tasks_keeps_every_task_someone_worked_on(ls_client: LabelStudioClient,
                                                                    digits_project: int) -> None:
    ids = import_n(ls_client, digits_project, 6)
    labeled, skipped, drafted, *untouched = ids
    ls_client.create_annotation(labeled, choice("7"))
    ls_client.ls.annotations.create(id=skipped, result=[], was_cancelled=True)
    ls_client._request("POST", f"/api/tasks/{drafted}/drafts", json={"result": choice("1"), "lead_time": 1.0})
    another = ls_client.create_project("another", DIGITS_CONFIG)
    other = import_n(ls_client, another, 1)

    assert ls_client.delete_untouched_tasks(digits_project, [*ids, *other], chunk=2) == 3
    left = [t["id"] for t in ls_client.iter_tasks(digits_project, fields="task_only")]
    assert left == [labeled, skipped, drafted], "a label, a skip and a draft each keep their task"
    assert [t["id"] for t in ls_client.iter_tasks(another)] == other, "another project's task is not the action's"
    assert ls_client.delete_untouched_tasks(digits_project, untouched) == 0, "deleted once"


def test_errors_are_one_type_and_never_leak_the_key(label_studio: LabelStudioServer) -> None:
    secret = "do-not-leak-0123456789abcdef0123456789"

    def text(e: LabelStudioError) -> str:
        return str(e) + repr(e) + "".join(traceback.format_exception(e))

    down = LabelStudioClient(f"http://127.0.0.1:{free_port()}", secret, timeout=5)
    with pytest.raises(LabelStudioError) as err:
        down.get_project(1)
    assert err.value.retryable is True and isinstance(err.value, RuntimeError)
    assert secret not in text(err.value)
    with pytest.raises(LabelStudioError) as err:
        down.create_project("x", DIGITS_CONFIG)
    assert err.value.retryable is True and secret not in text(err.value)

    with pytest.raises(LabelStudioError) as err:
        LabelStudioClient(label_studio.url, secret).labeled_count(1)
    assert err.value.retryable is False and err.value.status_code == 401 and secret not in text(err.value)

    good = LabelStudioClient(label_studio.url, label_studio.token)
    with pytest.raises(LabelStudioError) as err:
        good.get_project(987654)
    assert err.value.retryable is False and err.value.status_code == 404
    with pytest.raises(LabelStudioError) as err:
        list(good.iter_tasks(987654))
    assert err.value.status_code == 404 and label_studio.token not in text(err.value)
    pid = good.create_project("no backend", DIGITS_CONFIG)
    with pytest.raises(LabelStudioError) as err:
        good.connect_ml_backend(pid, f"http://127.0.0.1:{free_port()}")
    assert err.value.status_code == 400 and not err.value.retryable
    assert good.list_webhooks(pid) == []


def test_busy_port_is_refused_before_starting(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        server = LabelStudioServer(tmp_path, port=s.getsockname()[1])
        with pytest.raises(RuntimeError, match="in use"):
            server.start()
    assert not server.running


def test_restart_keeps_url_and_data(label_studio: LabelStudioServer, ls_client: LabelStudioClient,
                                    digits_project: int) -> None:
    url = label_studio.url
    ids = import_n(ls_client, digits_project, 2)
    label_studio.restart()
    assert label_studio.url == url
    assert [t["id"] for t in ls_client.iter_tasks(digits_project)] == ids


def test_a_webhook_is_registered_once_with_its_payload(ls_client: LabelStudioClient, digits_project: int) -> None:
    url = "http://127.0.0.1:9/webhook"
    actions = ["ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"]
    first = ls_client.ensure_webhook(digits_project, url, actions, {"Authorization": "Basic YW5uOnB3"})
    auth = {"Authorization": "Basic YW5uOnB3"}
    assert ls_client.ensure_webhook(digits_project, url + "/", actions, auth) == first, "found again by its URL"
    (hook,) = [w for w in ls_client.list_webhooks(digits_project) if w["url"] == url]
    assert hook["send_payload"] is True and hook["send_for_all_actions"] is False
    assert sorted(hook["actions"]) == sorted(actions) and hook["headers"] == {"Authorization": "Basic YW5uOnB3"}
    assert ls_client.ensure_webhook(digits_project, url, actions, {"Authorization": "Basic bmV3"}) == first
    (hook,) = [w for w in ls_client.list_webhooks(digits_project) if w["url"] == url]
    assert hook["headers"] == {"Authorization": "Basic bmV3"}, "a changed password reaches the webhook"
    model_hook = "http://127.0.0.1:9/model/webhook"  # as Label Studio makes it for a connected model: no headers
    made = ls_client.ls.webhooks.create(project=digits_project, url=model_hook, send_payload=True,
                                        send_for_all_actions=True)
    assert ls_client.authorize_webhook(digits_project, model_hook, auth)
    (hook,) = [w for w in ls_client.list_webhooks(digits_project) if w["id"] == made.id]
    assert hook["headers"] == auth and hook["send_for_all_actions"] is True, "only the header changes"
    assert not ls_client.authorize_webhook(digits_project, model_hook, auth), "and only once"
    assert not ls_client.authorize_webhook(digits_project, "http://127.0.0.1:9/other/webhook", auth)


def test_updated_after_keeps_the_tasks_saved_since_the_last_save_seen(ls_client: LabelStudioClient,
                                                                      digits_project: int) -> None:
    ids = import_n(ls_client, digits_project, 6)
    first = ls_client.create_annotation(ids[0], choice("1"))
    second = ls_client.create_annotation(ids[1], choice("2"))
    at = ls_client.last_saved(digits_project)
    assert at is not None and at.tzinfo is not None
    assert at == max(parse_time(t["updated_at"]) for t in ls_client.iter_tasks(digits_project))
    ls_client.ls.annotations.update(id=first, result=choice("7"))  # a correction
    ls_client.create_annotation(ids[2], choice("3"))  # a new label
    ls_client.delete_annotation(second)  # an annotation deleted on its own saves its task too
    assert [t["id"] for t in ls_client.iter_tasks(digits_project, labeled=True, updated_after=at)] == \
        [ids[0], ids[2]]
    assert [t["id"] for t in ls_client.iter_tasks(digits_project, updated_after=at)] == ids[:3]
    assert list(ls_client.iter_tasks(digits_project, updated_after=ls_client.last_saved(digits_project))) == []
    assert ls_client.last_saved(ls_client.create_project("empty project", DIGITS_CONFIG)) is None


def test_a_mirror_poll_reads_only_the_tasks_saved_since_the_last_poll(
        ls_client: LabelStudioClient, digits_project: int, label_studio: LabelStudioServer, tmp_path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.label_config import parse_label_config
    from connectors.task_data import DataFetcher
    from service import mirror as mirror_module

    monkeypatch.setattr(mirror_module, "OVERLAP_SECONDS", 0.0)  # no save here lands late
    files, _ = digits_pngs(8)
    ids = ls_client.upload_files(digits_project, files)
    first = ls_client.create_annotation(ids[0], choice("1"))
    for tid in ids[1:4]:
        ls_client.create_annotation(tid, choice("2"))
    config, fetcher = parse_label_config(DIGITS_CONFIG), DataFetcher(label_studio.url, label_studio.token)
    m = mirror_module.ProjectMirror(tmp_path, digits_project)
    m.ingest(ls_client, config, fetcher)
    read: list[int] = []
    real = ls_client.iter_tasks

    def counted(*a, **kw):
        for t in real(*a, **kw):
            if kw.get("labeled"):
                read.append(t["id"])
            yield t

    monkeypatch.setattr(ls_client, "iter_tasks", counted)
    ls_client.ls.annotations.update(id=first, result=choice("7"))  # their webhooks lost
    ls_client.create_annotation(ids[4], choice("3"))
    assert m.reconcile(ls_client, config, fetcher, 3600)["labels"] == "changed"
    assert sorted(read) == [ids[0], ids[4]] and m.labels(config)[0][ids[0]] == 7
    read.clear()
    ls_client.ls.actions.create(id="delete_tasks_annotations", project=digits_project,
                                selected_items={"all": False, "included": [ids[1]]})  # the Data Manager's action
    polls = [m.reconcile(ls_client, config, fetcher, 3600)["labels"]]
    if ids[1] in m.labels(config)[0]:  # stamped in the server's local time: behind, where that is west of UTC
        polls.append(m.reconcile(ls_client, config, fetcher, 3600)["labels"])
    assert ids[1] not in m.labels(config)[0] and polls in (["changed"], ["changed", "all"]), \
        "read among the saved tasks left without annotations, else by the count at the second poll"
    read.clear()
    assert m.reconcile(ls_client, config, fetcher, 3600)["labels"] is False and read == []
    (extra,) = ls_client.upload_files(digits_project, digits_pngs(9)[0][8:])  # its webhook lost
    done = m.reconcile(ls_client, config, fetcher, 3600)
    assert done["tasks"] == "changed" and extra in m.store, "a new task is among the saved ones"
    ls_client.ls.tasks.delete(id=ids[7])
    done = m.reconcile(ls_client, config, fetcher, 3600)
    assert done["tasks"] == "all" and ids[7] not in m.store, "a deleted one only shows in the task count"
    with sqlite3.connect(label_studio.data_dir / "label_studio.sqlite3") as db:  # an edit that saves no task
        db.execute("DELETE FROM task_completion WHERE task_id = ?", (ids[2],))
    assert m.reconcile(ls_client, config, fetcher, 3600)["labels"] == "changed" and ids[2] in m.labels(config)[0], \
        "one difference in the counts may be a webhook on its way"
    assert m.reconcile(ls_client, config, fetcher, 3600)["labels"] == "all" and ids[2] not in m.labels(config)[0]
