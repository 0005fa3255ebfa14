"""The backend's client for the Label Studio API (measured against LS 1.23.2, SDK 2.1.2).

Typed calls go through ``label_studio_sdk.LabelStudio``; the task list, imports and a few
undocumented endpoints go over plain httpx with the SDK's auth headers (so legacy tokens and
personal access tokens both work). Every failure surfaces as :class:`LabelStudioError`, with
``retryable`` set for connection errors, timeouts, 429 and 5xx so callers can back off and
retry; its message never carries the API key. The SDK's own retries are off: retrying is the
caller's decision.
"""

from __future__ import annotations

import functools
import itertools
import json
import mimetypes
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from label_studio_sdk.core.parse_error import ParsingError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from connectors.task_data import temporary_status

T = TypeVar("T")

LABELED_FILTER = {"conjunction": "and", "items": [
    {"filter": "filter:tasks:total_annotations", "operator": "greater", "type": "Number", "value": 0}]}
UNLABELED_FILTER = {"conjunction": "and", "items": [
    {"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0}]}
UNTOUCHED_FILTER = {"conjunction": "and", "items": [  # no annotation, no skip, no draft: no one's work is on it
    {"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0},
    {"filter": "filter:tasks:cancelled_annotations", "operator": "equal", "type": "Number", "value": 0},
    {"filter": "filter:tasks:draft_exists", "operator": "equal", "type": "Boolean", "value": False}]}
_QUEUE_MARK = re.compile(r"\[sae-backend queue of project (\d+)\]")
_MAX_FILES_PER_REQUEST = 100  # Django's DATA_UPLOAD_MAX_NUMBER_FILES; more is a 500
MAX_PAGE = 500
REREAD = 10  # marks whose tasks are read again in one request just before their PATCHes (~1 s of them)
VIEW_MARK = "sae_backend"  # in the data of the Data Manager view this backend keeps: it touches no other view
_MAX_TITLE = 50  # LS refuses project titles outside 3..50 characters


class LabelStudioError(RuntimeError):
    """Any failed call to Label Studio; ``retryable`` says whether trying again later can help."""

    def __init__(self, message: str, retryable: bool, status_code: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status_code = status_code


def marked_views(views: list[dict]) -> list[dict]:
    """This backend's views among a project's, oldest first: ``ensure_view`` keeps the first and deletes the rest."""
    return sorted((v for v in views if (v.get("data") or {}).get(VIEW_MARK)), key=lambda v: int(v["id"]))


def retrying(attempts: int, multiplier: float = 0.5, max_wait: float = 30.0) -> Retrying:
    """The one retry policy for Label Studio calls: transient failures only (``retryable``: connection
    errors, timeouts, 429, 5xx such as SQLite's "database is locked"), exponential backoff, then the
    last error is raised as it is. Use as ``retrying(n)(fn, *args)``."""
    return Retrying(stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=multiplier, max=max_wait),
                    retry=retry_if_exception(lambda e: isinstance(e, LabelStudioError) and e.retryable),
                    reraise=True)


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        detail, errors = body.get("detail"), body.get("validation_errors")
        body = f"{detail} {json.dumps(errors, default=str)}" if detail and errors else detail or errors or body
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return text[:300]


def _wrap(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn SDK and httpx failures into LabelStudioError, scrubbing the key, dropping the chained cause."""

    @functools.wraps(fn)
    def inner(self: LabelStudioClient, *args: Any, **kwargs: Any) -> T:
        name = fn.__name__.lstrip("_")
        try:
            return fn(self, *args, **kwargs)
        except LabelStudioError:
            raise
        except ApiError as e:
            err = LabelStudioError(self._scrub(f"{name}: Label Studio answered HTTP {e.status_code}: "
                                               f"{_detail(e.body)}"), temporary_status(e.status_code), e.status_code)
        except httpx.HTTPStatusError as e:
            code = e.response.status_code
            try:
                body: Any = e.response.json()
            except ValueError:
                body = e.response.text
            err = LabelStudioError(self._scrub(f"{name}: Label Studio answered HTTP {code}: {_detail(body)}"),
                                   temporary_status(code), code)
        except (httpx.TransportError, OSError) as e:
            err = LabelStudioError(self._scrub(f"{name}: cannot reach Label Studio at {self.url} "
                                               f"({type(e).__name__}: {e})"), retryable=True)
        except (ValueError, AttributeError, TypeError, KeyError, ParsingError, httpx.DecodingError,
                httpx.TooManyRedirects) as e:  # an answer of another shape: a wrong URL, a proxy's page
            err = LabelStudioError(self._scrub(f"{name}: unexpected answer from Label Studio "
                                               f"({type(e).__name__}: {str(e)[:200]})"), retryable=False)
        raise err from None

    return inner


def parse_time(value: object) -> datetime | None:
    """A Label Studio timestamp (``2026-01-02T03:04:05.678901Z``) as an aware datetime; None when it is not one."""
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))  # Python 3.10 reads no "Z"
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _updated_after(at: datetime) -> dict:
    """A Data Manager filter item; Label Studio reads its value as UTC without a zone."""
    utc = at.astimezone(timezone.utc) if at.tzinfo else at
    return {"filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime",
            "value": utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


def _source_task(meta: object) -> int | None:
    """The source task a queue task copies; None for a task a person added or edited there, not a copy this
    backend made (its label is not the source's)."""
    src = meta.get("source_task") if isinstance(meta, dict) else None
    try:
        return None if src is None or isinstance(src, bool) else int(src)
    except (TypeError, ValueError):
        return None


def _dump(obj: Any) -> dict:
    if isinstance(obj, dict):
        return obj
    return obj.model_dump(mode="json") if hasattr(obj, "model_dump") else dict(obj)


class LabelStudioClient:
    """One Label Studio server, one API key. Cheap to create; ``close()`` frees the connections."""

    def __init__(self, url: str, api_key: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._key = api_key
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        try:
            # the closing slash keeps a subpath (https://host/label-studio/) in the SDK's token refresh, which
            # joins its path the way a browser resolves a link; its other calls strip it
            self.ls = LabelStudio(base_url=self.url + "/", api_key=api_key, timeout=timeout, max_retries=0,
                                  httpx_client=self._http)
        except ApiError as e:
            raise LabelStudioError(self._scrub(f"api key refused: {_detail(e.body)}"), False, e.status_code) from None

    def __repr__(self) -> str:
        return f"LabelStudioClient({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A raw call with the SDK's auth header (it refreshes personal access tokens when needed)."""
        headers = dict(self.ls._client_wrapper.get_headers())
        r = self._http.request(method, path, headers=headers, **kwargs)
        r.raise_for_status()
        return r

    # -- projects ---------------------------------------------------------------------------------

    @_wrap
    def get_project(self, project_id: int) -> dict:
        """The project as JSON: id, title, description, label_config, model_version, task_number,
        num_tasks_with_annotations, ..."""
        return self._request("GET", f"/api/projects/{int(project_id)}/").json()

    def last_saved(self, project_id: int) -> datetime | None:
        """When Label Studio last saved a task of the project (None: no tasks), as it stamps ``updated_at``.

        A later ``iter_tasks(updated_after=...)`` compares with those same stamps, not with a clock of this machine or
        of a proxy in between (which sets the ``Date`` header). One request; tasks have no index on the time, so it is
        one pass over the project's rows inside Label Studio, not a transfer of them.
        """
        for t in self.iter_tasks(project_id, page_size=1, filters={"conjunction": "and", "items": []},
                                 ordering=["-tasks:updated_at"], fields="task_only"):
            return parse_time(t.get("updated_at"))
        return None

    @_wrap
    def labeled_count(self, project_id: int) -> int:
        """Tasks with at least one (not skipped) annotation: one cheap query, for polling."""
        return int(self.get_project(project_id).get("num_tasks_with_annotations") or 0)

    @_wrap
    def list_projects(self) -> list[dict]:
        return [_dump(p) for p in self.ls.projects.list(page_size=100)]

    @_wrap
    def create_project(self, title: str, label_config: str, description: str = "") -> int:
        """LS wants a title of 3 to 50 characters (a 400 otherwise)."""
        return int(self.ls.projects.create(title=title, label_config=label_config, description=description).id)

    @_wrap
    def set_model_version(self, project_id: int, version: str) -> None:
        """Ordering by ``tasks:predictions_score`` only averages predictions of the project's model version."""
        self.ls.projects.update(id=int(project_id), model_version=version)

    # -- tasks ------------------------------------------------------------------------------------

    @_wrap
    def _page(self, params: dict[str, Any], first: bool) -> tuple[list[dict], int]:
        try:
            body = self._request("GET", "/api/tasks/", params=params).json()
        except httpx.HTTPStatusError as e:
            # Past the last page LS answers 404 "Invalid page." (tasks deleted while we paged).
            if e.response.status_code == 404 and not first:
                return [], 0
            raise
        return body.get("tasks") or [], int(body.get("total") or 0)

    def _page_retrying(self, params: dict[str, Any], first: bool, attempts: int = 3) -> tuple[list[dict], int]:
        """Re-fetch one page on a transient error, so a long stream does not restart from the top."""
        return retrying(attempts)(self._page, params, first)

    def iter_tasks(self, project_id: int, page_size: int = 500, labeled: bool | None = None, *,
                   view: int | None = None, filters: dict | None = None, ordering: list[str] | None = None,
                   fields: str = "all", updated_after: datetime | None = None,
                   ids: Sequence[int] | None = None) -> Iterator[dict]:
        """Every task (``id``, ``data``, ``meta``, full ``annotations`` and ``predictions``), one page at a time.

        ``labeled`` filters on the Data Manager's ``total_annotations`` (``only_annotated`` is silently
        ignored by the server); tasks whose only annotations are skips count as unlabeled. ``view``
        lists a saved view's tasks in its order; ``filters``/``ordering`` do the same ad hoc.
        ``fields="task_only"`` leaves out annotations and predictions (much lighter). ``ids`` keeps these tasks
        (the Data Manager's selected items: about 8 characters an id in the URL, where a filter item per id takes 140
        and 100 of them pass a reverse proxy's 8 KB request line). ``updated_after``
        keeps the tasks Label Studio saved later (an annotation saved or deleted one by one, a prediction or a
        meta change saves its task; an edit in the database does not). Pages are
        capped at 500 tasks: on SQLite, Label Studio 1.23 answers 1,000-task pages with HTTP 500
        ("Expression tree is too large"); a server that caps them lower is followed.

        In id order (the default) pages follow the last id seen (``id > last``), not page numbers,
        so tasks deleted or labeled during a long scan cannot shift a later page past tasks
        that were never read.
        """
        page_size = min(int(page_size), MAX_PAGE)
        if labeled is not None:
            filters = LABELED_FILTER if labeled else UNLABELED_FILTER
        filters = filters or {"conjunction": "and", "items": []}
        if updated_after is not None:
            if filters.get("conjunction", "and") != "and" and filters.get("items"):
                raise ValueError("updated_after narrows only filters joined by 'and' (with 'or' it would widen them)")
            filters = {**filters, "items": [*filters.get("items", []), _updated_after(updated_after)]}
        ordering = ordering or ["tasks:id"]
        params: dict[str, Any] = {"project": int(project_id), "page_size": int(page_size), "fields": fields}
        if ids is not None and not len(ids):
            return  # an empty selection means all tasks to Label Studio
        selected = {} if ids is None else {"selectedItems": {"all": False, "included": [int(i) for i in ids]}}
        if view is None and ordering == ["tasks:id"] and filters.get("conjunction", "and") == "and":
            yield from self._after_ids(params, filters, selected)
            return
        if view is not None:
            params["view"] = int(view)
        else:
            params["query"] = json.dumps({"filters": filters, "ordering": ordering, **selected})
        page, seen = 1, 0
        while True:
            tasks, total = self._page_retrying({**params, "page": page}, first=page == 1)
            yield from tasks
            seen += len(tasks)
            if not tasks or seen >= total:
                return
            page += 1

    def _after_ids(self, params: dict[str, Any], filters: dict, selected: dict) -> Iterator[dict]:
        """Keyset paging in id order: each request asks for the tasks after the last id it has seen."""
        last = None
        while True:
            after = [] if last is None else [
                {"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": last}]
            query = {"filters": {"conjunction": "and", "items": [*filters.get("items", []), *after]},
                     "ordering": ["tasks:id"], **selected}
            tasks, total = self._page_retrying({**params, "query": json.dumps(query), "page": 1}, first=True)
            yield from tasks
            if not tasks or len(tasks) >= total:
                return
            last = max(int(t["id"]) for t in tasks)

    def ordered_task_ids(self, project_id: int, filters: dict, ordering: list[str], limit: int = 100) -> list[int]:
        """The first task ids as a Data Manager view with these filters and ordering shows them."""
        ids = []
        for t in self.iter_tasks(project_id, page_size=min(limit, 500), filters=filters, ordering=ordering,
                                 fields="task_only"):
            ids.append(int(t["id"]))
            if len(ids) >= limit:
                break
        return ids

    def newest_task_id(self, project_id: int) -> int | None:
        """The highest task id of the project (one small request): a cheap sign that tasks were added."""
        ids = self.ordered_task_ids(project_id, {"conjunction": "and", "items": []}, ["-tasks:id"], 1)
        return ids[0] if ids else None

    @_wrap
    def import_tasks(self, project_id: int, tasks: list[dict], chunk: int = 1000) -> list[int]:
        """Import task dicts (``{"data": ..., "meta": ...}``); returns the new task ids in order."""
        ids: list[int] = []
        for s in range(0, len(tasks), chunk):
            r = self._request("POST", f"/api/projects/{int(project_id)}/import", params={"return_task_ids": "true"},
                              json=tasks[s:s + chunk], timeout=max(self.timeout, 120))
            ids += [int(i) for i in r.json().get("task_ids") or []]
        return ids

    @_wrap
    def upload_files(self, project_id: int, files: list[tuple[str, bytes]], chunk: int = 100) -> list[int]:
        """Upload files (one task each; data becomes ``/data/upload/<project>/<hash>-<name>``); returns task ids."""
        chunk = max(1, min(chunk, _MAX_FILES_PER_REQUEST))
        ids: list[int] = []
        for s in range(0, len(files), chunk):
            part = {f"file{i}": (name, data, mimetypes.guess_type(name)[0] or "application/octet-stream")
                    for i, (name, data) in enumerate(files[s:s + chunk])}
            r = self._request("POST", f"/api/projects/{int(project_id)}/import", params={"return_task_ids": "true"},
                              files=part, timeout=max(self.timeout, 120))
            ids += [int(i) for i in r.json().get("task_ids") or []]
        return ids

    @_wrap
    def get_task(self, task_id: int) -> dict:
        return self._request("GET", f"/api/tasks/{int(task_id)}/").json()

    @_wrap
    def update_task_meta(self, task_id: int, meta: dict, merge: bool = True) -> dict:
        """LS replaces ``meta`` on update, so merging means read, merge, write; returns the new meta.

        A key whose value is ``None`` is removed when merging.
        """
        if merge:
            new = {**(self.get_task(task_id).get("meta") or {}), **meta}
            new = {k: v for k, v in new.items() if v is not None}
        else:
            new = dict(meta)
        self._request("PATCH", f"/api/tasks/{int(task_id)}/", json={"meta": new})
        return new

    def bulk_mark(self, project_id: int, marks: dict[int, dict], key: str = "sae",
                  previous: set[int] | None = None, keep_existing: bool = False) -> int:
        """Set ``meta[key] = marks[id]`` and remove ``meta[key]`` from tasks not in ``marks``.

        Only the current top-K then carry a mark. ``previous`` (the ids that may carry a mark
        now) limits the read to those tasks and the new ones, O(K) instead of a pass over the
        whole project; without it every task is read once (no annotations). Idempotent: tasks
        already right are not written. With ``keep_existing`` a task in ``marks`` that already
        carries a mark keeps it, so only tasks entering or leaving the set are written: Label
        Studio has no bulk update of ``meta``, and each PATCH costs ~0.15 s on SQLite. One PATCH
        per changed task, of ``meta`` read again just before, ``REREAD`` tasks a request: a page is
        read up to a minute before its last task is written, and another writer's ``meta`` edit in
        between must not be undone. Returns how many changed.
        """
        marks = {int(k): v for k, v in marks.items()}
        if previous is None:
            tasks: Iterable[dict] = self.iter_tasks(project_id, page_size=250, fields="task_only")
        else:
            tasks = self.tasks_by_id(project_id, [*previous, *marks])
        differ = (int(t["id"]) for t in tasks
                  if self._mark_differs(t.get("meta") or {}, int(t["id"]), marks, key, keep_existing))
        changed = 0
        while batch := list(itertools.islice(differ, REREAD)):
            for task in self.tasks_by_id(project_id, batch):
                tid, meta = int(task["id"]), dict(task.get("meta") or {})
                if not self._mark_differs(meta, tid, marks, key, keep_existing):
                    continue
                if tid in marks:
                    meta[key] = marks[tid]
                else:
                    del meta[key]
                self.update_task_meta(tid, meta, merge=False)
                changed += 1
        return changed

    @staticmethod
    def _mark_differs(meta: dict, tid: int, marks: dict[int, dict], key: str, keep_existing: bool) -> bool:
        if tid in marks:
            return not (meta.get(key) == marks[tid] or (keep_existing and key in meta))
        return key in meta

    def tasks_by_id(self, project_id: int, ids: Iterable[int], chunk: int = 100,
                    fields: str = "task_only") -> Iterator[dict]:
        """These tasks of the project (without annotations unless ``fields="all"``), 100 ids a request; missing ids
        are skipped."""
        ids = sorted({int(i) for i in ids})
        for s in range(0, len(ids), chunk):
            yield from self.iter_tasks(project_id, page_size=chunk, fields=fields, ids=ids[s:s + chunk])

    def prediction_versions(self, project_id: int, ids: Iterable[int]) -> dict[int, set[str]]:
        """The model versions of each of these tasks' predictions, for the tasks still in the project (read with
        their rows, 100 a request): which exist, and which hold a row of a version, in one read."""
        return {int(t["id"]): {p.get("model_version") for p in t.get("predictions") or [] if isinstance(p, dict)}
                for t in self.tasks_by_id(project_id, ids, fields="all")}

    # -- annotations ------------------------------------------------------------------------------

    @_wrap
    def create_annotation(self, task_id: int, result: list[dict]) -> int:
        return int(self.ls.annotations.create(id=int(task_id), result=result).id)

    @_wrap
    def delete_annotation(self, annotation_id: int) -> None:
        """Idempotent: an annotation already gone is fine."""
        try:
            self.ls.annotations.delete(id=int(annotation_id))
        except ApiError as e:
            if e.status_code != 404:
                raise

    # -- predictions, views -----------------------------------------------------------------------

    @_wrap
    def import_predictions(self, project_id: int, predictions: list[dict], chunk_size: int = 10_000) -> int:
        """Bulk-create ``{"task", "model_version", "score", "result"}`` rows.

        Few, large requests: after each call Label Studio 1.23 recounts the counters of every task
        in the project, so 10,000 rows into a 10k-task project take 7.6 s in one call and 38 s in
        ten; so the call may take minutes, and gets them. Not idempotent: a repeat adds rows again, so pushes
        delete first (:meth:`delete_predictions`).
        """
        created = 0
        for s in range(0, len(predictions), chunk_size):
            part = predictions[s:s + chunk_size]
            out = self.ls.projects.import_predictions(id=int(project_id), request=part,
                                                      request_options={"timeout": float(max(self.timeout, 300))})
            said = getattr(out, "created", None)  # Label Studio drops rows it finds invalid and says how many it kept
            created += len(part) if said is None else int(said)
        return created

    @_wrap
    def model_versions(self, project_id: int) -> dict[str, int]:
        """Prediction counts per model version (an endpoint the SDK does not expose)."""
        return self._request("GET", f"/api/projects/{int(project_id)}/model-versions/").json()

    @_wrap
    def delete_predictions(self, project_id: int, model_versions: list[str]) -> int:
        """Delete these versions' predictions, never a project's whole set: the others are the team's.

        ``DELETE /api/projects/{id}/model-versions/``, one call per version; LS then clears the
        project's ``model_version`` if it was one of them. Idempotent; returns the number deleted.
        """
        n = 0
        for v in model_versions:
            r = self._request("DELETE", f"/api/projects/{int(project_id)}/model-versions/",
                              json={"model_version": v}, timeout=max(self.timeout, 120))
            n += int(r.json().get("deleted_predictions") or 0)
        return n

    @_wrap
    def list_views(self, project_id: int) -> list[dict]:
        return [_dump(v) for v in self.ls.views.list(project=int(project_id))]

    @_wrap
    def ensure_view(self, project_id: int, title: str, filters: dict, ordering: list[str],
                    extra: dict | None = None) -> int:
        """Create or update this backend's saved Data Manager view; returns its id. ``extra`` keys join its data;
        keys written before and not named again are kept.

        The view carries a marker in its data, so only the backend's own view is ever updated or
        deleted: a team's tab with the same title is left alone. Idempotent: a repeat finds the
        marked view (and removes marked duplicates an older run left); an unmarked view with this
        title, filters and ordering, as earlier versions wrote it, is adopted rather than doubled.
        Community LS has no uncertainty sampling in the labeling stream; annotators open this tab
        and use "Label Tasks As Displayed".
        """
        data = {"type": "list", "target": "tasks", "title": title, "filters": filters, "ordering": list(ordering),
                VIEW_MARK: True, **(extra or {})}
        views = self.list_views(project_id)
        ours = marked_views(views)
        if not ours:
            ours = [v for v in views if all((v.get("data") or {}).get(k) == data[k]
                                            for k in ("title", "filters", "ordering"))][:1]
        if not ours:
            return int(self.ls.views.create(project=int(project_id), data=data).id)
        keep, *doubles = ours
        for v in doubles:
            self.ls.views.delete(id=str(v["id"]))
        current = keep.get("data") or {}
        if any(current.get(k) != data[k] for k in ("title", "filters", "ordering", VIEW_MARK, *(extra or {}))):
            self.ls.views.update(id=str(keep["id"]), project=int(project_id), data={**current, **data})
        return int(keep["id"])

    # -- queue project ----------------------------------------------------------------------------

    @_wrap
    def ensure_queue_project(self, source_project_id: int, known: int | None = None, title: str | None = None) -> int:
        """A project with the source's label config for the items to label next; created once.

        ``known`` (the queue the last push used) is kept while Label Studio still has it as this source's queue
        (a Label Studio started afresh reuses ids): with the marker in its description, or, where a person
        edited the marker away, with no marker and a first task that is a copy from this source; so renaming it
        or editing its description does not make a new one. Else it is found by the marker.
        """
        sid = int(source_project_id)
        if known is not None and int(known) != sid:
            try:
                q = self.get_project(int(known))
            except LabelStudioError as e:
                if e.status_code != 404:
                    raise
            else:
                m = _QUEUE_MARK.search(q.get("description") or "")
                if m is not None and int(m.group(1)) == sid:
                    return int(known)
                if m is None and self._copies_from(int(known), sid):
                    return int(known)
        for p in self.list_projects():
            m = _QUEUE_MARK.search(p.get("description") or "")
            if m and int(m.group(1)) == sid:
                return int(p["id"])
        src = self.get_project(sid)
        description = (f"Items the sae-backend model is least sure about in project {sid} "
                       f"({src.get('title')!r}); labels made here count for the source tasks. "
                       f"[sae-backend queue of project {sid}]")
        if not title:
            suffix = " — uncertain queue"
            base = str(src.get("title") or f"Project {sid}")
            if len(base) + len(suffix) > _MAX_TITLE:
                base = base[:_MAX_TITLE - len(suffix) - 1].rstrip() + "…"
            title = base + suffix
        return self.create_project(title[:_MAX_TITLE], src["label_config"], description)

    @_wrap
    def match_label_config(self, project_id: int, source_project_id: int) -> bool:
        """Give a queue project its source's label config where an edit of the source changed it since (a class
        added there must be choosable in the queue); whether it was changed. Two reads, and a write only when they
        differ (Label Studio stores the config as sent, so an unchanged one compares equal)."""
        wanted = self.get_project(int(source_project_id)).get("label_config")
        if not wanted or self.get_project(int(project_id)).get("label_config") == wanted:
            return False
        self.ls.projects.update(id=int(project_id), label_config=wanted)
        return True

    def _copies_from(self, project_id: int, source_project_id: int) -> bool:
        """Whether this project's first task is a copy from the source: an empty project proves nothing."""
        first = next(iter(self.iter_tasks(project_id, page_size=1, fields="task_only")), None)
        meta = None if first is None else first.get("meta")
        return isinstance(meta, dict) and meta.get("source_project") == source_project_id

    def queue_copies(self, queue_project_id: int) -> dict[int, int]:
        """Each source task the queue holds a copy of, with its copy's id (the first, if a person made two):
        one read of the whole queue."""
        return self.read_queue(queue_project_id)[0]

    def read_queue(self, queue_project_id: int) -> tuple[dict[int, int], frozenset[int]]:
        """:meth:`queue_copies`, and the queue's copies someone annotated or skipped (no one's work is deleted with
        them), from the same read."""
        copies: dict[int, int] = {}
        worked: set[int] = set()
        for t in self.iter_tasks(queue_project_id, page_size=250, fields="task_only"):
            source = _source_task(t.get("meta"))
            if source is not None:
                copies[source] = min(int(t["id"]), copies.get(source, int(t["id"])))
                if int(t.get("total_annotations") or 0) or int(t.get("cancelled_annotations") or 0):
                    worked.add(int(t["id"]))
        return copies, frozenset(worked)

    def copy_to_queue(self, queue_project_id: int, source_tasks: list[dict],
                      have: dict[int, int] | None = None) -> dict[int, int]:
        """Copy tasks' data into the queue with ``meta={"source_task": id}``, skipping those already there;
        returns every copy the queue holds then, source task to queue task.

        Idempotent across rounds: a task copied in an earlier round is never copied again. ``have``
        (the copies known from the last push) saves reading the whole queue.
        """
        have = dict(self.queue_copies(queue_project_id) if have is None else have)
        new, seen = [], []
        for t in source_tasks:
            tid = int(t["id"])
            if tid in have or tid in seen:
                continue
            seen.append(tid)
            meta = {"source_task": tid}
            if t.get("project") is not None:
                meta["source_project"] = int(t["project"])
            new.append({"data": t["data"], "meta": meta})
        if new:
            made = self.import_tasks(queue_project_id, new)
            if len(made) != len(seen):  # an answer without the new ids: read them
                return self.queue_copies(queue_project_id)
            have.update(zip(seen, made, strict=True))
        return have

    @_wrap
    def delete_untouched_tasks(self, project_id: int, task_ids: Iterable[int], chunk: int = 100) -> int:
        """Delete those of these tasks no one has worked on (no annotation, skip or draft, by anyone); how many went.

        Label Studio selects them by :data:`UNTOUCHED_FILTER` in the request that deletes them (its Data Manager
        ``delete_tasks`` action), so only work saved in the few milliseconds between its select and its delete could
        go with a task. For the queue's copies only. ~4 ms a task on SQLite.
        """
        ids = sorted({int(i) for i in task_ids})
        n = 0
        for s in range(0, len(ids), chunk):
            r = self._request("POST", "/api/dm/actions", params={"id": "delete_tasks", "project": int(project_id)},
                              json={"selectedItems": {"all": False, "included": ids[s:s + chunk]},
                                    "filters": UNTOUCHED_FILTER}, timeout=max(self.timeout, 120))
            n += int(r.json().get("processed_items") or 0)
        return n

    def labeled_tasks(self, project_id: int, updated_after: datetime | None = None) -> Iterator[dict]:
        """Every labeled task with its annotations; with ``updated_after``, those saved since, then the tasks saved
        since that were left without annotations (an annotation deleted one by one saves its task), bare."""
        yield from self.iter_tasks(project_id, labeled=True, updated_after=updated_after)
        if updated_after is not None:
            yield from self.iter_tasks(project_id, labeled=False, fields="task_only", updated_after=updated_after)

    def queue_labels(self, queue_project_id: int, updated_after: datetime | None = None
                     ) -> Iterator[tuple[int, int, list[dict]]]:
        """``(source_task_id, queue_task_id, annotations)`` for each queue task that has annotations (with
        ``updated_after``, see :meth:`labeled_tasks`: a queue task left bare means its labels are gone)."""
        for t in self.labeled_tasks(queue_project_id, updated_after):
            src = _source_task(t.get("meta"))
            if src is not None and (t.get("annotations") or updated_after is not None):
                yield src, int(t["id"]), t.get("annotations") or []

    # -- ML backend, webhooks ---------------------------------------------------------------------

    @_wrap
    def connect_ml_backend(self, project_id: int, url: str, title: str = "sae-backend") -> int:
        """Connect (or find, by URL) the backend. LS checks ``/health`` first and answers 400 if it fails.

        Works on loopback only because the server runs with the SSRF guard off.
        """
        for m in self.ls.ml.list(project=int(project_id)):
            if (m.url or "").rstrip("/") == url.rstrip("/"):
                return int(m.id)
        return int(self.ls.ml.create(project=int(project_id), url=url, title=title, is_interactive=False).id)

    @_wrap
    def train(self, ml_backend_id: int) -> None:
        """Sends START_TRAINING to the backend's webhook, like the UI's "Start training" button."""
        self.ls.ml.train(id=int(ml_backend_id))

    @_wrap
    def list_webhooks(self, project_id: int) -> list[dict]:
        return [_dump(w) for w in self.ls.webhooks.list(project=str(int(project_id)))]

    @_wrap
    def authorize_webhook(self, project_id: int, url: str, headers: dict[str, str]) -> bool:
        """Give the project's webhook to ``url`` these headers where it lacks them; whether it was changed (False also
        when there is none). Label Studio makes a connected model's webhook itself, without the basic-auth header
        it sends on its other calls to the model, so a backend behind basic auth refused every one of them."""
        w = self._webhook_to(project_id, url)
        if w is None or (w.get("headers") or {}) == headers:
            return False
        # its actions too: a partial update without them empties a webhook's list of actions
        self.ls.webhooks.update(int(w["id"]), headers=headers, actions=list(w.get("actions") or []))
        return True

    def _webhook_to(self, project_id: int, url: str) -> dict | None:
        """The project's webhook to ``url`` (a trailing slash aside), if any."""
        return next((w for w in self.list_webhooks(project_id)
                     if (w.get("url") or "").rstrip("/") == url.rstrip("/")), None)

    @_wrap
    def ensure_webhook(self, project_id: int, url: str, actions: Sequence[str],
                       headers: dict[str, str] | None = None) -> int:
        """A webhook of the project to ``url`` for these actions, with the payload; created once (found by URL),
        brought up to date when its actions or headers (a changed password) differ."""
        w = self._webhook_to(project_id, url)
        if w is not None:
            if sorted(w.get("actions") or []) != sorted(actions) or (w.get("headers") or {}) != (headers or {}):
                self.ls.webhooks.update(int(w["id"]), actions=list(actions), headers=headers or {})
            return int(w["id"])
        return int(self.ls.webhooks.create(project=int(project_id), url=url, actions=list(actions),
                                           send_payload=True, send_for_all_actions=False, is_active=True,
                                           headers=headers or {}).id)
