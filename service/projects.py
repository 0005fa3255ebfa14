"""The project registry and each project's lifecycle: changes in, trainings and pushes out.

Data flows one way: Label Studio -> :mod:`service.mirror` (changes only) -> a training
job (:mod:`service.training`, plain data) -> a :class:`~service.served.ServedVersion`
(immutable; ``/predict``, ``/ranking`` and the push read it) -> :mod:`service.push`.
Everything that writes to Label Studio for a project runs in the job runner, one job per
project at a time. Request handlers only record changes and answer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from apscheduler.jobstores.base import ConflictingIdError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from tenacity import RetryError

from connectors.label_config import LabelConfig, LabelConfigError, parse_label_config
from connectors.label_studio import LabelStudioClient, LabelStudioError, retrying
from connectors.task_data import DataFetcher, is_inline
from model.acquisition import get_strategy
from model.stopping import WINDOW, should_stop
from model.targets import load_distance_matrix
from service import dir_lock
from service.clock_watch import ClockWatch
from service.jobs import PUSH, TRAIN, JobRunner
from service.metrics import Metrics
from service.mirror import ProjectMirror
from service.pool_store import Mark
from service.push import (
    VIEW,
    PushError,
    PushReport,
    PushState,
    QueueTops,
    RowsAhead,
    push_suggestions,
    push_version,
)
from service.served import ServedVersion, decision_scores, load_served, save_served, score
from service.settings import Settings
from service.training import JobCancelledError, LocalTrainingBackend, ScoringJob, TrainingBackend, TrainingJob
from service.versions import VersionStore, known_projects, own_versions, unread_version_name
from service.writer_claim import Claim, Writer, install_id, keep_claim

log = logging.getLogger("sae_backend")
RANKING_KEEP = 1000
SHUTDOWN_WAIT_SECONDS = 30.0  # a job still running after this keeps MODEL_DIR locked until the process exits
RETRY_SECONDS, RETRY_MAX_SECONDS = 60.0, 3600.0  # after failed trainings in a row: 1, 2, 4 ... 60 minutes
RESUMES_AFTER_CRASHES = 2  # a training that took the process down with it is resumed at start this often in a row
SLOW_LABEL_CHECK_SECONDS = 0.2  # a label check this slow (O(labeled): a very large project) runs once per burst
PREDICT_FETCHERS, PREDICT_DEADLINE_SECONDS = 8, 60.0  # /predict reads unscored tasks 8 at once, for 60 s at most
SCORE_CHUNK = 50_000  # new tasks decoded into memory at once when a version scores what it has not seen


@dataclass
class ProjectState:
    id: int
    label_config: str | None = None
    config: LabelConfig | None = None
    config_error: str | None = None
    ls_url: str | None = None
    access_token: str | None = None
    queue_project_id: int | None = None
    served: ServedVersion | None = None
    training: bool = False
    progress: dict = field(default_factory=dict)
    last_error: str | None = None
    last_error_at: float | None = None
    failures: int = 0  # trainings in a row that failed or ended with the process
    stopped_by_shutdown: bool = False
    push_state: PushState = field(default_factory=PushState)
    push_pending: bool = False
    head_changes: int = 0  # new tasks that entered the served head: a push started before one is not enough
    last_push_error: str | None = None
    last_push: dict = field(default_factory=dict)
    first_event_at: float | None = None
    interrupted: str | None = None
    training_reason: str | None = None
    forced_training: bool = False  # a training asked for outright (START_TRAINING, cron, resume) is pending
    reading: tuple[dict[int, int], tuple[str, ...]] | None = None  # what a running training read: labels, and the
    # label config's classes they index (one value: a status between two writes must not pair one with the other)
    stop_kappas: list[tuple[int, float]] = field(default_factory=list)
    counted_skips: set[int] = field(default_factory=set)  # unreadable tasks already in sae_errors_total
    client_key: tuple | None = None  # the (URL, key) of the client this project last used
    scoring_seconds: float | None = None
    label_check_seconds: float = 0.0  # how long the last label check took (saved with the project)
    suggested: list[int] | None = None
    claim_seen: Claim | None = None  # the writer claim (any install's) this one last read in Label Studio (saved)
    gone_since: float | None = None  # Label Studio answered 404 for the project itself (saved)
    marked_written: frozenset[int] | None = field(default=None, repr=False)  # the marked set its file holds
    marked_record: dict | None = field(default=None, repr=False)  # and what project.json keeps in its place
    mirror: ProjectMirror | None = field(default=None, repr=False)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def version_name(self) -> str | None:
        return self.served.name if self.served else None


ClientFactory = Callable[[str, str], LabelStudioClient]


class NotEnoughLabelsError(Exception):
    """A training asked for (the cron, "Start training") before the labels allow one: the team's to change."""


def make_backend(settings: Settings) -> TrainingBackend:
    """The backend ``TRAINING_BACKEND`` names; Ray is imported only when it is chosen."""
    if settings.training_backend == "ray":
        from service.ray_backend import RayTrainingBackend

        return RayTrainingBackend.from_settings(settings)
    return LocalTrainingBackend()


def count_changes(now: dict[int, int], before: dict[int, int], now_classes: Sequence[str] | None = None,
                  before_classes: Sequence[str] | None = None) -> int:
    """Tasks whose usable label is new, corrected or gone: a correction counts, deletions do not cancel additions.

    Labels are indices into their own class lists and are compared by class name: a label config edit that adds
    or reorders classes changes no label (and a correction between two classes that swapped places still counts).
    """
    if now_classes is not None and before_classes is not None and list(now_classes) != list(before_classes):
        where = {c: i for i, c in enumerate(now_classes)}
        moved = {i: where.get(c, -1 - i) for i, c in enumerate(before_classes)}  # a class gone matches nothing
        before = {t: moved.get(k, -1 - k) for t, k in before.items()}
    return sum(1 for t in now.keys() | before.keys() if now.get(t) != before.get(t))


def _queue_tops(saved: object) -> QueueTops | None:
    """The queue's tops as ``project.json`` keeps them; None (no copy retired until two versions are pushed) where
    they are missing or unreadable."""
    try:
        previous = saved["previous"]
        return QueueTops(int(saved["number"]), frozenset(int(t) for t in saved["recent"]),
                         None if previous is None else frozenset(int(t) for t in previous))
    except (TypeError, KeyError, ValueError):
        return None


