"""Push a new version back to Label Studio as annotation work.

Steps, each retried with exponential backoff while Label Studio is unreachable:
predictions for every task (written in bulk after deleting any of the same version, so a
retried push never duplicates rows), the project's ``model_version``, removal of earlier
versions' predictions (the table holds one row per task, not one per task and version),
the "Most uncertain first" view, the top-K marks in task ``meta`` (after the first push
only the tasks marked before and the new top-K are read, not the whole project) and, in
``queue`` mode, the queue project.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from connectors.label_studio import LabelStudioClient, LabelStudioError

if TYPE_CHECKING:
    from service.metrics import Metrics
    from service.projects import ProjectState
    from service.settings import Settings

log = logging.getLogger("sae_backend.push")
VIEW_TITLE = "Most uncertain first"
UNLABELED_FILTER = {"conjunction": "and", "items": [
    {"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0}]}
ORDERING = ["tasks:predictions_score"]
META_KEY = "sae"


class PushError(RuntimeError):
    """The push did not complete; it is retried later and nothing is lost."""


def _retrying(attempts: int, max_wait: float = 30.0) -> Retrying:
    return Retrying(stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=0.5, max=max_wait),
                    retry=retry_if_exception(lambda e: isinstance(e, LabelStudioError) and e.retryable),
                    reraise=True)


def push_version(client: LabelStudioClient, st: ProjectState, settings: Settings,
                 metrics: Metrics | None = None) -> int | None:
    """Write the version in service to Label Studio; returns the queue project's id in queue mode."""
    with st.lock:
        name, config, preds = st.version_name, st.config, dict(st.predictions)
        ranking = list(st.ranking[: settings.push_top_k])
        queue_id = st.queue_project_id
    if name is None or config is None:
        return queue_id
    pid = st.id

    timings: dict[str, float] = {}

    def step(fn, *args, **kwargs):
        name_ = getattr(fn, "__name__", "step")
        t0 = time.perf_counter()
        try:
            return _retrying(settings.push_retries)(fn, *args, **kwargs)
        except (LabelStudioError, RetryError) as e:
            raise PushError(f"{name_}: {e}") from e
        finally:
            timings[name_] = round(timings.get(name_, 0.0) + time.perf_counter() - t0, 3)

    predictions = [{"task": tid, "model_version": name, "score": round(conf, 6),
                    "result": config.result(config.classes[k])} for tid, (k, conf) in preds.items()]
    step(client.delete_predictions, pid, [name])
    n = step(client.import_predictions, pid, predictions)
    if metrics is not None:
        metrics.pushed.labels(str(pid)).inc(n or len(predictions))
    step(client.set_model_version, pid, name)
    older = [v for v, count in step(client.model_versions, pid).items() if v != name and count]
    if older:
        step(client.delete_predictions, pid, older)
    step(client.ensure_view, pid, VIEW_TITLE, UNLABELED_FILTER, ORDERING)
    marks = {tid: {"rank": r + 1, "margin": round(m, 6), "model_version": name}
             for r, (tid, m) in enumerate(ranking)}
    with st.lock:
        previous = None if st.marked is None else set(st.marked)
    try:
        step(client.bulk_mark, pid, marks, META_KEY, previous=previous)
    except PushError:
        with st.lock:
            st.marked = None if previous is None else previous | set(marks)
        raise
    with st.lock:
        st.marked = set(marks)
    if settings.push_mode == "queue" and ranking:
        queue_id = step(client.ensure_queue_project, pid)
        data = _task_data(st, [t for t, _ in ranking])
        step(client.copy_to_queue, queue_id, [{"id": tid, "data": d} for tid, d in data.items()])
    with st.lock:
        st.pushed = [t for t, _ in ranking]
        st.last_push = {"model_version": name, "predictions": len(predictions), "seconds": timings,
                        "total_seconds": round(sum(timings.values()), 3)}
    log.info("project %s: pushed %s predictions of %s, %s marked", pid, len(predictions), name, len(marks))
    return queue_id


def _task_data(st: ProjectState, ids: list[int]) -> dict[int, dict]:
    data = st.latent.get("data", {})
    return {t: data[t] for t in ids if t in data}
