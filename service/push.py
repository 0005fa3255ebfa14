"""Push the served version back to Label Studio as annotation work, at a cost of O(head) rows.

Label Studio's "lowest score first" ordering only counts predictions of the project's
``model_version`` and puts tasks without one last, and opening such a task (or "Retrieve
predictions") asks ``/predict``, which the served version answers from its cache. So a
version writes predictions for its ranking head only (``PUSH_HEAD`` unlabeled tasks, in
ranking order by ``score``), not for the pool. Steps, each retried with backoff while
Label Studio is unreachable or busy (SQLite answers concurrent writes with 500s):

0. claim the project for this install (:mod:`service.writer_claim`): while another sae-backend holds it,
   nothing is written and the push waits for the next poll;
1. the head's rows, as one retried step: a version's first write deletes its own rows and imports the
   head; a version whose rows are known (pushed again because new tasks entered its head, or retried after
   a later step failed) only adds rows for head tasks that have none, and a retry reads which head tasks
   hold one (an import that timed out may have landed), so rows are never written twice and the ordering
   of the version Label Studio shows never lapses (see :func:`_write_rows`);
2. set the project's ``model_version`` and make sure the "Most uncertain first" view exists:
   from here on the view orders the work by this version (``head_visible_at``);
3. delete the rows of this backend's *earlier* versions (``sae-v<N>`` with a smaller N):
   their heads and the rows Label Studio stored from ``/predict``; never another model's.
   This comes after the view switched because Label Studio's ordering already ignores
   them, and deleting row by row takes seconds the annotators need not wait for; a push
   cut short here leaves them to the next push, which deletes every earlier version;
4. the top-K ``meta`` marks, and in ``queue`` mode the queue project (copies of the top-K, ordered
   by their sources' rows: see :func:`_order_queue`; copies whose sources left the top-K a version ago go, where no one
   worked on them: see :func:`_retire_copies`). A mark records why a
   task was asked for: the version that put it into the top-K, with its rank and margin then.
   Only tasks entering or leaving the top-K are written (one PATCH each, Label Studio has no
   bulk update of ``meta``): a task that stays keeps its mark, and so does one labeled since.
   The live order is the view's and ``/ranking``'s. When the marked set is unknown (first push
   of this install) every mark is rewritten, so marks an earlier install left are not kept.

A push never follows a newer one: it is skipped when the version is older than the last
pushed. It returns a :class:`PushReport`; it writes no shared state.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from tenacity import RetryError

from connectors.label_config import LabelConfig
from connectors.label_studio import LabelStudioClient, LabelStudioError, retrying
from service.served import ServedVersion
from service.settings import Settings
from service.versions import own_versions
from service.writer_claim import Claim, Writer, claim_writer

QUEUE_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED", "TASKS_DELETED")
log = logging.getLogger("sae_backend.push")
VIEW_TITLE = "Most uncertain first"
UNLABELED_FILTER = {"conjunction": "and", "items": [
    {"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0}]}
ORDERING = ["tasks:predictions_score"]
VIEW = (VIEW_TITLE, UNLABELED_FILTER, ORDERING)  # the backend's own view: where annotators work, and the claim lives
META_KEY = "sae"


class PushError(RuntimeError):
    """The push did not complete; it is retried later and nothing is lost.

    ``marked`` is the set of tasks that may carry a mark now (None = unknown); ``queue_project_id``
    the queue project the push found or made before it failed, so its webhooks are known as the queue's;
    ``queue_tops`` the tops its copies stay for, where it got as far as the queue (its copies may be there).
    """

    def __init__(self, message: str, marked: set[int] | None = None, queue_project_id: int | None = None) -> None:
        super().__init__(message)
        self.marked = marked
        self.queue_project_id = queue_project_id
        self.queue_tops: QueueTops | None = None  # the top-Ks the queue's copies stay for, once it may hold this one


@dataclass(frozen=True)
class QueueState:
    """The queue project as a push left it, kept in memory only: a restart, or a failed push, reads the queue once."""

    project: int
    copies: Mapping[int, int]  # source task -> its copy in the queue
    rows_number: int | None = None  # the version whose rows ``rows`` lists
    rows: frozenset[int] = frozenset()  # queue tasks holding a row of that version
    worked: frozenset[int] = frozenset()  # copies left out of the top-K that someone worked on: never retired


@dataclass(frozen=True)
class QueueTops:
    """The source tasks whose queue copies stay: every top-K pushed for version ``number``, and the last top-K of the
    version pushed before it (None: not known, after a takeover or the first queue push of this install)."""

    number: int
    recent: frozenset[int]
    previous: frozenset[int] | None = None


def tops_after(prior: QueueTops | None, number: int, top: Iterable[int]) -> QueueTops:
    """The tops once version ``number`` has been pushed with ``top`` (``prior``: before it, None if not known)."""
    top = frozenset(int(t) for t in top)
    if prior is not None and prior.number == number:
        return QueueTops(number, prior.recent | top, prior.previous)
    return QueueTops(number, top, None if prior is None else prior.recent)


@dataclass(frozen=True)
class PushState:
    """What the last push left in Label Studio, as far as the next push needs to know."""

    last_number: int | None = None
    marked: frozenset[int] | None = None
    queued: QueueState | None = None  # the queue project as the last push left it; not persisted
    rows: frozenset[int] | None = None  # tasks holding a row of version ``rows_number`` (None: not known)
    rows_number: int | None = None  # the version ``rows`` lists (None: ``last_number``); a push that failed after
    # writing its rows leaves them known, so its retry only adds: deleting the rows of the version Label Studio
    # shows would clear the project's model version, and the view's order with it, until a push lands
    took_over: bool = False  # from another install, and no push completed since: every other sae-vN is its
    queue_tops: QueueTops | None = None  # the top-Ks the queue's copies stay for (queue mode; saved)


@dataclass
class PushReport:
    model_version: str
    number: int
    stale: bool = False
    rows_written: int = 0
    rows_deleted: int = 0
    head: list[int] = field(default_factory=list)
    rows: frozenset[int] = frozenset()  # tasks holding a row of this version after the push
    marked: set[int] = field(default_factory=set)
    marks_written: int = 0
    queue_project_id: int | None = None
    queued: QueueState | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    head_visible_at: float | None = None
    newer: list[str] = field(default_factory=list)  # sae-vN in Label Studio above this one: another writer
    other_writer: Claim | None = None  # another install's live claim: this push wrote nothing
    claim: Claim | None = None  # the claim Label Studio holds after this push's claim step (None: no claim step)
    took_from: Claim | None = None  # another install's claim this push replaced
    took_over: bool = False  # from another install (this push or one cut short): every other sae-vN went
    queue_config_error: str | None = None  # why the queue project could not take the project's label config
    copies_retired: int = 0  # queue copies deleted: their sources left the top-K, and no one worked on them
    queue_tops: QueueTops | None = None  # what the push's queue copies stay for, once it completed

    def summary(self) -> dict:
        until_view = None if self.head_visible_at is None else round(self.head_visible_at - self.started_at, 3)
        return {"model_version": self.model_version, "rows_written": self.rows_written,
                "rows_deleted": self.rows_deleted, "marked": len(self.marked), "marks_written": self.marks_written,
                "seconds": self.seconds,
                "total_seconds": round(sum(self.seconds.values()), 3), "head_visible_at": self.head_visible_at,
                "seconds_until_view": until_view, "newer_in_label_studio": self.newer,
                "took_over": self.took_over, "queue_config_error": self.queue_config_error,
                "copies_retired": self.copies_retired}


def _stepper(report: PushReport, settings: Settings, prior: PushState):
    """Run one Label Studio call with the push's retry policy, timing it into ``report``."""
    def step(fn, *args, **kwargs):
        name_ = getattr(fn, "__name__", "step")
        t0 = time.perf_counter()
        try:
            return retrying(settings.push_retries)(fn, *args, **kwargs)
        except (LabelStudioError, RetryError) as e:
            raise PushError(f"{name_}: {e}", prior.marked) from e
        finally:
            if not getattr(fn, "timed_inside", False):
                _add_time(report, name_, time.perf_counter() - t0)
    return step


