"""LabelStudioClient's paging on a stand-in server: pages a server caps lower, and deletions mid-scan."""

from __future__ import annotations

import json

import pytest

from connectors.label_studio import LABELED_FILTER, LabelStudioClient


class PagedServer:
    """Answers ``/api/tasks/`` pages as Label Studio does, with page sizes capped at ``cap``."""

    def __init__(self, ids: list[int], cap: int) -> None:
        self.ids, self.cap, self.requests = list(ids), cap, []

    def page(self, params: dict, first: bool) -> tuple[list[dict], int]:
        self.requests.append(params)
        query = json.loads(params.get("query", "{}"))
        after = [i["value"] for i in query.get("filters", {}).get("items", []) if i["filter"] == "filter:tasks:id"]
        match = [t for t in self.ids if not after or t > after[0]]
        size = min(int(params["page_size"]), self.cap)
        start = (int(params["page"]) - 1) * size
        return [{"id": t} for t in match[start:start + size]], len(match)


@pytest.fixture
def client() -> LabelStudioClient:
    return LabelStudioClient("http://127.0.0.1:1", "key")


def test_a_server_that_caps_pages_lower_is_followed_to_the_end(client, monkeypatch) -> None:
    server = PagedServer(list(range(1, 11)), cap=3)
    monkeypatch.setattr(client, "_page_retrying", server.page)
    assert [t["id"] for t in client.iter_tasks(1, page_size=500, view=7)] == list(range(1, 11))
    assert [r["page"] for r in server.requests] == [1, 2, 3, 4]
    server.requests.clear()
    assert [t["id"] for t in client.iter_tasks(1, page_size=500)] == list(range(1, 11)), "in id order as well"
    assert len(server.requests) == 4


def test_id_order_pages_after_the_last_id_so_deletions_cannot_hide_tasks(client, monkeypatch) -> None:
    server = PagedServer(list(range(1, 13)), cap=500)
    monkeypatch.setattr(client, "_page_retrying", server.page)
    seen = []
    for t in client.iter_tasks(1, page_size=4, labeled=True):
        seen.append(t["id"])
        if len(seen) == 4:
            server.ids = server.ids[3:]  # three tasks of the page already read are deleted
    assert seen == list(range(1, 13))
    items = json.loads(server.requests[1]["query"])["filters"]["items"]
    assert items[0] == LABELED_FILTER["items"][0], "the caller's filter stays, the id bound is added"
    assert items[1] == {"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": 4}


def test_a_mark_is_written_over_meta_read_again_just_before(client, monkeypatch) -> None:
    stale = {1: {}, 2: {"sae": {"rank": 9}}, 3: {}, 4: {"sae": {"rank": 4}}}
    now = {1: {"note": "added by a reviewer meanwhile"}, 2: {"sae": {"rank": 9}, "note": "kept"},
           3: {"sae": {"rank": 2}}, 4: {"sae": {"rank": 4}}}
    reads, patches = [], []

    def tasks_by_id(pid, ids):
        ids = sorted(ids)
        reads.append(ids)
        return iter([{"id": t, "meta": (now if len(reads) > 1 else stale)[t]} for t in ids])

    monkeypatch.setattr(client, "tasks_by_id", tasks_by_id)
    monkeypatch.setattr(client, "update_task_meta", lambda tid, meta, merge=True: patches.append((tid, meta)))
    assert client.bulk_mark(1, {1: {"rank": 1}, 3: {"rank": 2}, 4: {"rank": 4}}, previous={2}) == 2
    assert reads == [[1, 2, 3, 4], [1, 2, 3]], "the three that differed are read again, together, before writing"
    assert patches == [(1, {"note": "added by a reviewer meanwhile", "sae": {"rank": 1}}), (2, {"note": "kept"})]


def test_times_go_to_label_studio_in_utc_and_come_back_aware() -> None:
    from datetime import datetime, timedelta, timezone

    from connectors.label_studio import _updated_after, parse_time

    two_hours_east = datetime(2026, 3, 1, 12, 30, 5, 250000, tzinfo=timezone(timedelta(hours=2)))
    assert _updated_after(two_hours_east)["value"] == "2026-03-01T10:30:05.250000Z"
    assert _updated_after(datetime(2026, 3, 1, 10, 30))["value"] == "2026-03-01T10:30:00.000000Z", "naive: UTC"
    back = parse_time("2026-03-01T10:30:05.250000Z")
    assert back == two_hours_east and back.tzinfo is not None
    assert parse_time("2026-03-01T10:30:05") == datetime(2026, 3, 1, 10, 30, 5, tzinfo=timezone.utc)
    assert parse_time(None) is None and parse_time("not a time") is None


