"""The FastAPI app: Label Studio's ML backend protocol plus our own status API.

Nothing heavy happens inside a request except ``/predict`` for tasks the last
training pass did not see; ``/health``, ``/setup`` and ``/webhook`` only read or
record state and answer at once.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import weakref
from collections import OrderedDict
from contextlib import asynccontextmanager
from typing import Any

import anyio
import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from prometheus_client import generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from service import webhooks
from service.projects import ProjectManager, ProjectState
from service.push import COLD_START_VERSION
from service.settings import Settings

log = logging.getLogger("sae_backend")
EVENTS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED", "TASKS_CREATED", "TASKS_DELETED",
          "START_TRAINING", "ANNOTATIONS_CREATED", "PROJECT_UPDATED"}


class SetupRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    project: StrictStr | StrictInt = Field(description='"<id>.<timestamp>" as Label Studio sends it, or the id')
    schema_: str | None = Field(None, alias="schema")
    hostname: str | None = None
    access_token: str | None = None
    extra_params: dict | None = None


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    tasks: list[dict[str, Any]]
    project: StrictStr | StrictInt | None = None  # strict: a bool is no id
    label_config: str | None = None
    params: dict | None = None


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    action: str
    project: dict | int | str | None = None


PREDICT_THREADS = 16  # of AnyIO's 40: the rest stay free for webhooks, /status and the rest
PICTURE_THREADS = 2  # a picture is CPU for most of a second: a dashboard's burst waits its turn, the rest do not
PICTURES_KEPT = 32  # drawn pictures kept for a repeat request


class PictureCache:
    """Pictures drawn, kept while what they were drawn from serves: a dashboard refreshing every few seconds costs one
    drawing a version (or a change of what it shows), not most of a second of CPU each time.

    ``key`` is ``(kind, project, ...)``; ``basis`` the objects a picture is drawn from (the version's model, then
    its latent sample), matched by identity: a snapshot replaced for new tasks or rows keeps them, a new version does
    not. The model is held by a weak reference, so no version stays alive here; a picture of a new model drops the
    project's pictures of the others.
    """

    def __init__(self, size: int = PICTURES_KEPT) -> None:
        self.size = size
        self._kept: OrderedDict[tuple, tuple[weakref.ref, tuple, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, basis: tuple) -> bytes | None:
        with self._lock:
            hit = self._kept.get(key)
            if hit is None or hit[0]() is not basis[0] or len(hit[1]) != len(basis) - 1 or any(
                    a is not b for a, b in zip(hit[1], basis[1:], strict=True)):
                return None
            self._kept.move_to_end(key)
            return hit[2]

    def put(self, key: tuple, basis: tuple, png: bytes) -> None:
        with self._lock:
            model = basis[0]
            for other in [k for k, (ref, _, _) in self._kept.items() if k[1] == key[1] and ref() is not model]:
                del self._kept[other]
            self._kept[key] = (weakref.ref(model), basis[1:], png)
            self._kept.move_to_end(key)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)


def project_id(value: str | int | dict | None) -> int:
    """Label Studio sends ``"12.1795710227"`` in ``/setup`` and ``/predict``, a dict in webhooks; anything else (a
    bool, a float, a sign, digits past 64 bits) is refused as webhooks refuse it, before a project is registered."""
    if isinstance(value, dict):
        value = value.get("id")
    if value is None:
        raise HTTPException(422, "missing project id")
    head = value.split(".", 1)[0] if isinstance(value, str) else None
    if head is not None and head.isascii() and head.isdigit():
        value = int(head)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise HTTPException(422, f"bad project id {value!r}"[:200])
    return value


def create_app(settings: Settings | None = None, manager: ProjectManager | None = None) -> FastAPI:
    settings = settings or Settings()
    holder: dict[str, ProjectManager] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        holder["m"] = manager or ProjectManager(settings)
        yield
        holder["m"].shutdown()

    locked = bool(settings.basic_auth_user)  # the API's own pages would answer without credentials: none then
    app = FastAPI(title="sae-backend", version="0.1.0", lifespan=lifespan, docs_url=None if locked else "/docs",
                  redoc_url=None if locked else "/redoc", openapi_url=None if locked else "/openapi.json")
    if manager is not None:
        holder["m"] = manager
    basic = HTTPBasic(auto_error=False)

    async def auth(creds: HTTPBasicCredentials | None = Depends(basic)) -> None:  # in the event loop: no thread
        if not settings.basic_auth_user:
            return
        ok = creds is not None and secrets.compare_digest(creds.username.encode(), settings.basic_auth_user.encode()) \
            and secrets.compare_digest(creds.password.encode(), settings.basic_auth_pass.get_secret_value().encode())
        if not ok:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "authentication required",
                                headers={"WWW-Authenticate": "Basic"})

    def get_manager() -> ProjectManager:
        return holder["m"]

    def known(pid: int, m: ProjectManager = Depends(get_manager)) -> ProjectState:
        st = m.get(pid, create=False)
        if st is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"project {pid} is not known to this backend")
        return st

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(errors) or "invalid request"}, status_code=422)

    deps = [Depends(auth)]

    @app.get("/health", dependencies=deps)
    @app.get("/", dependencies=deps)
    async def health() -> dict:  # no thread: /predicts waiting on storage hold the pool's, and Label Studio waits 1 s
        return {"status": "UP", "model_class": "StructuringAutoencoder"}

    @app.post("/setup", dependencies=deps)
    def setup(body: SetupRequest, m: ProjectManager = Depends(get_manager)) -> dict:
        pid = project_id(body.project)
        source = webhooks.queue_source(m, pid, {})
        if source is not None:  # trained and pushed as a project, it would write over the source's rows there
            raise HTTPException(422, f"project {pid} is the queue this backend fills for project {source.id}: "
                                     f"connect the model to project {source.id}; labels made in the queue count there")
        st = m.setup(pid, body.schema_, body.hostname, body.access_token)
        if st.config_error:
            raise HTTPException(422,
                                f"this label config cannot be served: {st.config_error}")
        return {"model_version": st.version_name or "untrained"}

    limiters: dict[str, anyio.CapacityLimiter] = {}
    pictures = PictureCache()

    def limiter(name: str, threads: int) -> anyio.CapacityLimiter:
        """A route's own share of threads, made once, in the running event loop."""
        if name not in limiters:
            limiters[name] = anyio.CapacityLimiter(threads)
        return limiters[name]

    @app.post("/predict", dependencies=deps)
    async def predict(body: PredictRequest, m: ProjectManager = Depends(get_manager)) -> dict:
        """In threads of its own: a /predict may wait a minute on a storage, and many at once must not hold every
        thread the webhooks (answered within Label Studio's 1 s) and /status run in."""
        return await anyio.to_thread.run_sync(_predict, body, m, limiter=limiter("predict", PREDICT_THREADS))

    def _predict(body: PredictRequest, m: ProjectManager) -> dict:
        pid = project_id(body.project) if body.project is not None else None
        if pid is None:
            raise HTTPException(422, "missing project")
        if webhooks.queue_source(m, pid, {}) is not None:  # the queue's copies are predicted in their source
            return {"results": [], "model_version": None}
        st = m.get(pid, create=bool(body.label_config))  # an id alone does not register a project
        if st is None:
            return {"results": [], "model_version": None}
        if st.config is None and body.label_config:
            m.setup(pid, body.label_config, None, None)
        served = st.served  # one snapshot names the answer and scores it, though a new version lands meanwhile
        results = m.predict_tasks(st, body.tasks, served)
        return {"results": results, "model_version": served.name if served is not None else None}

    @app.get("/versions", dependencies=deps)
    def versions(m: ProjectManager = Depends(get_manager)) -> dict:
        names = []
        for st in list(m.projects.values()):
            names += [v["model_version"] for v in m.store(st.id).history()]
        return {"versions": names}

    @app.post("/webhook", dependencies=deps)
    def webhook(body: WebhookRequest, m: ProjectManager = Depends(get_manager)) -> dict:
        if body.action not in EVENTS:
            return {"status": "ignored", "action": body.action}
        pid = project_id(body.project)
        try:
            return {"status": webhooks.handle(m, pid, body.action, body.model_dump())}
        except webhooks.PayloadError as e:
            raise HTTPException(422, f"{body.action}: {e}") from None

    @app.get("/metrics", dependencies=deps)
    def metrics(m: ProjectManager = Depends(get_manager)) -> Response:
        m.metrics.queue.set(m.runner.queue_length())
        return PlainTextResponse(generate_latest(m.metrics.registry).decode(),
                                 media_type="text/plain; version=0.0.4")

    @app.get("/projects/{pid}/status", dependencies=deps)
    def project_status(st: ProjectState = Depends(known), m: ProjectManager = Depends(get_manager)) -> dict:
        mirror = m.mirror(st)
        config = st.config
        known_labels = config is not None and mirror.ingested
        labels, problems = mirror.labels(config) if known_labels else ({}, {})
        served = st.served
        stored = len(mirror.store)
        return {
            "project": st.id, "model_version": st.version_name, "labeled": len(labels),
            "unlabeled": max(stored - len(labels), 0),
            "changes_since_version": m.changes(st, labels, config.classes) if known_labels else 0,
            "version_labeled": len(served.labels) if served else None,
            "training": st.training or m.runner.is_busy(st.id), "progress": st.progress,
            "mirror": {"ingested": mirror.ingested, "stored": stored, "unreadable": len(mirror.skipped),
                       "retrying": len(mirror.retrying)},
            "query_strategy": served.strategy if served else m.settings.query_strategy,
            "stop_estimate": m.stop_estimate(st),
            "cold_start_suggestions": len(st.suggested or []),
            "versions": m.store(st.id).history(), "scoring_seconds": st.scoring_seconds,
            "last_error": st.last_error, "training_failures": st.failures,
            "retrying_after_a_pause": m.backing_off(st),
            "label_config_error": st.config_error, "push_pending": st.push_pending,
            "last_push_error": st.last_push_error, "last_push": st.last_push,
            "skipped": [{"task": t, "reason": r} for t, r in list(mirror.skipped.items())[:100]],
            "skipped_count": len(mirror.skipped),
            "label_problems": [{"task": t, "problem": p} for t, p in list(problems.items())[:100]],
            "classes": st.config.classes if st.config else None, "queue_project": st.queue_project_id,
            "gone_from_label_studio_since": st.gone_since,
        }

    @app.get("/projects/{pid}/ranking", dependencies=deps)
    def ranking(st: ProjectState = Depends(known), m: ProjectManager = Depends(get_manager),
                limit: int = Query(20, ge=1, le=1000)) -> dict:
        """The head in ranking order, without tasks labeled or deleted since the version was trained."""
        served = st.served
        if served is None:
            if st.suggested:
                labeled, store = m.labeled_now(st), m.mirror(st).store
                items = [{"task": t, "rank": i + 1}
                         for i, t in enumerate(t for t in st.suggested if t not in labeled and t in store)]
                return {"model_version": COLD_START_VERSION, "strategy": "typicality", "ranking": items[:limit]}
            return {"model_version": None, "ranking": []}
        head = served.ranking(limit, m.left_out(st, served))
        pos = served.lookup([t for t, _ in head])
        items = [{"task": t, "rank": i + 1, "value": v, "score": float(served.score[p]),
                  "confidence": float(served.confidence[p]),
                  "probability": float(served.model.svm_.probability_from_confidence(served.confidence[p]))}
                 for i, ((t, v), p) in enumerate(zip(head, pos, strict=True))]
        return {"model_version": served.name, "strategy": served.strategy, "ranking": items}

    @app.get("/projects/{pid}/latent.png", dependencies=deps)
    async def latent(st: ProjectState = Depends(known), m: ProjectManager = Depends(get_manager)) -> Response:
        return await anyio.to_thread.run_sync(_latent, st, m, limiter=limiter("pictures", PICTURE_THREADS))

    def _latent(st: ProjectState, m: ProjectManager) -> Response:
        from service.plots import latent_png

        served = st.served
        if served is None or not served.latent or st.config is None or len(served.latent.get("ids", [])) == 0:
            raise HTTPException(status.HTTP_409_CONFLICT, "no latent codes yet: the project has not been trained")
        ids = served.latent["ids"]
        pushed = [t for t, _ in served.ranking(settings.push_top_k, m.left_out(st, served))]  # as the push marks
        marked = np.flatnonzero(np.isin(ids, np.asarray(pushed, np.int64)))
        key = ("latent", st.id, hashlib.sha256(marked.tobytes()).hexdigest())
        basis = (served.model, served.latent)  # the title and class names are the model's version's
        png = pictures.get(key, basis)
        if png is None:
            png = latent_png(served.latent["z"], served.latent["y"], served.class_names, marked,
                             title=f"project {st.id}, {served.name}",
                             centres=served.model.class_centres_)
            pictures.put(key, basis, png)
        return Response(png, media_type="image/png")

    @app.get("/projects/{pid}/morph.png", dependencies=deps)
    async def morph_png_route(st: ProjectState = Depends(known), source: str = Query(..., alias="from"),
                              target: str = Query(..., alias="to"), steps: int = Query(8, ge=2, le=32)) -> Response:
        return await anyio.to_thread.run_sync(_morph, st, source, target, steps,
                                              limiter=limiter("pictures", PICTURE_THREADS))

    def _morph(st: ProjectState, source: str, target: str, steps: int) -> Response:
        from model.morph import morph
        from service.plots import morph_png

        served, config = st.served, st.config  # one version throughout: a training may publish the next meanwhile
        if served is None or config is None:
            raise HTTPException(status.HTTP_409_CONFLICT, "no model yet: the project has not been trained")
        classes = served.class_names  # the model's classes, in its order: the config may have changed since
        for c in (source, target):
            if c not in classes:
                raise HTTPException(422, f"unknown class {c!r}; classes: {classes}")
        if config.kind != "image":
            raise HTTPException(422, f"morphing draws images; this project's data is {config.kind}")
        key = ("morph", st.id, source, target, steps)
        png = pictures.get(key, (served.model,))
        if png is None:
            try:
                images = morph(served.model, classes.index(source), classes.index(target), steps)
            except ValueError as e:
                raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None
            png = morph_png(images, f"{source} -> {target}")
            pictures.put(key, (served.model,), png)
        return Response(png, media_type="image/png")

    return app