def _claim(step: Callable, client: LabelStudioClient, pid: int, writer: Writer | None, settings: Settings,
           report: PushReport, prior: PushState) -> PushState | None:
    """Claim the project (see :mod:`service.writer_claim`): the state to push from, or None while another install
    holds it (nothing is written). After taking over from another install, what it wrote is not known here."""
    if writer is not None:
        turn = claim_writer(client, pid, writer, settings.writer_lease_seconds, time.time(),
                            VIEW, call=step)
        report.claim, report.took_from = turn.seen, turn.replaced
        if turn.other is not None:
            report.other_writer = turn.other
            log.warning("project %s: another sae-backend (install %s) writes this project; %s is not pushed", pid,
                        turn.other.install, report.model_version)
            return None
        if turn.replaced is not None:
            log.warning("project %s: taking the project over from another sae-backend (install %s, its claim %.0f s "
                        "old)", pid, turn.replaced.install, time.time() - turn.replaced.at)
        if turn.took_over:
            prior = PushState(prior.last_number, took_over=True)
    report.took_over = prior.took_over
    return prior


def _add_time(report: PushReport, name: str, seconds: float) -> None:
    report.seconds[name] = round(report.seconds.get(name, 0.0) + seconds, 3)


COLD_START_VERSION = "sae-v0"
RETIRE_PER_TOP_K = 10  # queue copies retired a push, per PUSH_TOP_K