def test_updated_after_is_refused_where_it_would_widen_the_filters(client) -> None:
    from datetime import datetime, timezone

    either = {"conjunction": "or", "items": [{"filter": "filter:tasks:id", "operator": "equal", "type": "Number",
                                              "value": 3}]}
    with pytest.raises(ValueError, match="'and'"):
        next(client.iter_tasks(1, filters=either, updated_after=datetime.now(timezone.utc)))


def test_a_queue_task_whose_source_is_not_a_task_id_is_passed_over(client, monkeypatch) -> None:
    label = [{"id": 9, "result": []}]
    tasks = [{"id": 1, "meta": {"source_task": 50}, "annotations": label},
             {"id": 2, "meta": {"source_task": "task-5"}, "annotations": label},
             {"id": 3, "meta": {"source_task": [5]}, "annotations": label},
             {"id": 4, "meta": ["not", "an", "object"], "annotations": label},
             {"id": 5, "meta": {"source_task": "51"}, "annotations": label}]
    monkeypatch.setattr(client, "labeled_tasks", lambda pid, updated_after=None: iter(tasks))
    assert [(s, q) for s, q, _ in client.queue_labels(77)] == [(50, 1), (51, 5)]


def _answering(handler) -> LabelStudioClient:
    """The client over a stand-in Label Studio that answers every request with ``handler``."""
    import httpx

    client = LabelStudioClient("http://ls.test", "secret-key-0123456789")
    client._http._transport = httpx.MockTransport(handler)
    return client


def test_tasks_by_id_fits_a_reverse_proxy_s_request_line_and_keeps_only_those_tasks() -> None:
    """nginx refuses request lines over 8 KB (414): 100 ids as filter items took about 14 KB."""
    import httpx

    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(len(str(request.url)))
        query = json.loads(request.url.params["query"])
        picked = query["selectedItems"]
        after = [f["value"] for f in query["filters"]["items"] if f["operator"] == "greater"]
        ids = [i for i in picked["included"] if not after or i > after[0]] if picked["all"] is False else []
        return httpx.Response(200, json={"tasks": [{"id": i} for i in ids], "total": len(ids)})

    client = _answering(handler)
    ids = list(range(1_000_000, 1_000_150))
    assert [t["id"] for t in client.tasks_by_id(1, ids[::-1])] == ids
    assert len(seen) == 2 and max(seen) < 8192, seen
    assert list(client.iter_tasks(1, ids=[])) == [] and len(seen) == 2, "an empty selection is all tasks to it"


def test_rows_label_studio_dropped_from_an_import_are_not_counted_as_written() -> None:
    """Label Studio 1.23 skips predictions it finds invalid (a class renamed since) and says how many it kept."""
    import httpx

    client = _answering(lambda request: httpx.Response(201, json={"created": 0}))
    rows = [{"task": 1, "model_version": "sae-v3", "score": 0.4, "result": []}]
    assert client.import_predictions(1, rows) == 0


@pytest.mark.parametrize("body", [b"[]", b'"ok"', b"null"])
def test_an_answer_of_another_shape_is_a_label_studio_error(body: bytes) -> None:
    """A wrong LABEL_STUDIO_URL or a proxy's page: one error type, as every caller expects."""
    import httpx

    from connectors.label_studio import LabelStudioError

    client = _answering(lambda request: httpx.Response(200, content=body,
                                                       headers={"content-type": "application/json"}))
    for call in (lambda: client.labeled_count(1), lambda: client.create_project("abc", "<View/>"),
                 lambda: client.delete_predictions(1, ["sae-v1"])):
        with pytest.raises(LabelStudioError, match=r"unexpected answer|Label Studio"):
            call()


def test_a_personal_access_token_is_refreshed_under_label_studio_s_own_path(monkeypatch) -> None:
    """Behind a proxy at a subpath (https://host/label-studio), the refresh must not go to the host's root."""
    import time

    import httpx
    import jwt

    refresh = jwt.encode({"token_type": "refresh", "exp": int(time.time()) + 3600, "jti": "r"}, "k" * 32, "HS256")
    access = jwt.encode({"token_type": "access", "exp": int(time.time()) + 300, "jti": "a"}, "k" * 32, "HS256")
    asked = []

    def answer(self, method, url, **kwargs):
        asked.append(str(self._merge_url(url)))
        body = {"access": access} if "token/refresh" in str(url) else {"id": 1}
        return httpx.Response(200, json=body, request=httpx.Request(method, self._merge_url(url)))

    monkeypatch.setattr(httpx.Client, "request", answer)
    with LabelStudioClient("http://ls.example/label-studio", refresh) as c:
        assert c.get_project(1) == {"id": 1}
    assert asked == ["http://ls.example/label-studio/api/token/refresh/",
                     "http://ls.example/label-studio/api/projects/1/"]
