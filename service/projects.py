"""Per-project state and the lifecycle around it: register, train, swap, push, restore.

Everything heavy runs in the job runner's thread; request handlers only read the state
(under a lock) or ask for a run. The version in service changes only after a new
version is completely saved, so a failed or killed training never disturbs serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from connectors.label_config import LabelConfig, LabelConfigError, parse_label_config
from connectors.label_studio import LabelStudioClient
from connectors.task_data import DataFetcher, TaskDataError
from model.acquisition import MarginSampling
from model.sae_classifier import SAEClassifier
from service.jobs import JobRunner
from service.metrics import Metrics
from service.push import PushError, push_version
from service.settings import Settings
from service.training import LocalTrainingBackend, TrainingBackend, TrainingJob, gather_pool
from service.versions import VersionStore, known_projects

log = logging.getLogger("sae_backend")
RANKING_KEEP = 1000
LATENT_KEEP = 20000


@dataclass
class ProjectState:
    id: int
    label_config: str | None = None
    config: LabelConfig | None = None
    config_error: str | None = None
    ls_url: str | None = None
    access_token: str | None = None
    fmt: dict = field(default_factory=dict)
    queue_project_id: int | None = None
    model: SAEClassifier | None = None
    version_number: int | None = None
    version_name: str | None = None
    version_labeled: int | None = None
    labeled: int = 0
    unlabeled: int = 0
    training: bool = False
    progress: dict = field(default_factory=dict)
    last_error: str | None = None
    last_error_at: float | None = None
    skipped: dict[int, str] = field(default_factory=dict)
    problems: dict[int, str] = field(default_factory=dict)
    predictions: dict[int, tuple[int, float]] = field(default_factory=dict)
    ranking: list[tuple[int, float]] = field(default_factory=list)
    latent: dict = field(default_factory=dict)
    pushed: list[int] = field(default_factory=list)
    marked: set[int] | None = None
    push_pending: bool = False
    last_push_error: str | None = None
    first_event_at: float | None = None
    interrupted: str | None = None
    training_reason: str | None = None
    reading_labeled: int | None = None
    last_push: dict = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)


ClientFactory = Callable[[str, str], LabelStudioClient]


class ProjectManager:
    def __init__(self, settings: Settings, client_factory: ClientFactory | None = None,
                 backend: TrainingBackend | None = None, start_scheduler: bool = True) -> None:
        self.settings = settings
        self.client_factory = client_factory or (lambda url, key: LabelStudioClient(url, key))
        self.backend = backend or LocalTrainingBackend()
        self.metrics = Metrics()
        self.projects: dict[int, ProjectState] = {}
        self._lock = threading.Lock()
        self.runner = JobRunner(self._train_job)
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self._restore()
        if start_scheduler:
            self.start_scheduler()
        for st in list(self.projects.values()):
            if st.interrupted is not None:
                self.request_training(st.id, f"resuming a training the last process did not finish ({st.interrupted})")

    # ---- registration and restore -------------------------------------------------------------
    def store(self, pid: int) -> VersionStore:
        return VersionStore(self.settings.model_dir, pid)

    def get(self, pid: int, create: bool = True) -> ProjectState | None:
        with self._lock:
            st = self.projects.get(pid)
            if st is None and create:
                st = self.projects[pid] = ProjectState(pid)
            return st

    def _restore(self) -> None:
        """Serve the newest complete version of every known project at once, without retraining."""
        for pid in known_projects(self.settings.model_dir):
            st = self.get(pid)
            store = self.store(pid)
            info = store.read_project() or {}
            if info.get("label_config"):
                self._set_config(st, info["label_config"])
            st.ls_url = info.get("ls_url")
            st.fmt = info.get("fmt", {})
            st.queue_project_id = info.get("queue_project_id")
            st.interrupted = info.get("training_started")
            nums = store.numbers()
            for number in reversed(nums):
                try:
                    model = store.load(number, self.settings.device)
                except Exception as e:
                    log.error("project %s: version %s cannot be loaded (%s); trying an older one", pid, number, e)
                    continue
                meta = model.metadata_
                st.model, st.version_number, st.version_name = model, number, meta["model_version"]
                st.version_labeled = meta.get("labeled")
                st.labeled, st.unlabeled = meta.get("labeled", 0), meta.get("unlabeled", 0)
                self._update_metrics(st)
                log.info("project %s: serving %s restored from disk", pid, st.version_name)
                break

    def _set_config(self, st: ProjectState, xml: str) -> None:
        st.label_config = xml
        try:
            st.config, st.config_error = parse_label_config(xml), None
        except LabelConfigError as e:
            st.config, st.config_error = None, str(e)

    def _persist(self, st: ProjectState) -> None:
        self.store(st.id).write_project({"id": st.id, "label_config": st.label_config, "ls_url": st.ls_url,
                                         "fmt": st.fmt, "queue_project_id": st.queue_project_id,
                                         "training_started": st.training_reason if st.training else None})

    def setup(self, pid: int, schema: str | None, hostname: str | None, access_token: str | None) -> ProjectState:
        """Register a project from Label Studio's ``/setup`` call; no network calls here."""
        st = self.get(pid)
        with st.lock:
            if schema:
                self._set_config(st, schema)
            if hostname:
                st.ls_url = hostname.rstrip("/")
            if access_token:
                st.access_token = access_token
            self._persist(st)
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
        return self.client_factory(self.ls_url(st), self.api_key(st))

    def fetcher(self, st: ProjectState) -> DataFetcher:
        s = self.settings
        return DataFetcher(self.ls_url(st), self.api_key(st), s.data_allowed_hosts,
                           cache_dir=s.model_dir / "cache", timeout=s.fetch_timeout_seconds,
                           max_bytes=s.fetch_max_bytes)

    # ---- triggers ------------------------------------------------------------------------------
    def request_training(self, pid: int, reason: str) -> str:
        st = self.get(pid)
        st.first_event_at = None
        outcome = self.runner.request(pid, reason)
        self.metrics.queue.set(self.runner.queue_length())
        log.info("project %s: training %s (%s)", pid, outcome, reason)
        return outcome

    def labels_changed(self, pid: int, labeled_now: int | None, reason: str) -> str:
        """Debounced trigger: train once enough labels changed since the version in service."""
        st = self.get(pid)
        base = st.version_labeled or 0
        if self.runner.is_busy(pid) and st.reading_labeled is not None:
            base = st.reading_labeled
        if labeled_now is not None and abs(labeled_now - base) < self.settings.retrain_min_new_labels \
                and st.model is not None:
            return "below-threshold"
        if labeled_now is not None and st.model is None \
                and labeled_now < max(2, self.settings.retrain_min_new_labels):
            return "below-threshold"
        now = time.monotonic()
        if st.first_event_at is None:
            st.first_event_at = now
        delay = self.settings.retrain_debounce_seconds
        if delay <= 0 or now - st.first_event_at >= self.settings.retrain_max_delay_seconds:
            return self.request_training(pid, reason)
        self.scheduler.add_job(self.request_training, "date", args=[pid, f"debounced: {reason}"],
                               run_date=datetime.now().astimezone() + timedelta(seconds=delay),
                               id=f"debounce-{pid}", replace_existing=True, misfire_grace_time=None)
        return "debounced"

    def poll(self) -> None:
        """Catch what webhooks missed: compare Label Studio's labeled count with the version in service."""
        for pid, st in list(self.projects.items()):
            if st.config is None or st.training or self.runner.is_busy(pid):
                continue
            try:
                client = self.client(st)
                if st.push_pending and st.model is not None:
                    self._push(st, client)
                count = client.labeled_count(pid)
            except Exception as e:
                log.warning("project %s: poll failed: %s", pid, e)
                self.metrics.errors.labels("poll").inc()
                continue
            base = st.version_labeled or 0
            if abs(count - base) >= self.settings.retrain_min_new_labels and count >= 2:
                self.request_training(pid, f"poll: {count} labeled, version in service has {base}")

    def cron(self) -> None:
        for pid in list(self.projects):
            self.request_training(pid, "RETRAIN_CRON")

    def start_scheduler(self) -> None:
        self.scheduler.add_job(self.poll, "interval", seconds=self.settings.poll_interval_seconds, id="poll",
                               max_instances=1, coalesce=True)
        if self.settings.retrain_cron:
            self.scheduler.add_job(self.cron, CronTrigger.from_crontab(self.settings.retrain_cron), id="cron")
        self.scheduler.start()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.runner.shutdown()

    # ---- the training job ----------------------------------------------------------------------
    def _progress(self, st: ProjectState) -> Callable[[str, float], None]:
        def report(stage: str, fraction: float) -> None:
            st.progress = {"stage": stage, "fraction": round(float(fraction), 3)}
        return report

    def _train_job(self, pid: int, reason: str) -> None:
        st = self.get(pid)
        st.training, st.training_reason = True, reason
        st.progress = {"stage": "starting", "fraction": 0.0, "reason": reason}
        with st.lock:
            self._persist(st)
        self.metrics.training.labels(str(pid)).set(1)
        t0 = time.perf_counter()
        try:
            self._train(st)
            st.last_error = None
        except Exception as e:
            st.last_error, st.last_error_at = f"{type(e).__name__}: {e}", time.time()
            self.metrics.errors.labels("training").inc()
            log.error("project %s: training failed, %s keeps serving: %s", pid, st.version_name, st.last_error)
        finally:
            st.training = False
            st.progress = {}
            st.interrupted = None
            st.reading_labeled = None
            with st.lock:
                self._persist(st)
            self.metrics.training.labels(str(pid)).set(0)
            self.metrics.training_seconds.labels(str(pid)).observe(time.perf_counter() - t0)
            self.metrics.queue.set(self.runner.queue_length())

    def _train(self, st: ProjectState) -> None:
        client = self.client(st)
        if st.config is None:
            if st.label_config is None:
                self._set_config(st, client.get_project(st.id)["label_config"])
            if st.config is None:
                raise LabelConfigError(st.config_error or "no label config")
        report = self._progress(st)
        extra = {}
        if self.settings.push_mode == "queue" and st.queue_project_id:
            report("reading queue labels", 0.0)
            for source_id, anns in client.queue_labels(st.queue_project_id):
                extra.setdefault(int(source_id), []).extend(anns)
        report("loading tasks", 0.0)
        if self.settings.image_size and "size" not in st.fmt:
            st.fmt["size"] = self.settings.image_size
        t_load = time.perf_counter()
        pool = gather_pool(client.iter_tasks(st.id), st.config, self.fetcher(st), st.fmt, extra, report)
        load_seconds = round(time.perf_counter() - t_load, 3)
        st.skipped, st.problems = pool.skipped, pool.problems
        st.reading_labeled = int((pool.y >= 0).sum())
        if pool.skipped:
            self.metrics.errors.labels("data").inc(len(pool.skipped))
        s = self.settings
        job = TrainingJob(st.id, st.config, pool, st.model, s.sae_epochs, s.sae_warm_epochs, s.sae_latent_dim,
                          s.sae_lambda, s.device, report, s.sae_max_shift)
        result = self.backend.run(job)
        report("saving", 1.0)
        number, name = self.store(st.id).save(result.model, {**result.metrics, "load_seconds": load_seconds})
        model = result.model
        z = model.transform(pool.x)
        scores = model.svm_.decision_function(z)
        pred = np.argmax(scores, axis=1)
        conf = model.svm_.confidence_from_scores(scores)
        unl = np.flatnonzero(pool.y < 0)
        q = MarginSampling().query(scores[unl], RANKING_KEEP)
        ranking = [(int(pool.task_ids[unl[i]]), float(v)) for i, v in zip(q.indices, q.scores, strict=True)]
        keep = np.arange(len(z))
        if len(keep) > LATENT_KEEP:
            keep = np.sort(np.random.default_rng(0).choice(keep, LATENT_KEEP, replace=False))
        with st.lock:
            st.model, st.version_number, st.version_name = model, number, name
            st.version_labeled = result.metrics["labeled"]
            st.labeled, st.unlabeled = result.metrics["labeled"], result.metrics["unlabeled"]
            st.predictions = {int(t): (int(p), float(c)) for t, p, c in zip(pool.task_ids, pred, conf, strict=True)}
            st.ranking = ranking
            top = [t for t, _ in ranking[: self.settings.push_top_k]]
            st.latent = {"z": z[keep], "y": pool.y[keep], "ids": pool.task_ids[keep],
                         "data": {t: pool.task_data[t] for t in top if t in pool.task_data}}
            st.push_pending = True
            self._persist(st)
        self._update_metrics(st)
        log.info("project %s: %s in service (%s labeled, cv accuracy %s, %.1f s)", st.id, name,
                 result.metrics["labeled"], result.metrics["cv_accuracy"], result.metrics["train_seconds"])
        report("pushing to Label Studio", 1.0)
        self._push(st, client)

    def _push(self, st: ProjectState, client: LabelStudioClient) -> None:
        try:
            queue_id = push_version(client, st, self.settings, self.metrics)
            with st.lock:
                if queue_id is not None and queue_id != st.queue_project_id:
                    st.queue_project_id = queue_id
                    self._persist(st)
                st.push_pending, st.last_push_error = False, None
        except PushError as e:
            st.last_push_error = str(e)
            self.metrics.errors.labels("push").inc()
            log.error("project %s: push of %s failed, will retry on the next poll: %s", st.id, st.version_name, e)

    def _update_metrics(self, st: ProjectState) -> None:
        p = str(st.id)
        self.metrics.labeled.labels(p).set(st.labeled)
        self.metrics.unlabeled.labels(p).set(st.unlabeled)
        if st.version_number is not None:
            self.metrics.version.labels(p).set(st.version_number)
        self.metrics.versions.labels(p).set(len(self.store(st.id).numbers()))

    # ---- serving -------------------------------------------------------------------------------
    def predict_tasks(self, st: ProjectState, tasks: list[dict]) -> list[dict]:
        """One result per task, in order; tasks the last pass did not see are computed now."""
        with st.lock:
            model, name, config, cached = st.model, st.version_name, st.config, st.predictions
        if model is None or config is None:
            return []
        out: list[dict | None] = [None] * len(tasks)
        todo = []
        for i, task in enumerate(tasks):
            tid = task.get("id")
            if isinstance(tid, int) and tid in cached:
                k, c = cached[tid]
                out[i] = {"result": config.result(config.classes[k]), "score": c, "model_version": name}
            else:
                todo.append(i)
        if todo:
            fetcher = self.fetcher(st)
            items, where = [], []
            for i in todo:
                value = (tasks[i].get("data") or {}).get(config.data_key)
                try:
                    items.append(fetcher.load_item(value, config.kind, st.fmt.get("mode", "L"), st.fmt.get("size")))
                    where.append(i)
                except (TaskDataError, TypeError) as e:
                    self.metrics.errors.labels("data").inc()
                    out[i] = {"result": [], "score": 0.0, "model_version": name, "error": str(e)}
            if items:
                ok = [j for j, it in enumerate(items) if it.shape == tuple(model.sae_.input_shape_[-it.ndim:])
                      or it.shape == tuple(model.sae_.input_shape_)]
                for j, it in enumerate(items):
                    if j not in ok:
                        out[where[j]] = {"result": [], "score": 0.0, "model_version": name,
                                         "error": f"item shape {it.shape} does not match the model"}
                if ok:
                    x = np.stack([items[j] for j in ok])
                    k, c = model.predict_confidence(x)
                    for j, kk, cc in zip(ok, k, c, strict=True):
                        out[where[j]] = {"result": config.result(config.classes[int(kk)]), "score": float(cc),
                                         "model_version": name}
        self.metrics.predictions.labels(str(st.id)).inc(len(tasks))
        return [o for o in out if o is not None]