MarksAhead = Callable[[set[int]], None]
RowsAhead = Callable[[int, frozenset[int] | None], None]


def _write_rows(step: Callable, client: LabelStudioClient, pid: int, version: str, number: int, rows: list[dict],
                report: PushReport, prior: PushState, rows_ahead: RowsAhead | None = None) -> None:
    """The version's rows for its head, as one retried step, never written twice by it.

    Deleting the rows of the version Label Studio shows would clear the project's model version, and the view's
    order with it, until the push sets it again; so only a version's first write (and a takeover's: what another
    install wrote under this name is not this version) deletes the version's rows before importing its head, and
    a retry of it deletes again until one delete went through. A version whose rows are known (pushed again
    because new tasks entered its head, or retried after a failure later in its push) reads the head's tasks it
    does not know a row of (a task opened before it entered the head may hold one Label Studio stored from
    ``/predict``; one deleted since is dropped) and adds rows for those that have none. After a failed try, or
    where a push of this version was cut short, the head's tasks are read with their rows first (a timeout may
    have landed; a ``/predict`` row counts), and only those without one get it. A head task deleted in Label
    Studio since the ranking (its webhook not read yet) makes Label Studio refuse the import: its row is dropped
    and the rest read and added. ``rows_ahead`` is told that the rows are unknown before the write and which
    tasks hold one after it, so a process killed meanwhile reads them at its next push.
    """
    same = (prior.rows_number if prior.rows_number is not None else prior.last_number) == number
    if prior.took_over:  # what another install wrote under this name is not this version's
        first = "replace"
    elif same and prior.rows is not None:
        first = "add"
    else:  # a version's first write replaces; one whose push was cut short reads what it left
        first = "read" if prior.rows_number == number else "replace"
    outside = prior.rows - {r["task"] for r in rows} if first == "add" else frozenset()  # rows this push keeps
    done: dict = {"tried": False, "deleted": 0, "written": 0, "known": frozenset(), "sending": set(),
                  "replaced": False}

    def timed(fn: Callable, *args) -> object:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            _add_time(report, fn.__name__, time.perf_counter() - t0)

    def add(known: frozenset[int]) -> None:
        sent = [r for r in rows if r["task"] not in known]
        done["known"], done["sending"] = known, {r["task"] for r in sent}
        if sent:
            done["written"] += timed(client.import_predictions, pid, sent) or 0
        done["sending"] = set()

    def read(tasks: list[int] | None = None) -> dict[int, set[str]]:
        return timed(client.prediction_versions, pid, [r["task"] for r in rows] if tasks is None else tasks)

    def holding(found: dict[int, set[str]]) -> frozenset[int]:
        """The head's tasks holding a row of the version; those a failed import sent count as written by it."""
        held = frozenset(t for t, versions in found.items() if version in versions)
        done["written"] += len(held & done["sending"])
        done["sending"] = set()
        return held

    def write() -> None:
        how = first if not done["tried"] or (first == "replace" and not done["replaced"]) else "read"
        done["tried"] = True
        known = prior.rows if how == "add" else frozenset()
        if how == "replace":
            done["deleted"] += timed(client.delete_predictions, pid, [version]) or 0
            done["replaced"] = True
        elif how == "read":
            known = holding(read()) | outside
        elif fresh := [r["task"] for r in rows if r["task"] not in known]:  # O(new in the head), not O(head)
            found = read(fresh)
            rows[:] = [r for r in rows if r["task"] in found or r["task"] in known]
            known = known | holding(found)
        try:
            add(known)
        except LabelStudioError as e:
            if e.status_code != 400:
                raise
            found = read()  # which head tasks are still there, and which hold a row: Label Studio may have
            gone = {r["task"] for r in rows} - found.keys()  # imported the batches before the refused one
            if not gone:
                raise
            rows[:] = [r for r in rows if r["task"] in found]
            add(known - gone | holding(found))
    write.timed_inside = True

    if rows_ahead is not None:
        rows_ahead(number, None)
    step(write)
    report.rows_deleted += done["deleted"]
    report.rows_written = done["written"]
    report.rows = frozenset(r["task"] for r in rows) | done["known"]
    if rows_ahead is not None:
        rows_ahead(number, report.rows)


