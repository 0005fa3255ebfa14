"""The backend's client for the Label Studio API, over label-studio-sdk 2.x.

Every failure surfaces as :class:`LabelStudioError` with ``retryable`` set for
connection errors, timeouts and 5xx, so callers can back off and retry. Messages never
carry the API key.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

T = TypeVar("T")
QUEUE_MARK = "sae-backend uncertain queue for project"


class LabelStudioError(RuntimeError):
    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def _wrap(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def inner(self: LabelStudioClient, *args: Any, **kwargs: Any) -> T:
        try:
            return fn(self, *args, **kwargs)
        except LabelStudioError:
            raise
        except ApiError as e:
            code = e.status_code or 0
            body = str(e.body)[:300].replace(self._key, "***") if self._key else str(e.body)[:300]
            raise LabelStudioError(f"{fn.__name__}: Label Studio answered HTTP {code}: {body}",
                                   retryable=code >= 500 or code in (0, 429)) from None
        except httpx.HTTPStatusError as e:
            code = e.response.status_code
            raise LabelStudioError(f"{fn.__name__}: Label Studio answered HTTP {code}",
                                   retryable=code >= 500 or code == 429) from None
        except (httpx.TransportError, OSError) as e:
            raise LabelStudioError(f"{fn.__name__}: Label Studio unreachable ({type(e).__name__})",
                                   retryable=True) from None
    return inner


def _dump(obj: Any) -> dict:
    if isinstance(obj, dict):
        return obj
    return obj.model_dump() if hasattr(obj, "model_dump") else obj.dict()


class LabelStudioClient:
    def __init__(self, url: str, api_key: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._key = api_key
        self.timeout = timeout
        self.ls = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout)

    def _headers(self) -> dict[str, str]:
        return dict(self.ls._client_wrapper.get_headers())

    @_wrap
    def get_project(self, project_id: int) -> dict:
        return _dump(self.ls.projects.get(id=project_id))

    @_wrap
    def labeled_count(self, project_id: int) -> int:
        return int(_dump(self.ls.projects.get(id=project_id)).get("num_tasks_with_annotations") or 0)

    @_wrap
    def _page(self, project_id: int, page: int, page_size: int, query: str | None) -> tuple[list[dict], int]:
        params: dict[str, Any] = {"project": project_id, "page": page, "page_size": page_size, "fields": "all"}
        if query:
            params["query"] = query
        r = httpx.get(f"{self.url}/api/tasks/", params=params, headers=self._headers(), timeout=self.timeout)
        if r.status_code == 404:
            return [], 0
        r.raise_for_status()
        body = r.json()
        return body.get("tasks", []), int(body.get("total", 0))

    def iter_tasks(self, project_id: int, page_size: int = 500, labeled: bool | None = None) -> Iterator[dict]:
        """Every task with its annotations, page by page (``only_annotated`` is ignored by the server)."""
        query = None
        if labeled is not None:
            op = "greater" if labeled else "equal"
            query = json.dumps({"filters": {"conjunction": "and", "items": [
                {"filter": "filter:tasks:total_annotations", "operator": op, "type": "Number", "value": 0}]}})
        page = 1
        while True:
            tasks, total = self._page(project_id, page, page_size, query)
            yield from tasks
            if not tasks or page * page_size >= total:
                return
            page += 1

    @_wrap
    def ordered_task_ids(self, project_id: int, filters: dict, ordering: list[str], limit: int = 100) -> list[int]:
        """Task ids as a Data Manager view with these filters and ordering shows them."""
        q = json.dumps({"filters": filters, "ordering": ordering})
        tasks, _ = self._page(project_id, 1, limit, q)
        return [int(t["id"]) for t in tasks]

    @_wrap
    def delete_predictions(self, project_id: int) -> None:
        """Remove every prediction in the project: one bulk action, so the table never grows per version."""
        self.ls.actions.create(id="delete_tasks_predictions", project=project_id, selected_items={"all": True})

    @_wrap
    def import_predictions(self, project_id: int, predictions: list[dict], chunk_size: int = 1000) -> int:
        for s in range(0, len(predictions), chunk_size):
            self.ls.projects.import_predictions(id=project_id, request=predictions[s:s + chunk_size])
        return len(predictions)

    @_wrap
    def set_model_version(self, project_id: int, version: str) -> None:
        self.ls.projects.update(id=project_id, model_version=version)

    @_wrap
    def ensure_view(self, project_id: int, title: str, filters: dict, ordering: list[str]) -> int:
        data = {"title": title, "filters": filters, "ordering": ordering}
        for v in self.ls.views.list(project=project_id):
            vd = _dump(v)
            if (vd.get("data") or {}).get("title") == title:
                self.ls.views.update(id=str(vd["id"]), project=project_id, data=data)
                return int(vd["id"])
        return int(_dump(self.ls.views.create(project=project_id, data=data))["id"])

    @_wrap
    def update_task_meta(self, task_id: int, meta: dict) -> None:
        r = httpx.patch(f"{self.url}/api/tasks/{task_id}/", json={"meta": meta}, headers=self._headers(),
                        timeout=self.timeout)
        r.raise_for_status()

    def bulk_mark(self, project_id: int, marks: dict[int, dict], key: str = "sae") -> int:
        """Set ``meta[key]`` on the given tasks and clear it from tasks marked in an earlier round."""
        changed = 0
        for task in self.iter_tasks(project_id):
            meta = dict(task.get("meta") or {})
            tid = int(task["id"])
            want = marks.get(tid)
            if want is not None and meta.get(key) != want:
                meta[key] = want
            elif want is None and key in meta:
                meta.pop(key)
            else:
                continue
            self.update_task_meta(tid, meta)
            changed += 1
        return changed

    @_wrap
    def create_project(self, title: str, label_config: str, description: str = "") -> int:
        return int(_dump(self.ls.projects.create(title=title, label_config=label_config,
                                                 description=description))["id"])

    @_wrap
    def ensure_queue_project(self, source_project_id: int) -> int:
        """A project with the source's labeling interface for the pushed items, found again by its description."""
        mark = f"{QUEUE_MARK} {source_project_id}"
        for p in self.ls.projects.list():
            if (_dump(p).get("description") or "") == mark:
                return int(_dump(p)["id"])
        src = self.get_project(source_project_id)
        return self.create_project(f"{src.get('title', source_project_id)} - uncertain queue",
                                   src["label_config"], mark)

    def copy_to_queue(self, queue_project_id: int, source_tasks: list[dict]) -> int:
        """Copy tasks into the queue unless an earlier round already did."""
        have = {int((t.get("meta") or {}).get("source_task", -1)) for t in self.iter_tasks(queue_project_id)}
        new = [{"data": t["data"], "meta": {"source_task": int(t["id"])}} for t in source_tasks
               if int(t["id"]) not in have]
        if new:
            self.import_tasks(queue_project_id, new)
        return len(new)

    def queue_labels(self, queue_project_id: int) -> Iterator[tuple[int, list[dict]]]:
        for t in self.iter_tasks(queue_project_id, labeled=True):
            src = (t.get("meta") or {}).get("source_task")
            if src is not None and t.get("annotations"):
                yield int(src), t["annotations"]

    @_wrap
    def import_tasks(self, project_id: int, tasks: list[dict]) -> list[int]:
        r = httpx.post(f"{self.url}/api/projects/{project_id}/import", params={"return_task_ids": "true"},
                       json=tasks, headers=self._headers(), timeout=max(self.timeout, 120))
        r.raise_for_status()
        return [int(i) for i in r.json().get("task_ids", [])]

    @_wrap
    def upload_files(self, project_id: int, files: list[tuple[str, bytes]], chunk: int = 100) -> list[int]:
        """Upload image files as tasks (Django refuses more than 100 files a request)."""
        ids: list[int] = []
        for s in range(0, len(files), chunk):
            part = {f"file{i}": (name, data, "image/png") for i, (name, data) in enumerate(files[s:s + chunk])}
            r = httpx.post(f"{self.url}/api/projects/{project_id}/import", params={"return_task_ids": "true"},
                           files=part, headers=self._headers(), timeout=max(self.timeout, 120))
            r.raise_for_status()
            ids += [int(i) for i in r.json().get("task_ids", [])]
        return ids

    @_wrap
    def create_annotation(self, task_id: int, result: list[dict]) -> int:
        return int(_dump(self.ls.annotations.create(id=task_id, result=result))["id"])

    @_wrap
    def delete_annotation(self, annotation_id: int) -> None:
        self.ls.annotations.delete(id=annotation_id)

    @_wrap
    def connect_ml_backend(self, project_id: int, url: str, title: str = "sae-backend") -> int:
        return int(_dump(self.ls.ml.create(project=project_id, url=url, title=title, is_interactive=False))["id"])

    @_wrap
    def train(self, ml_backend_id: int) -> None:
        self.ls.ml.train(id=ml_backend_id)