class ProjectManager:
    def __init__(self, settings: Settings, client_factory: ClientFactory | None = None,
                 backend: TrainingBackend | None = None, start_scheduler: bool = True,
                 lock_wait_seconds: float = 60.0) -> None:
        self.settings = settings
        self._dir_lock: Path | None = dir_lock.acquire(settings.model_dir, lock_wait_seconds)
        self.install = install_id(settings.model_dir)
        if 0 < settings.writer_lease_seconds <= 2 * settings.poll_interval_seconds:
            log.warning("WRITER_LEASE_SECONDS (%s) is not over twice POLL_INTERVAL_SECONDS (%s): polls renew a claim "
                        "once half the lease has passed, so a live backend may lose its projects",
                        settings.writer_lease_seconds, settings.poll_interval_seconds)
        self.client_factory = client_factory or (lambda url, key: LabelStudioClient(url, key))
        self.backend = backend or make_backend(settings)
        self.metrics = Metrics()
        self.projects: dict[int, ProjectState] = {}
        self._clients: dict[tuple[str, str], LabelStudioClient] = {}
        self._lock = threading.Lock()
        self.runner = JobRunner(self._job, max_workers=settings.training_concurrency)
        self.sync = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync")
        self._polling = threading.Lock()
        self._syncing: set[Future] = set()
        self._sync_lock = threading.Lock()
        self._poll_again = False
        self._shut_down = False
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.clock_watch = ClockWatch(self.scheduler)
        self._restore()
        if start_scheduler:
            self.start_scheduler()
        for st in list(self.projects.values()):
            if st.interrupted is not None and st.failures > RESUMES_AFTER_CRASHES:
                log.error("project %s: %s trainings in a row ended with the process; not resumed at start, the "
                          "poll tries again after a pause (or START_TRAINING now)", st.id, st.failures)
            elif st.interrupted is not None:
                self.request_training(st.id, f"resuming a training the last process did not finish ({st.interrupted})")
            elif st.forced_training:
                self.request_training(st.id, "a training asked for before the last process stopped")
            elif st.push_pending and st.served is not None:
                self.runner.request(st.id, "a push the last process did not finish", PUSH)

    # ---- registration and restore -------------------------------------------------------------
    def store(self, pid: int) -> VersionStore:
        return VersionStore(self.settings.model_dir, pid)

    def get(self, pid: int, create: bool = True) -> ProjectState | None:
        return self._get(pid, create)[0]

    def _get(self, pid: int, create: bool) -> tuple[ProjectState | None, bool]:
        """The project's state, and whether this call made it."""
        with self._lock:
            st = self.projects.get(pid)
            if st is None and create:
                st = self.projects[pid] = ProjectState(pid)
                return st, True
            return st, False

    def mirror(self, st: ProjectState) -> ProjectMirror:
        with st.lock:
            if st.mirror is None:
                st.mirror = ProjectMirror(self.store(st.id).dir / "mirror", st.id, self.settings.image_size,
                                          self.settings.image_bit_depth)
            return st.mirror

    def _restore(self) -> None:
        """Serve the newest complete version of every known project at once, without retraining."""
        for pid in known_projects(self.settings.model_dir):
            st = self.get(pid)
            store = self.store(pid)
            store.clean_temporary()
            info = store.read_project() or {}
            if info.get("label_config"):
                self._set_config(st, info["label_config"])
            st.ls_url = info.get("ls_url")
            st.queue_project_id = info.get("queue_project_id")
            st.interrupted = info.get("training_started")
            st.failures = int(info.get("training_failures") or 0)
            st.last_error, st.last_error_at = info.get("last_error"), info.get("last_error_at")
            if st.interrupted and not info.get("training_stopped_by_shutdown"):
                st.failures += 1
                st.last_error, st.last_error_at = ("the last training ended with the process (killed, perhaps for "
                                                   "memory)", time.time())
            st.push_pending = bool(info.get("push_pending"))
            st.forced_training = bool(info.get("training_asked"))
            st.stop_kappas = [(int(n), float(k)) for n, k in info.get("stop_kappas", [])]
            st.suggested = info.get("suggested")
            with contextlib.suppress(TypeError, ValueError):
                st.gone_since = None if info.get("gone_since") is None else float(info["gone_since"])
            with contextlib.suppress(TypeError, ValueError):  # a slow one is deferred at once; a bad value: unknown
                st.label_check_seconds = float(info.get("label_check_seconds") or 0.0)
            with contextlib.suppress(TypeError, KeyError, ValueError):
                st.claim_seen = Claim(str(info["claim_seen"]["install"]), float(info["claim_seen"]["at"]))
            marked = info.get("marked")
            if isinstance(marked, dict):  # a list: a file of an earlier release
                marked = store.read_marked(marked)
            rows, rows_number = info.get("pushed_rows"), info.get("pushed_rows_number")
            if rows_number is None and st.push_pending:  # a file of an earlier release: a push may have been cut short,
                rows, rows_number = None, info.get("last_pushed_number")  # so a push of that version reads its rows
            st.push_state = PushState(info.get("last_pushed_number"),
                                      None if marked is None else frozenset(int(t) for t in marked),
                                      rows=None if rows is None else frozenset(int(t) for t in rows),
                                      rows_number=rows_number, took_over=bool(info.get("took_over")),
                                      queue_tops=_queue_tops(info.get("queue_tops")))
            if isinstance(info.get("marked"), dict) and st.push_state.marked is not None:
                st.marked_written, st.marked_record = st.push_state.marked, info["marked"]
            # a version whose scoring failed or was cut short has no snapshot: the scored one before it serves
            snapshots = {n: store.dir / f"served-v{n:06d}.npz" for n in store.numbers()}
            for number in sorted(snapshots, key=lambda n: (snapshots[n].exists(), n), reverse=True):
                try:
                    model = store.load(number, self.settings.device)
                    name = model.metadata_["model_version"]
                    path = snapshots[number]
                    if path.exists():
                        st.served = load_served(path, number, name, model)
                    else:
                        st.served = ServedVersion.unscored(number, name, model, self.settings.query_strategy)
                except Exception as e:
                    log.error("project %s: version %s cannot be loaded (%s); trying an older one", pid, number, e)
                    continue
                self._update_metrics(st)
                log.info("project %s: serving %s restored from disk", pid, name)
                last = st.push_state.last_number  # a version saved, its push not yet asked for when the process ended
                st.push_pending = st.push_pending or last is None or st.served.number > last
                break

    def _set_config(self, st: ProjectState, xml: str) -> None:
        st.label_config = xml
        try:
            st.config, st.config_error = parse_label_config(xml), None
        except LabelConfigError as e:
            st.config, st.config_error = None, str(e)

    def _offer_config(self, st: ProjectState, xml: str) -> None:
        """A config from ``/setup``: taken if usable; an unusable one leaves a working one serving, with the error."""
        if st.config is not None:
            try:
                parse_label_config(xml)
            except LabelConfigError as e:
                st.config_error = str(e)
                return
        self._set_config(st, xml)

    def _config_seen(self, st: ProjectState, xml: str | None) -> None:
        """A label config edited in Label Studio without a ``/setup`` call: take it, or keep the old and say why."""
        if not xml:
            return
        if xml == st.label_config:
            if st.config is not None:
                st.config_error = None  # an unusable edit was reverted
            return
        try:
            parse_label_config(xml)
        except LabelConfigError as e:
            if st.config_error != str(e):
                log.warning("project %s: the edited label config is not usable, the old one stays: %s", st.id, e)
            st.config_error = str(e)
            return
        with st.lock:
            self._set_config(st, xml)
            self._persist(st)
        log.info("project %s: label config changed in Label Studio; classes now %s", st.id, st.config.classes)

    def _persist(self, st: ProjectState) -> None:
        ps = st.push_state
        self.store(st.id).write_project({
            "id": st.id, "label_config": st.label_config, "ls_url": st.ls_url,
            "queue_project_id": st.queue_project_id,
            "training_started": st.training_reason if st.training else None,
            "training_stopped_by_shutdown": st.training and st.stopped_by_shutdown,
            "training_asked": st.forced_training,
            "training_failures": st.failures, "last_error": st.last_error, "last_error_at": st.last_error_at,
            "push_pending": st.push_pending, "last_pushed_number": ps.last_number, "took_over": ps.took_over,
            "marked": self._marked_record(st),
            "pushed_rows": None if ps.rows is None else sorted(ps.rows),
            "pushed_rows_number": ps.last_number if ps.rows_number is None else ps.rows_number,
            "queue_tops": None if ps.queue_tops is None else {
                "number": ps.queue_tops.number, "recent": sorted(ps.queue_tops.recent),
                "previous": None if ps.queue_tops.previous is None else sorted(ps.queue_tops.previous)},
            "stop_kappas": st.stop_kappas[-20:], "suggested": st.suggested,
            "label_check_seconds": st.label_check_seconds, "gone_since": st.gone_since,
            "claim_seen": None if st.claim_seen is None else st.claim_seen.as_dict()})

    def _marked_record(self, st: ProjectState) -> dict | None:
        """The marked set's place in ``project.json``: its file, written again only when the set changed."""
        marked = st.push_state.marked
        if marked is None:
            return None
        if st.marked_written is not marked:
            st.marked_record, st.marked_written = self.store(st.id).write_marked(marked), marked
        return st.marked_record

    def setup(self, pid: int, schema: str | None, hostname: str | None, access_token: str | None) -> ProjectState:
        """Register a project from Label Studio's ``/setup`` call; no network calls here."""
        st, new = self._get(pid, create=True)
        with st.lock:
            before = (st.label_config, st.ls_url)
            if schema:
                self._offer_config(st, schema)
            if hostname and hostname.rstrip("/") != st.ls_url:
                st.ls_url = hostname.rstrip("/")
                if not self.settings.label_studio_url:  # a token goes only to the server it came with
                    st.access_token = None
            if access_token:
                st.access_token = access_token
            if st.gone_since is not None:  # Label Studio asks: it has the project (again)
                st.gone_since = None
                new = True
            if new or (st.label_config, st.ls_url) != before:
                self._persist(st)  # Label Studio calls /setup before every batch: an fsync only when it changed
        if st.config_error:
            log.warning("project %s: label config cannot be served: %s", pid, st.config_error)
        return st

    # ---- Label Studio access -------------------------------------------------------------------
    def ls_url(self, st: ProjectState) -> str:
        url = self.settings.label_studio_url or st.ls_url
        if not url:
            raise RuntimeError("no Label Studio URL: set LABEL_STUDIO_URL or connect the backend from Label Studio")
        return url.rstrip("/")

    def api_key(self, st: ProjectState) -> str:
        key = self.settings.api_key() or st.access_token
        if not key:
            raise RuntimeError("no Label Studio API key: set LABEL_STUDIO_API_KEY")
        return key

    def client(self, st: ProjectState) -> LabelStudioClient:
        """One client per server and key, kept: polls and jobs reuse its connections instead of leaking new ones."""
        key = (self.ls_url(st), self.api_key(st))
        with self._lock:
            if key not in self._clients:
                self._clients[key] = self.client_factory(*key)
            old, st.client_key = st.client_key, key
            if old is not None and old != key and all(p.client_key != old for p in self.projects.values()):
                # a new token or URL: no project asks for the old client again; a job may still hold it, so it
                # is dropped, not closed, and goes when that job lets go of it
                self._clients.pop(old, None)
            return self._clients[key]

    def fetcher(self, st: ProjectState) -> DataFetcher:
        s = self.settings
        return DataFetcher(self.ls_url(st), self.api_key(st), s.data_allowed_hosts,
                           timeout=s.fetch_timeout_seconds, max_bytes=s.fetch_max_bytes)

    def _config(self, st: ProjectState, client: LabelStudioClient) -> LabelConfig:
        if st.config is None:
            if st.label_config is None:
                self._set_config(st, client.get_project(st.id)["label_config"])
            if st.config is None:
                raise LabelConfigError(st.config_error or "no label config")
        return st.config

    # ---- changes in (service.webhooks records them) ---------------------------------------------
    def states(self) -> dict[int, ProjectState]:
        """A copy of the registry, safe to read while projects register."""
        with self._lock:
            return dict(self.projects)

    def tasks_created(self, pid: int, tasks: list[dict]) -> str:
        """TASKS_CREATED: stored and scored on the background thread, so the webhook answers at once."""
        if not self.mirror(self.get(pid)).ingested or not tasks:
            return "ignored"
        with self._sync_lock:  # the shutdown sees every submitted scoring, or none is submitted
            if self.runner.closed:
                return "ignored"
            future = self.sync.submit(self._new_tasks, pid, tasks)
            self._syncing.add(future)
        future.add_done_callback(self._syncing.discard)
        return "scoring"

    def request_training(self, pid: int, reason: str, forced: bool = True) -> str:
        """``forced=False`` (label changes): the training checks again when it starts that enough changed."""
        st = self.get(pid)
        st.first_event_at = None
        if forced:  # only set here: a label change coalesced with a pending forced request must not undo it
            st.forced_training = True
        outcome = self.runner.request(pid, reason, TRAIN)
        self.metrics.queue.set(self.runner.queue_length())
        log.info("project %s: training %s (%s)", pid, outcome, reason)
        return outcome

    def changes(self, st: ProjectState, labels: dict[int, int], classes: Sequence[str]) -> int:
        """Label changes since the version in service (or since what a running training read); ``labels`` are
        indices into ``classes``, the label config's they were resolved with."""
        reading = st.reading
        if self.runner.is_busy(st.id) and reading is not None:
            return count_changes(labels, reading[0], classes, reading[1])
        if st.served is None:
            return count_changes(labels, {})
        return count_changes(labels, st.served.labels, classes, st.served.class_names)

    def label_webhook(self, pid: int, reason: str) -> str:
        """A webhook's label change, recorded already: checked at once, or, where a check takes long (it reads
        every labeled task), once per burst a second later, so that webhooks answer within Label Studio's 1 s."""
        st = self.get(pid)
        if st.label_check_seconds < SLOW_LABEL_CHECK_SECONDS or not self.scheduler.running:
            return self.labels_changed(pid, reason)
        with contextlib.suppress(ConflictingIdError):  # one is due: it reads this change too
            self.scheduler.add_job(self.labels_changed, "date", args=[pid, f"{reason} and what followed"],
                                   run_date=datetime.now().astimezone() + timedelta(seconds=1),
                                   id=f"label-check-{pid}", misfire_grace_time=None,
                                   max_instances=4)  # one due while the last still runs must run, not be dropped
        return "checking"

    def labels_changed(self, pid: int, reason: str) -> str:
        """Debounced trigger: train once enough labels changed since the version in service."""
        st = self.get(pid)
        config = st.config
        if config is None:
            return "no-config"
        if not self.mirror(st).ingested:
            if st.served is not None or self.runner.is_busy(pid):
                return "ingesting"
            return self._debounced(st, f"{reason}: first connection")
        t0 = time.perf_counter()
        labels, _ = self.mirror(st).labels(config)
        n = self.changes(st, labels, config.classes)
        st.label_check_seconds = time.perf_counter() - t0
        if self.backing_off(st):
            return "backing-off"
        if st.served is None and st.reading is None:
            if len(set(labels.values())) < 2 or len(labels) < max(2, self.settings.retrain_min_new_labels):
                return "below-threshold"
        elif n < self.settings.retrain_min_new_labels:
            return "below-threshold"
        return self._debounced(st, f"{reason}: {n} label changes")

    def backing_off(self, st: ProjectState) -> bool:
        """After failed trainings in a row, label changes and the poll wait before trying again (not START_TRAINING)."""
        if not st.failures or st.last_error_at is None:
            return False
        wait = min(RETRY_SECONDS * 2 ** min(st.failures - 1, 16), RETRY_MAX_SECONDS)
        return time.time() < st.last_error_at + wait

    def _debounced(self, st: ProjectState, reason: str) -> str:
        now = time.monotonic()
        if st.first_event_at is None:
            st.first_event_at = now
        delay = self.settings.retrain_debounce_seconds
        if delay <= 0 or now - st.first_event_at >= self.settings.retrain_max_delay_seconds:
            return self.request_training(st.id, reason, forced=False)
        self.scheduler.add_job(self.request_training, "date", args=[st.id, f"debounced: {reason}"],
                               kwargs={"forced": False},
                               run_date=datetime.now().astimezone() + timedelta(seconds=delay),
                               id=f"debounce-{st.id}", replace_existing=True, misfire_grace_time=None)
        return "debounced"

    def _new_tasks(self, pid: int, tasks: list[dict]) -> None:
        """TASKS_CREATED: store the new items and score them with the version in service, within seconds."""
        st = self.get(pid)
        try:
            client = self.client(st)
            config = self._config(st, client)
            with self.fetcher(st) as fetcher:  # its connections and TLS context go now, not at a later GC pass
                self.mirror(st).add_tasks(tasks, config, fetcher)
            self._score_missing(st)
            self.mirror(st).save()
        except Exception as e:
            self.metrics.errors.labels("data").inc()
            log.error("project %s: new tasks could not be scored: %s", pid, e, exc_info=True)

    def _score_missing(self, st: ProjectState) -> None:
        """Score stored tasks the served version does not know yet, merge them in, push if they enter the head."""
        for _ in range(3):
            served = st.served
            if served is None:
                return
            m = self.mirror(st)
            ids, mark = m.store.ids_since(served.rows_mark)
            new = ids[served.lookup(ids) < 0]
            if len(new) == 0:
                self._covered(st, served, mark)
                return
            kept, parts = [], []
            for i in range(0, len(new), SCORE_CHUNK):  # items a chunk at a time; a task deleted meanwhile drops out
                ids_i, items = m.store.get_live(new[i:i + SCORE_CHUNK])
                if len(ids_i):
                    kept.append(ids_i)
                    parts.append(decision_scores(served.model, items))
            if not kept:
                self._covered(st, served, mark)
                return
            new = np.concatenate(kept)
            d, z = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
            scored, _ = score(served.model, d, get_strategy(served.strategy), codes=z)
            labeled = set(m.labels(st.config)[0]) if st.config is not None else set()
            with st.lock:
                if st.served is not served:
                    continue
                st.served = served.with_items(new, scored, max(RANKING_KEEP, self.settings.push_head), mark, z)
                head = {t for t, _ in st.served.ranking(self.settings.push_head, labeled)}  # as the push will see it
                entered = bool(head & set(new.tolist()))
                if entered:
                    st.push_pending = True
                    st.head_changes += 1
                    self._persist(st)
            self._update_metrics(st)
            log.info("project %s: %s new tasks scored by %s", st.id, len(new), served.name)
            if entered:
                self.runner.request(st.id, "new tasks entered the head", PUSH)
            return

    @staticmethod
    def _covered(st: ProjectState, served: ServedVersion, mark: Mark) -> None:
        """Nothing new up to ``mark``: the next look at the pool starts there (O(new tasks), not O(pool))."""
        with st.lock:
            if st.served is served and served.rows_mark != mark:
                st.served = dataclasses.replace(served, rows_mark=mark)

    def poll(self) -> None:
        """Catch what webhooks missed (the tasks saved since the last poll, counters) and retry pending pushes."""
        if not self._polling.acquire(blocking=False):  # a poll runs (it reads again), or the shutdown began
            self._poll_again = True
            return
        try:
            while True:
                self._poll_again = False
                self._poll()
                if not self._poll_again or self.runner.closed:
                    break
        finally:
            self._polling.release()

    def _poll(self) -> None:
        for st in list(self.projects.values()):
            if self.runner.closed:
                return
            if (st.config is None and not self._config_fixed(st)) or self._still_gone(st):
                continue
            faults: list[str] = []
            self._poll_project(st, faults)
            if faults and not self._gone(st):  # Label Studio away fails every step of a project's poll: it counts once
                self.metrics.errors.labels("poll").inc()

    def _config_fixed(self, st: ProjectState) -> bool:
        """A project set up with a config this backend cannot use: one read a poll, so a config fixed in Label
        Studio is taken without waiting for its next ``/setup``."""
        if st.label_config is None or st.gone_since is not None:
            return False
        try:
            xml = self.client(st).get_project(st.id).get("label_config")
        except Exception as e:
            if not (isinstance(e, LabelStudioError) and e.status_code == 404 and self._gone(st)):
                log.warning("project %s: its label config could not be read again: %s", st.id, e)
            return False
        self._config_seen(st, xml)
        return st.config is not None

    def _gone(self, st: ProjectState) -> bool:
        """After a failed poll: whether Label Studio no longer has the project. Then it is counted once
        (``errors{project_gone}``) and not polled, trained or pushed until Label Studio has it again."""
        try:
            client = self.client(st)
            client.get_project(st.id)
            return False
        except LabelStudioError as e:
            if e.status_code != 404:
                return False
        except Exception:
            return False
        if not self._unlisted(st, st.id):
            return False
        with st.lock:
            st.gone_since = time.time()
            self._persist(st)
        self.metrics.errors.labels("project_gone").inc()
        log.warning("project %s: Label Studio no longer has it (404); it is no longer polled, trained or pushed "
                    "until Label Studio has it again", st.id)
        return True

    def _unlisted(self, st: ProjectState, project_id: int) -> bool:
        """Label Studio's project list lacks ``project_id``: a 404 from a wrong URL path, or from a proxy while Label
        Studio restarts, is not a project gone (nor is a list that cannot be read)."""
        try:
            return not any(int(p.get("id", -1)) == project_id for p in self.client(st).list_projects())
        except Exception:
            return False

    def _still_gone(self, st: ProjectState) -> bool:
        """A project Label Studio had deleted: one read a poll, so one made again under its id comes back."""
        if st.gone_since is None:
            return False
        try:
            self.client(st).get_project(st.id)
        except Exception:
            return True
        with st.lock:
            st.gone_since = None
            self._persist(st)
        log.info("project %s: Label Studio has it again", st.id)
        return False

    def _poll_project(self, st: ProjectState, faults: list[str]) -> None:
        """Each step fails alone, so one broken step (scoring, the claim) keeps neither the labels nor the push."""
        pid = st.id
        busy = st.training or self.runner.is_busy(pid)
        try:  # a long training must not let the claim lapse
            self._check_claim(st)
        except Exception as e:
            self._poll_failed(pid, faults, "writer claim", e)
        if st.push_pending and st.served is not None:
            self.runner.request(pid, "poll: pending push", PUSH)
        if busy:  # a push it just asked for must not stop the poll reading Label Studio: it may fail for good
            return
        try:
            client = self.client(st)
            m = self.mirror(st)
            if not m.ingested:
                if self.backing_off(st):
                    return
                if client.labeled_count(pid) >= 2:
                    self.request_training(pid, "poll: first connection")
                elif self._wants_cold_start(st):
                    self.request_training(pid, "poll: cold start")
                return
            queue = st.queue_project_id  # in any mode: labels made there count after PUSH_MODE went back to view
            with self.fetcher(st) as fetcher:
                self._queue_read(st, m.reconcile(client, st.config, fetcher,
                                                 self.settings.reconcile_full_scan_seconds, queue))
            self._config_seen(st, (m.state.get("counters") or {}).get("label_config"))
        except Exception as e:
            self._poll_failed(pid, faults, "poll", e)
            return
        try:  # new tasks left unscored must not keep the poll from the labels
            self._score_missing(st)
        except Exception as e:
            self._poll_failed(pid, faults, "scoring new tasks", e)
        try:
            if self._wants_cold_start(st) and (st.suggested or not self.backing_off(st)) \
                    and len({*m.labels(st.config)[0].values()}) < 2:
                if not self._yielding(st):  # another install's work stands while its claim holds
                    self.request_training(pid, "poll: cold start")
                return
            self.labels_changed(pid, "poll")
        except Exception as e:  # nor one project the others
            self._poll_failed(pid, faults, "label check", e)

    def _queue_read(self, st: ProjectState, done: dict) -> None:
        """A queue project that cannot be read fails neither the poll nor a training; a deleted one is made again."""
        if not done.get("queue_error") or done.get("queue_project") != st.queue_project_id:
            return  # read fine, or a push made a new queue meanwhile
        self.metrics.errors.labels("poll").inc()
        if not done.get("queue_gone") or not self._unlisted(st, done["queue_project"]):
            log.warning("project %s: its queue project could not be read: %s", st.id, done["queue_error"])
            return
        log.warning("project %s: its queue project %s is gone from Label Studio, and its labels with it; the next "
                    "push makes a new one", st.id, st.queue_project_id)
        self.mirror(st).forget_queue()
        with st.lock:
            st.queue_project_id = None
            if self.settings.push_mode == "queue":  # a queue left behind by PUSH_MODE=view is not made again
                st.push_pending = st.served is not None or st.push_state.last_number == 0  # the cold start's, too
            self._persist(st)

    def poll_soon(self, reason: str) -> str:
        """A change a webhook names but does not carry (annotations created in bulk, a project edit): the poll,
        a few small requests when nothing moved, runs in a moment and reads it; a burst of them asks once."""
        if self.runner.closed:
            return "ignored"
        try:  # one already asked for stays: a steady stream of events must not keep putting it off
            self.scheduler.add_job(self.poll, "date", run_date=datetime.now().astimezone() + timedelta(seconds=2),
                                   id="poll-soon", misfire_grace_time=None)
        except ConflictingIdError:
            return "polling"
        log.info("a poll in a moment: %s", reason)
        return "polling"

    @staticmethod
    def _poll_failed(pid: int, faults: list[str], what: str, e: Exception) -> None:
        log.warning("project %s: %s failed: %s", pid, what, e)
        faults.append(what)

    def cron(self) -> None:
        """Scheduled retrains of every project that has a label config (the others have nothing to train)."""
        for pid, st in list(self.projects.items()):
            if st.config is not None and st.gone_since is None:
                self.request_training(pid, "RETRAIN_CRON")

    def start_scheduler(self) -> None:
        """The poll runs at once too: it reads what changed while the service was down, and opens every
        project's mirror before a webhook would have to (seconds at a hundred thousand labels)."""
        self.scheduler.add_job(self.poll, "interval", seconds=self.settings.poll_interval_seconds, id="poll",
                               max_instances=1, coalesce=True, next_run_time=datetime.now().astimezone())
        if self.settings.retrain_cron:
            self.scheduler.add_job(self.cron, CronTrigger.from_crontab(self.settings.retrain_cron), id="cron")
        self.scheduler.start()
        self.clock_watch.start()

    def shutdown(self, wait_seconds: float = SHUTDOWN_WAIT_SECONDS) -> None:
        """Stop the jobs (a running training stops at its next epoch and resumes at the next start), save the
        mirrors, and let go of ``MODEL_DIR`` only once nothing of this process writes there any more."""
        if self._shut_down:
            return
        self._shut_down = True
        self.clock_watch.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for st in list(self.projects.values()):  # a kill after the grace period is still no crash of the training
            if st.training or st.forced_training:  # one asked for and not yet started runs at the next start
                with st.lock:
                    st.stopped_by_shutdown = st.training
                    self._persist(st)
        self.backend.close()
        deadline = time.monotonic() + wait_seconds
        stopped = self.runner.shutdown(wait_seconds)
        with self._sync_lock:
            self.sync.shutdown(wait=False, cancel_futures=True)
            scoring = list(self._syncing)
        stopped = not futures_wait(scoring, max(deadline - time.monotonic(), 0.0)).not_done and stopped
        stopped = self._polling.acquire(timeout=max(deadline - time.monotonic(), 0.0)) and stopped
        with self._lock:
            states = list(self.projects.values())
        for st in states:  # webhook changes since the last poll (a correction moves no counter)
            if st.mirror is not None:
                try:
                    st.mirror.save()
                except OSError as e:
                    log.error("project %s: the mirror could not be saved at shutdown: %s", st.id, e)
        if not stopped:  # the process's exit lets go of the lock; a job still running keeps its clients
            log.error("jobs still running %.0f s after the shutdown began: MODEL_DIR stays locked until the "
                      "process exits", wait_seconds)
            return
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            if hasattr(c, "close"):
                c.close()
        if self._dir_lock is not None:
            dir_lock.release(self._dir_lock)
            self._dir_lock = None  # a second shutdown must not release another manager's hold

    # ---- jobs: training, push ------------------------------------------------------------------
    def _progress(self, st: ProjectState) -> Callable[[str, float], None]:
        def report(stage: str, fraction: float) -> None:
            st.progress = {"stage": stage, "fraction": round(float(fraction), 3)}
        return report

    def _job(self, pid: int, kind: str, reason: str) -> None:
        st = self.get(pid)
        if self._still_gone(st):  # a resumed training, a pending push, a webhook
            log.info("project %s: not run (%s): Label Studio no longer has it", pid, reason)
            return
        if kind == PUSH:
            if st.push_pending and st.served is not None:
                self._push(st, self.client(st))
            return
        forced, st.forced_training = st.forced_training, False
        if not forced and self._nothing_new(st):
            log.info("project %s: no training, fewer than %s label changes since %s by now (%s)", pid,
                     self.settings.retrain_min_new_labels, st.version_name, reason)
            if st.push_pending and st.served is not None:  # a pending training absorbed the push
                self._push(st, self.client(st))
            return
        t0 = time.perf_counter()
        cancelled = False
        try:  # the start's record too: a full disk must fail this training, not leave it "running" for good
            st.training, st.training_reason, st.stopped_by_shutdown = True, reason, False
            st.progress = {"stage": "starting", "fraction": 0.0, "reason": reason}
            with st.lock:
                self._persist(st)
            self.metrics.training.labels(str(pid)).set(1)
            self._train(st)
            st.last_error, st.failures = None, 0
        except NotEnoughLabelsError as e:  # the labels, not a fault: no failure, backoff or alert; status says so
            st.last_error, st.last_error_at, st.failures = str(e), time.time(), 0
            log.info("project %s: no training (%s): %s", pid, reason, e)
        except JobCancelledError as e:
            cancelled = True
            st.stopped_by_shutdown = True
            with st.lock:  # the record still says "training started", so the next start resumes it
                self._persist(st)
            log.info("project %s: training stopped by the shutdown, resumes at the next start: %s", pid, e)
        except Exception as e:
            st.last_error, st.last_error_at = f"{type(e).__name__}: {e}", time.time()
            st.failures += 1
            self.metrics.errors.labels("training").inc()
            log.error("project %s: training failed, %s keeps serving: %s", pid, st.version_name, st.last_error,
                      exc_info=True)
        finally:
            st.training = False
            st.progress = {}
            st.interrupted = None
            st.reading = None
            self.metrics.training.labels(str(pid)).set(0)
            self.metrics.training_seconds.labels(str(pid)).observe(time.perf_counter() - t0)
            self.metrics.queue.set(self.runner.queue_length())
            if not cancelled:
                try:
                    with st.lock:
                        self._persist(st)
                except OSError as e:  # a full disk: the state in memory is right, the next write records it
                    log.error("project %s: the training's end could not be recorded: %s", pid, e)

    def _nothing_new(self, st: ProjectState) -> bool:
        """A label-driven training whose changes the version in service already has, e.g. a follow-up asked for
        while the training before it had not yet read the labels, would learn nothing new."""
        config = st.config
        if st.served is None or config is None or not self.mirror(st).ingested:
            return False
        changed = self.changes(st, self.mirror(st).labels(config)[0], config.classes)
        return changed < self.settings.retrain_min_new_labels

    def _class_distances(self, config: LabelConfig) -> tuple[tuple[float, ...], ...] | None:
        """``CLASS_DISTANCES`` in this project's class order, read at every training so an edit takes effect."""
        path = self.settings.class_distances
        if path is None:
            return None
        try:
            d = load_distance_matrix(path, config.classes)
        except (OSError, ValueError) as e:
            raise ValueError(f"CLASS_DISTANCES ({path}) does not fit this project's classes: {e}") from None
        return tuple(tuple(float(v) for v in row) for row in d)

    def _train(self, st: ProjectState) -> None:
        client = self.client(st)
        config = self._config(st, client)
        distances = self._class_distances(config)
        report = self._progress(st)
        m = self.mirror(st)
        t_read = time.perf_counter()
        with self.fetcher(st) as fetcher:
            if not m.ingested:
                report("ingesting tasks", 0.0)
                m.ingest(client, config, fetcher, report)
            else:
                report("reading changes", 0.0)
                queue = st.queue_project_id  # in any mode: labels made there count after PUSH_MODE went back to view
                self._queue_read(st, m.reconcile(client, config, fetcher, self.settings.reconcile_full_scan_seconds,
                                                 queue))
        m.compact()
        read_seconds = round(time.perf_counter() - t_read, 3)
        labels, _ = m.labels(config)
        st.reading = labels, tuple(config.classes)
        ids, mark = m.store.ids_since(None)
        skipped = set(m.skipped)
        if skipped - st.counted_skips:  # each unreadable task once, not again at every version
            self.metrics.errors.labels("data").inc(len(skipped - st.counted_skips))
        st.counted_skips = skipped | (st.counted_skips & set(m.retrying))  # nor after each daily try again
        s = self.settings
        if len(set(labels.values())) < 2:
            if self._wants_cold_start(st):
                self._cold_start(st, client, ids, config)
                return
            raise NotEnoughLabelsError(f"a version needs labels of at least two classes; {len(labels)} tasks are "
                                       f"labeled, with {len(set(labels.values()))} class")
        store = self.store(st.id)
        previous = st.served
        job = TrainingJob(st.id, str(m.store.directory), ids, labels, list(config.classes),
                          s.sae_settings(),
                          str(store.path(previous.number)) if previous is not None else None, s.device,
                          class_distances=distances)
        result = self.backend.run(job, report)
        report("saving", 1.0)
        if previous is None:
            self._skip_label_studio_versions(st, client, store)
        number, name = store.save(result.model, {**result.metrics, "read_seconds": read_seconds})
        report("scoring the pool", 1.0)
        t_score = time.perf_counter()
        keep = max(RANKING_KEEP, s.push_head)
        scoring = ScoringJob(str(m.store.directory), ids, np.fromiter(labels, np.int64, len(labels)),
                             str(store.path(number)), s.query_strategy, keep, device=s.device)
        try:
            served = dataclasses.replace(ServedVersion.from_shards(
                number, name, result.model, s.query_strategy, labels,
                self.backend.score(scoring, result.model, report), keep), rows_mark=mark)
            save_served(served, store.dir / f"served-v{number:06d}.npz")
        except BaseException:  # never served: a scoring that fails at every try must not fill the disk with versions
            store.discard(number)
            raise
        kappa = served.agreement_with(previous, s.stop_set_size) if previous is not None else None
        with st.lock:
            st.scoring_seconds = round(time.perf_counter() - t_score, 3)
            if kappa is not None:
                st.stop_kappas = [*st.stop_kappas, (number, round(kappa, 5))][-20:]
            st.served = served
            st.push_pending = True
            st.training = False  # done: a stop during the push that follows resumes the push, not the training
            self._persist(st)
        try:
            store.prune(s.keep_versions, number)
        except OSError as e:  # the new version serves all the same; the next training tries again
            log.warning("project %s: older versions could not be deleted: %s", st.id, e)
        self._update_metrics(st)
        log.info("project %s: %s in service (%s labeled, cv accuracy %s, train %.1f s, score %.1f s)", st.id, name,
                 result.metrics["labeled"], result.metrics["cv_accuracy"], result.metrics["train_seconds"],
                 time.perf_counter() - t_score)
        try:  # the version serves from here on: what follows fails on its own, not as the training
            self._score_missing(st)
        except Exception as e:
            self.metrics.errors.labels("data").inc()
            log.error("project %s: tasks new to %s could not be scored: %s", st.id, name, e, exc_info=True)
        report("pushing to Label Studio", 1.0)
        self._push(st, client)

    def _skip_label_studio_versions(self, st: ProjectState, client: LabelStudioClient, store: VersionStore) -> None:
        """A first version numbers itself past every ``sae-vN`` Label Studio holds (a lost or new ``MODEL_DIR``).

        Retried like a push step; if Label Studio stays away the training fails before anything is saved, so
        the next one asks again (a version saved under a reused name could not be renamed).
        """
        try:
            versions = retrying(self.settings.push_retries)(client.model_versions, st.id)
        except (LabelStudioError, RetryError) as e:
            raise RuntimeError(f"could not read Label Studio's model versions to number the first version: {e}") \
                from e
        found = own_versions(versions).values()
        if found:
            store.skip_past(max(found))

    def _writer(self, st: ProjectState) -> Writer:
        """This install as a push claims the project; taking over from another, it forgets what it knew at once."""
        def taken() -> None:
            with st.lock:
                st.push_state = PushState(st.push_state.last_number, took_over=True)
                self._persist(st)
        return Writer(self.install, st.claim_seen, taken)

    def _check_claim(self, st: ProjectState) -> None:
        """At every poll, busy or not (a quiet hour or a long training must not let the holder's claim lapse), of
        every install: the claim it last read is kept up to date, and the holder renews its own."""
        lease = self.settings.writer_lease_seconds
        if lease <= 0:
            return
        before = st.claim_seen
        seen = keep_claim(self.client(st), st.id, Writer(self.install, before), lease, time.time(), VIEW)
        if seen != before:
            with st.lock:
                if st.claim_seen == before:  # else a push meanwhile read or wrote a newer one
                    st.claim_seen = seen
                    self._persist(st)

    def _yielding(self, st: ProjectState) -> bool:
        """Does another install's claim, as this one last read it, hold the project?"""
        return Writer(self.install).live_other(st.claim_seen, self.settings.writer_lease_seconds, time.time())

    def _wants_cold_start(self, st: ProjectState) -> bool:
        """Cold-start suggestions are on, no version was trained, and the suggestions are not in Label Studio
        (never pushed, or pushed and to be pushed again: their queue project was deleted)."""
        last = st.push_state.last_number
        return self.settings.cold_start == "typicality" and st.served is None and (
            last is None or (last == 0 and st.push_pending))

    def _cold_start(self, st: ProjectState, client: LabelStudioClient, ids: np.ndarray, config: LabelConfig) -> None:
        """Before two classes are labeled: suggest the first tasks to label (typical items), once."""
        if len(ids) == 0:
            log.info("project %s: no tasks yet, nothing to suggest", st.id)
            return
        s = self.settings
        if st.suggested is None:
            job = TrainingJob(st.id, str(self.mirror(st).store.directory), ids, {}, list(config.classes),
                              s.sae_settings(), None, s.device)
            st.suggested = [int(t) for t in self.backend.suggest(job, s.push_head, self._progress(st))]
            with st.lock:
                self._persist(st)
        m = self.mirror(st)
        labels = m.labels(config)[0]
        if len(set(labels.values())) >= 2:
            log.info("project %s: labels arrived during the cold start; training instead of suggesting", st.id)
            self.runner.request(st.id, "labels arrived during the cold start")
            return
        self._progress(st)("pushing to Label Studio", 1.0)
        try:  # a suggestion labeled meanwhile (one class so far) is work done: it is neither ranked nor marked
            report = push_suggestions(client, st.id, [t for t in st.suggested if t in m.store and t not in labels],
                                      s, st.push_state, self._marking(st), self._writer(st), self._rows_ahead(st),
                                      st.queue_project_id)
        except PushError as e:
            self._push_failed(st, e, "the cold-start suggestions")
            return
        except Exception as e:  # anything else (a closed client, a bug) fails the push, as a version's does
            self._push_failed(st, PushError(f"{type(e).__name__}: {e}"), "the cold-start suggestions")
            return
        self._pushed(st, report)

    def _push(self, st: ProjectState, client: LabelStudioClient) -> None:
        with st.lock:
            served, config, changes = st.served, st.config, st.head_changes
        if served is None or config is None:
            return
        try:
            m = self.mirror(st)
            gone = self._tasks_deleted_since(st, served)
            report = push_version(client, st.id, config, served, self.settings, st.push_state,
                                  set(m.labels(config)[0]) | gone, self._marking(st), self._writer(st),
                                  self._rows_ahead(st), st.queue_project_id)
        except PushError as e:
            e.marked = None if e.marked is None else set(e.marked) - gone
            self._push_failed(st, e, served.name)
            return
        except Exception as e:  # anything else (a closed client, a bug) fails the push, not the version before it
            self._push_failed(st, PushError(f"{type(e).__name__}: {e}"), served.name)
            return
        report.marked -= gone
        self._pushed(st, report, changes)

    def _tasks_deleted_since(self, st: ProjectState, served: ServedVersion) -> set[int]:
        """Tasks of the version's head, or marked, that were deleted since."""
        marked = st.push_state.marked or frozenset()
        store = self.mirror(st).store
        return {t for t in [*served.head_ids.tolist(), *marked] if t not in store}

    def labeled_now(self, st: ProjectState) -> set[int]:
        """The tasks with a usable label in the mirror (none before its ingest)."""
        m = self.mirror(st)
        return set(m.labels(st.config)[0]) if st.config is not None and m.ingested else set()

    def left_out(self, st: ProjectState, served: ServedVersion) -> set[int]:
        """What the ranking leaves out now, as the push does: tasks labeled or deleted since the version."""
        return self.labeled_now(st) | self._tasks_deleted_since(st, served)

    def _record_push_state(self, st: ProjectState, **changes: object) -> None:
        """What a push is about to leave in Label Studio, kept in project.json before it writes it."""
        with st.lock:
            st.push_state = dataclasses.replace(st.push_state, **changes)
            self._persist(st)

    def _marking(self, st: ProjectState) -> Callable[[set[int]], None]:
        """Record, before a push writes marks, every task that may carry one after it (kept in project.json)."""
        return lambda may_be_marked: self._record_push_state(st, marked=frozenset(may_be_marked))

    def _rows_ahead(self, st: ProjectState) -> RowsAhead:
        """Record which tasks hold a version's rows: unknown while a push writes them, then known (project.json)."""
        return lambda number, rows: self._record_push_state(st, rows=rows, rows_number=number)

    def _push_failed(self, st: ProjectState, e: PushError, what: str) -> None:
        """Keep what the failed push may have marked (its rows were recorded as it wrote them); the next poll
        retries."""
        with st.lock:
            unknown = e.marked is None or st.push_state.took_over  # after a takeover every mark is read again
            st.push_state = dataclasses.replace(st.push_state, marked=None if unknown
                                                else frozenset(e.marked), queued=None,  # read the queue again
                                                queue_tops=e.queue_tops or st.push_state.queue_tops)
            st.queue_project_id = e.queue_project_id or st.queue_project_id
            st.last_push_error = str(e)
            self._persist(st)
        self.metrics.errors.labels("push").inc()
        log.error("project %s: push of %s failed, will retry on the next poll: %s", st.id, what, e)

    def _pushed(self, st: ProjectState, report: PushReport, head_changes: int | None = None) -> None:
        """Record what a completed (or skipped, stale) push left in Label Studio.

        ``head_changes`` is the count the pushed snapshot carried: new tasks that entered the head
        while the push ran leave it pending, although the version number is the same.
        """
        if report.other_writer is not None:  # nothing was written: the push stays pending, tried at every poll
            age = time.time() - report.other_writer.at
            with st.lock:
                st.claim_seen = report.other_writer
                st.last_push_error = (
                    f"another sae-backend (install {report.other_writer.install}, another MODEL_DIR) writes this "
                    f"project: it claimed it {age:.0f} s ago; this one (install {self.install}) writes nothing "
                    f"until that claim is {self.settings.writer_lease_seconds:.0f} s old; stop one of them")
                self._persist(st)
            self.metrics.errors.labels("other_writer").inc()
            return
        with st.lock:
            if not report.stale:
                st.claim_seen = report.claim or st.claim_seen
                st.queue_project_id = report.queue_project_id or st.queue_project_id
                st.push_state = PushState(report.number, frozenset(report.marked),
                                          report.queued or st.push_state.queued, report.rows,
                                          queue_tops=report.queue_tops or st.push_state.queue_tops)
                st.last_push = report.summary()
                self.metrics.pushed.labels(str(st.id)).inc(report.rows_written)
                if report.newer or report.took_from:  # another backend wrote here: a person has to stop one
                    self.metrics.errors.labels("other_writer").inc()
            st.push_pending = st.served is not None and (
                st.served.number > report.number or (head_changes is not None and st.head_changes > head_changes))
            st.last_push_error = None
            self._persist(st)

    def stop_estimate(self, st: ProjectState) -> dict:
        """Stabilising predictions: is the model still changing its mind between versions?"""
        kappas = [k for _, k in st.stop_kappas]
        return {"kappas": [{"version": n, "kappa": k} for n, k in st.stop_kappas[-WINDOW:]],
                "mean_last": round(float(np.mean(kappas[-WINDOW:])), 5) if kappas else None,
                "threshold": self.settings.stop_kappa,
                "stop_suggested": should_stop(kappas, self.settings.stop_kappa, WINDOW)}

    def _update_metrics(self, st: ProjectState) -> None:
        p = str(st.id)
        if st.served is not None:
            n_lab = len(st.served.labels)
            self.metrics.labeled.labels(p).set(n_lab)
            self.metrics.unlabeled.labels(p).set(max(len(st.served.ids) - n_lab, 0))
            self.metrics.version.labels(p).set(st.served.number)
        self.metrics.versions.labels(p).set(len(self.store(st.id).numbers()))

    # ---- serving -------------------------------------------------------------------------------
    def predict_tasks(self, st: ProjectState, tasks: list[dict], served: ServedVersion | None) -> list[dict]:
        """One result per task, in order: from ``served`` (the snapshot the caller read and names the answer by, as
        a new version may land meanwhile), or decoded and scored now."""
        config = st.config
        if served is None or config is None:
            return []
        ids = np.array([t.get("id") if isinstance(t.get("id"), int) and not isinstance(t.get("id"), bool)
                        and 0 <= t.get("id") < 2**63 else -1 for t in tasks], np.int64)
        pos = served.lookup(ids)
        out: list[dict | None] = [None] * len(tasks)

        def result(k: int, view: float, conf: float) -> dict:
            return {"result": config.prediction(served.class_names, k), "score": float(view),
                    "model_version": served.name, "confidence": round(float(conf), 6),
                    "probability": round(float(served.model.svm_.probability_from_confidence(conf)), 6)}

        def failed(why: str) -> dict:  # Label Studio stores it: a name of its own, and never asked first
            return {"result": [], "score": 1.0, "model_version": unread_version_name(served.number), "error": why}

        todo = []
        for i, p in enumerate(pos):
            if p >= 0:
                out[i] = result(served.pred[p], served.score[p], served.confidence[p])
            else:
                todo.append(i)
        if todo:
            codec = self.mirror(st).codec(config)
            shape = tuple(served.model.sae_.input_shape_)
            items, where = [], []
            try:
                fetcher = self.fetcher(st)
            except Exception as e:  # no Label Studio URL or key yet: each task says so, the batch is no 500
                self.metrics.errors.labels("data").inc(len(todo))
                fetcher, todo = None, []
                out = [r if r is not None else failed(f"task data cannot be read: {e}") for r in out]

            def value(i: int) -> object:
                data = tasks[i].get("data") or {}
                return data.get(config.data_key) if isinstance(data, dict) else None

            def read(i: int) -> np.ndarray | str:
                data = tasks[i].get("data") or {}
                if not isinstance(data, dict):
                    return f"task data must be an object, got {type(data).__name__}"
                try:
                    return codec.load(fetcher, value(i), int(ids[i]) if ids[i] >= 0 else None)
                except Exception as e:  # TaskDataError, or anything odd: this task's answer says why, not a 500
                    return str(e)

            remote = {i for i in todo if not is_inline(value(i))}
            with fetcher or contextlib.nullcontext():
                got = {i: read(i) for i in todo if i not in remote}  # in this thread: no request, no wait
                if remote:  # side by side, and answered within Label Studio's 100 s whatever the storage does
                    pool = ThreadPoolExecutor(PREDICT_FETCHERS, "predict")
                    try:
                        reads = {pool.submit(read, i): i for i in remote}
                        futures_wait(reads, timeout=PREDICT_DEADLINE_SECONDS)
                    finally:
                        pool.shutdown(wait=False, cancel_futures=True)  # a late read ends on its own timeout
                    got.update({i: future.result() if future.done() and not future.cancelled() else
                                f"not read within {PREDICT_DEADLINE_SECONDS:.0f} s (asked again with the next batch)"
                                for future, i in reads.items()})
            for i in todo:  # errors{data} counts each answer that says why; a read that ends late, not again
                item = got[i]
                if isinstance(item, str) or (tuple(item.shape) != shape and tuple(item.shape) != shape[1:]):
                    self.metrics.errors.labels("data").inc()
                    out[i] = failed(item if isinstance(item, str) else
                                    f"item shape {item.shape} does not match the model's {shape}")
                else:
                    items.append(item)
                    where.append(i)
            if items:
                d, z = decision_scores(served.model, np.stack(items))
                s, _ = score(served.model, d, get_strategy(served.strategy), codes=z)
                for j, i in enumerate(where):
                    out[i] = result(s.pred[j], s.score[j], s.confidence[j])
        self.metrics.predictions.labels(str(st.id)).inc(len(tasks))
        return [o for o in out if o is not None]