def _show_version(step: Callable, client: LabelStudioClient, pid: int, version: str) -> None:
    """Order the project's view by ``version``. Label Studio refuses (400) a version no prediction of the project
    carries: it drops rows it finds invalid from an import without a word (a class the config lost since), so that
    is no failure of the push, which goes on (marks, older rows) and says so in the log."""
    try:
        step(client.set_model_version, pid, version)
    except PushError as e:
        if getattr(e.__cause__, "status_code", None) != 400:
            raise
        log.warning("project %s: Label Studio keeps no row of %s, so its view cannot be ordered by it: %s", pid,
                    version, e)


def _authorize_webhook(step: Callable, client: LabelStudioClient, pid: int, settings: Settings) -> None:
    """Behind basic auth, the webhook Label Studio made for the connected model gets the header (with BACKEND_URL,
    which names it); a failure stops no push: the polls still read every change."""
    header = settings.basic_auth_header()
    if not header or not settings.backend_url:
        return
    try:
        if step(client.authorize_webhook, pid, settings.backend_url.rstrip("/") + "/webhook", header):
            log.info("project %s: its webhook to this backend now carries the basic-auth header", pid)
    except PushError as e:
        log.warning("project %s: its webhook to this backend is refused without basic auth, and could not be given "
                    "it (%s); changes arrive with the polls", pid, e)


