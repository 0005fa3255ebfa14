"""Label Studio's webhooks: check a body, then record its change in the project's mirror at once.

A body Label Studio would not send is refused whole (:class:`PayloadError`, a 422) before anything is
recorded. A label made in a project's queue counts for the source task it copies. Anything slow
(decoding new tasks, training) is left to the manager's background threads.
"""

from __future__ import annotations

from service.projects import ProjectManager, ProjectState


class PayloadError(ValueError):
    """A webhook body Label Studio would not send; answered 422 with this message, nothing recorded."""


def _object(value: object, what: str) -> dict:
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be an object, got {type(value).__name__}")
    return value


def _list(value: object, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PayloadError(f"{what} must be a list, got {type(value).__name__}")
    return value


def _id(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise PayloadError(f"{what} must be an integer id, got {value!r}")
    return value


def _deleted_ids(body: dict) -> list[int]:
    """ANNOTATIONS_DELETED's annotation ids (the payload carries only those)."""
    return [_id(_object(a, "annotations[]").get("id"), "annotations[].id")
            for a in _list(body.get("annotations"), "annotations")]


def _tasks(body: dict) -> list[dict]:
    """TASKS_CREATED / TASKS_DELETED's tasks, each an object with an integer id."""
    tasks = [_object(t, "tasks[]") for t in _list(body.get("tasks"), "tasks")]
    for t in tasks:
        _id(t.get("id"), "tasks[].id")
    return tasks


def handle(m: ProjectManager, pid: int, action: str, body: dict) -> str:
    """Record one webhook's change; returns what became of it (``debounced``, ``ignored``, ...)."""
    source = queue_source(m, pid, body)
    if action in ("ANNOTATIONS_CREATED", "PROJECT_UPDATED"):  # bulk labels, a config edit: a poll reads them
        st = source or m.get(pid, create=False)
        if st is None:
            return "ignored"
        if action == "PROJECT_UPDATED":  # sent for any edit, this backend's own model version too: configs only
            project = body.get("project")
            xml = project.get("label_config") if isinstance(project, dict) else None
            if not xml or xml == st.label_config:
                return "ignored"
        return m.poll_soon(action)
    if source is not None:
        return _queue_event(m, source, action, body)
    if action == "ANNOTATIONS_DELETED":
        gone = _deleted_ids(body)
        st = m.get(pid, create=False)
        if st is None:  # nothing of it is mirrored, and a queue no push recorded must not become a project
            return "ignored"
        m.mirror(st).remove_annotations(gone)
        return m.label_webhook(pid, action)
    st = m.get(pid, create=False)
    if st is None:  # Label Studio calls /setup before it sends a project's events: a stranger's are not recorded
        return "ignored"
    if action == "START_TRAINING":
        return m.request_training(pid, "START_TRAINING")
    mirror = m.mirror(st)
    if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        ann = _object(body.get("annotation") or {}, "annotation")
        task = body.get("task")
        tid = ann.get("task") if not isinstance(task, dict) else task.get("id")
        tid = tid if tid is not None else task
        _id(ann.get("id"), "annotation.id")  # Label Studio always names both: a body without them records nothing
        mirror.upsert_annotation(_id(tid, "the annotation's task id"), ann)  # during an ingest too: newer word wins
        return m.label_webhook(pid, action)
    tasks = _tasks(body)
    if action == "TASKS_CREATED":
        return m.tasks_created(pid, tasks)
    if action == "TASKS_DELETED":  # during an ingest too: a task read before its deletion must not stay
        mirror.remove_tasks([int(t["id"]) for t in tasks])
        return m.label_webhook(pid, action)  # labeled tasks deleted are label changes, as ANNOTATIONS_DELETED
    return "ignored"


def queue_source(m: ProjectManager, pid: int, body: dict) -> ProjectState | None:
    """The project whose queue project ``pid`` is (its webhook, registered with BACKEND_URL, lands here too).

    Known by the queue id once a push recorded it, and before that by the ``source_project`` every
    queue task carries in its ``meta``.
    """
    states = m.states()
    source = next((st for st in states.values() if st.queue_project_id == pid), None)
    task = body.get("task")
    meta = task.get("meta") if isinstance(task, dict) else None
    claimed = meta.get("source_project") if isinstance(meta, dict) else None
    served_itself = pid in states and states[pid].config is not None
    if source is None and isinstance(claimed, int) and claimed != pid and claimed in states and not served_itself:
        source = states[claimed]
    return source


def _queue_event(m: ProjectManager, source: ProjectState, action: str, body: dict) -> str:
    """A label made, corrected or deleted in the queue project counts for the source task it copies."""
    mirror = m.mirror(source)
    if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        ann = _object(body.get("annotation") or {}, "annotation")
        task = body.get("task")
        meta = task.get("meta") if isinstance(task, dict) else None
        src = meta.get("source_task") if isinstance(meta, dict) else None
        if src is None or ann.get("id") is None:
            return "ignored"
        _id(ann["id"], "annotation.id")
        mirror.upsert_queue_annotation(_id(src, "task.meta.source_task"), ann)
        return m.label_webhook(source.id, f"queue {action}")
    if action == "ANNOTATIONS_DELETED":
        mirror.remove_queue_annotations(_deleted_ids(body))
        return m.label_webhook(source.id, f"queue {action}")
    if action == "TASKS_DELETED":  # a queue task's labels go with it
        mirror.remove_queue_tasks([int(t["id"]) for t in _tasks(body)])
        return m.label_webhook(source.id, f"queue {action}")
    return "ignored"