def _fill_queue(step: Callable, client: LabelStudioClient, pid: int, top: list[int], rows: list[dict], version: str,
                number: int, settings: Settings, prior: PushState, report: PushReport,
                queue_project_id: int | None) -> None:
    """Queue mode: copy the top-K into the queue project (once each), then order the queue by the version."""
    if not top:
        return
    queue_id, copying = None, False
    tops = tops_after(None if report.took_over else prior.queue_tops, number, top)
    try:
        queue_id = step(client.ensure_queue_project, pid, queue_project_id)
        if settings.backend_url:  # the queue's labels then arrive at once, corrections included
            try:
                step(client.ensure_webhook, queue_id, settings.backend_url.rstrip("/") + "/webhook",
                     QUEUE_ACTIONS, settings.basic_auth_header())
            except PushError as e:  # e.g. Label Studio refuses a private address: the poll still finds them
                log.warning("project %s: no webhook on the queue project (%s); its labels are polled", pid, e)
        try:
            if step(client.match_label_config, queue_id, pid):
                log.info("project %s: its queue project %s took the project's edited label config", pid, queue_id)
        except PushError as e:  # the queue's labels still count; the classes added since are not offered there
            report.queue_config_error = str(e)
            log.warning("project %s: the queue project %s keeps its label config: %s", pid, queue_id, e)
        data = {int(t["id"]): t for t in step(lambda: list(client.tasks_by_id(pid, top)))}
        known = prior.queued if prior.queued is not None and prior.queued.project == queue_id else None
        if known is not None:
            have, worked = dict(known.copies), known.worked
        else:
            have, worked = step(client.read_queue, queue_id)
        copies = [{"id": t, "data": data[t]["data"], "project": pid} for t in top if t in data]
        tries = iter([have])

        def copy_to_queue() -> dict[int, int]:  # a retry reads the queue again: the import may have landed
            return client.copy_to_queue(queue_id, copies, next(tries, None))

        copying = True  # from here the queue may hold this top-K's copies: they stay even if the push fails
        queued = step(copy_to_queue)
        if tops.previous is not None and any(t in queued for t in top):  # the queue keeps a task: deleting its
            queued, worked = _retire_copies(step, client, queue_id, queued,  # last one deletes its tabs, the team's too
                                            tops.recent | tops.previous, worked,
                                            RETIRE_PER_TOP_K * settings.push_top_k, report)
        report.queued = replace(_order_queue(step, client, queue_id, version, number, rows, queued, known, report),
                                worked=worked)
    except PushError as e:
        e.marked, e.queue_project_id, e.queue_tops = report.marked, queue_id, tops if copying else None
        raise
    report.queue_project_id, report.queue_tops = queue_id, tops


def _retire_copies(step: Callable, client: LabelStudioClient, queue_id: int, copies: Mapping[int, int],
                   keep: set[int], worked: frozenset[int], limit: int, report: PushReport
                   ) -> tuple[dict[int, int], frozenset[int]]:
    """Delete the queue's copies of sources outside ``keep`` (the :class:`QueueTops`: every top-K of this version and
    the last of the one before), unless someone worked on them: the copies and the ``worked`` set after it.

    The queue then holds about two top-Ks of work plus the team's, not a top-K for every version; and a task labeled
    in the project leaves the queue within two versions, so no annotator labels it again. A copy stays through the
    version after it leaves the top-K, so one a person has open as a version lands is not pulled away. Label Studio
    checks for annotations, skips and drafts as it deletes (see :meth:`LabelStudioClient.delete_untouched_tasks`);
    the copies it keeps are read and not asked for again (those the queue's read saw annotated never are). At most
    ``limit`` a push, newest first: copies an older backend left go over a few versions.
    """
    stale = sorted((c for s, c in copies.items() if s not in keep and c not in worked), reverse=True)[:limit]
    if not stale:
        return dict(copies), worked
    gone = step(client.delete_untouched_tasks, queue_id, stale) or 0
    left = set() if gone >= len(stale) else {int(t["id"])
                                             for t in step(lambda: list(client.tasks_by_id(queue_id, stale)))}
    report.copies_retired = int(gone)
    removed = set(stale) - left
    return {s: c for s, c in copies.items() if c not in removed}, worked | left


def _order_queue(step: Callable, client: LabelStudioClient, queue_id: int, version: str, number: int,
                 rows: list[dict], copies: Mapping[int, int], known: QueueState | None,
                 report: PushReport) -> QueueState:
    """Order the queue project's work by the version, as the source project's view is: its copies of head tasks
    get the source's row (same score, same suggested label), the queue's ``model_version`` and view follow, and
    the queue's rows of earlier versions go. O(head) rows; a copy whose source left the head sorts last from
    the next version on (a push of the same version keeps its rows, as the source project's does).

    A row is never written twice: a version's first push (after a completed push of an earlier one, or a
    takeover's delete) finds none of its own; any other push (again, retried, after a restart) reads the copies
    it knows no row of before it writes theirs.
    """
    wanted = [{**r, "task": copies[r["task"]]} for r in rows if r["task"] in copies]
    if report.took_over:  # another install's rows under this name are not this version's: none once deleted
        report.rows_deleted += step(client.delete_predictions, queue_id, [version]) or 0
        known, blank = None, True
    else:  # after a completed push of an earlier version, the queue holds none of this one's
        blank = known is not None and known.rows_number is not None and known.rows_number < number
    held = set(known.rows) if known is not None and known.rows_number == number else set()
    lost: set[int] = set()  # copies a person deleted: their sources are copied again at the next push

    def read(tasks: list[int]) -> None:
        """Which of these copies hold a row of the version, and which are gone."""
        found = client.prediction_versions(queue_id, tasks)
        lost.update(set(tasks) - found.keys())
        wanted[:] = [r for r in wanted if r["task"] not in lost]
        held.update(t for t, versions in found.items() if version in versions)

    def queue_rows() -> frozenset[int]:
        nonlocal blank
        missing = [r["task"] for r in wanted if r["task"] not in held]
        if missing and not blank:  # a retry, a restart, a push of the version again: O(copies without a known row)
            read(missing)
        blank = False  # an import that timed out may have landed
        sent = [r for r in wanted if r["task"] not in held]
        try:
            if sent:
                client.import_predictions(queue_id, sent)
        except LabelStudioError as e:
            if e.status_code != 400:
                raise
            before = len(lost)  # Label Studio refuses the whole import for one copy deleted: read which are
            read([r["task"] for r in sent])  # gone, and which hold a row (batches before the refused one landed)
            if len(lost) == before:
                raise
            sent = [r for r in wanted if r["task"] not in held]
            if sent:
                client.import_predictions(queue_id, sent)
        held.update(r["task"] for r in sent)
        return frozenset(held - lost)

    holding = step(queue_rows) if wanted else frozenset(held)
    if holding:  # see _show_version
        _show_version(step, client, queue_id, version)
    step(client.ensure_view, queue_id, *VIEW)
    own = own_versions(step(client.model_versions, queue_id))
    older = [v for v, n in own.items() if n < number or (report.took_over and n != number)]
    if older:
        report.rows_deleted += step(client.delete_predictions, queue_id, older) or 0
    kept = {source: copy for source, copy in copies.items() if copy not in lost}
    return QueueState(queue_id, kept, number, frozenset(holding))


def push_suggestions(client: LabelStudioClient, project_id: int, task_ids: list[int], settings: Settings,
                     prior: PushState, marking: MarksAhead | None = None, writer: Writer | None = None,
                     rows_ahead: RowsAhead | None = None, queue_project_id: int | None = None) -> PushReport:
    """The cold start's first push: suggested tasks in order, before any model can predict a class.

    Rows carry no result (there is no class to suggest yet) and a score that orders them
    in the view; the version is ``sae-v0``, so the first trained version's push deletes
    them like any earlier version of this backend's. In queue mode the first ``PUSH_TOP_K`` are
    the queue's first work. Never follows a trained version.
    """
    report = PushReport(COLD_START_VERSION, 0)
    if prior.last_number not in (None, 0):
        report.stale = True
        return report
    pid = int(project_id)
    prior = _claim(_stepper(report, settings, prior), client, pid, writer, settings, report, prior)
    if prior is None:
        return report
    step = _stepper(report, settings, prior)
    n = max(len(task_ids), 1)
    rows = [{"task": int(t), "model_version": COLD_START_VERSION, "score": round(i / n, 6), "result": []}
            for i, t in enumerate(task_ids)]
    report.head = [int(t) for t in task_ids]
    _write_rows(step, client, pid, COLD_START_VERSION, 0, rows, report, prior, rows_ahead)
    if rows:  # see push_version
        _show_version(step, client, pid, COLD_START_VERSION)
    _authorize_webhook(step, client, pid, settings)
    step(client.ensure_view, pid, *VIEW)
    if prior.took_over:
        others = [v for v in own_versions(step(client.model_versions, pid)) if v != COLD_START_VERSION]
        if others:
            report.rows_deleted += step(client.delete_predictions, pid, others) or 0
    marks = {int(t): {"rank": r + 1, "reason": "typical", "model_version": COLD_START_VERSION}
             for r, t in enumerate(task_ids[: settings.push_top_k])}
    if marking is not None and prior.marked is not None:
        marking(set(prior.marked) | set(marks))
    report.marks_written = step(client.bulk_mark, pid, marks, META_KEY,
                                previous=None if prior.marked is None else set(prior.marked)) or 0
    report.marked = set(marks)
    if settings.push_mode == "queue":
        _fill_queue(step, client, pid, list(marks), rows, COLD_START_VERSION, 0, settings, prior, report,
                    queue_project_id)
    log.info("project %s: pushed %s cold-start suggestions", pid, report.rows_written)
    return report


def push_version(client: LabelStudioClient, project_id: int, config: LabelConfig, served: ServedVersion,
                 settings: Settings, prior: PushState, exclude: set[int] | None = None,
                 marking: MarksAhead | None = None, writer: Writer | None = None,
                 rows_ahead: RowsAhead | None = None, queue_project_id: int | None = None) -> PushReport:
    """Write ``served`` to Label Studio; ``exclude`` = tasks labeled (or deleted) since the version was trained.

    ``marking`` is told, before any mark is written, every task that may carry one afterwards, and
    ``rows_ahead`` which tasks hold the version's rows (see :func:`_write_rows`): a process killed
    mid-way then still knows what the next push must look at. ``writer`` claims the project first
    (nothing is written while another install holds it). ``queue_project_id`` is the queue the last push
    used, kept while Label Studio has it.
    """
    report = PushReport(served.name, served.number)
    if prior.last_number is not None and served.number < prior.last_number:
        report.stale = True
        log.warning("project %s: not pushing %s, sae-v%s is already in Label Studio", project_id, served.name,
                    prior.last_number)
        return report
    pid = int(project_id)
    prior = _claim(_stepper(report, settings, prior), client, pid, writer, settings, report, prior)
    if prior is None:
        return report
    step = _stepper(report, settings, prior)

    head = served.ranking(settings.push_head, exclude)
    pos = served.lookup([t for t, _ in head])
    rows = [{"task": t, "model_version": served.name, "score": float(served.score[p]),
             "result": config.prediction(served.class_names, served.pred[p])}
            for (t, _), p in zip(head, pos, strict=True)]
    report.head = [t for t, _ in head]
    _write_rows(step, client, pid, served.name, served.number, rows, report, prior, rows_ahead)
    if rows:  # none: every task labeled while it trained
        _show_version(step, client, pid, served.name)
    step(client.ensure_view, pid, *VIEW)
    _authorize_webhook(step, client, pid, settings)
    report.head_visible_at = time.time()  # the view orders the work by this version from here on
    own = own_versions(step(client.model_versions, pid))
    older = [v for v, n in own.items() if n < served.number or (report.took_over and n != served.number)]
    newer = sorted(v for v, n in own.items() if n > served.number and not report.took_over)
    report.newer = newer
    if newer:  # this backend never pushes below its own last version: another one writes this project
        log.warning("project %s: Label Studio holds %s, newer than %s: is another sae-backend (another MODEL_DIR) "
                    "writing this project?", pid, ", ".join(newer), served.name)
    if older:
        report.rows_deleted += step(client.delete_predictions, pid, older) or 0
    top = head[: settings.push_top_k]
    marks = {tid: {"rank": r + 1, "margin": round(v, 6) if math.isfinite(v) else None, "model_version": served.name}
             for r, (tid, v) in enumerate(top)}
    previous = None if prior.marked is None or prior.took_over else set(prior.marked) - set(exclude or ())
    carried = set(prior.marked or ()) & set(exclude or ())  # labeled since: the mark stays, cleared if unlabeled again
    may_be_marked = None if previous is None else previous | set(marks) | carried
    if marking is not None and may_be_marked is not None:
        marking(may_be_marked)
    try:
        report.marks_written = step(client.bulk_mark, pid, marks, META_KEY, previous=previous,
                                    keep_existing=previous is not None) or 0
    except PushError as e:
        e.marked = may_be_marked
        raise
    report.marked = set(marks) | carried
    if settings.push_mode == "queue":
        _fill_queue(step, client, pid, [t for t, _ in top], rows, served.name, served.number, settings, prior, report,
                    queue_project_id)
    log.info("project %s: pushed %s (%s rows written, %s deleted, %s marked, %s mark PATCHes)", pid,
             served.name, report.rows_written, report.rows_deleted, len(marks), report.marks_written)
    return report
