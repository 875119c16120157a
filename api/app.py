"""The FastAPI application: routes that parse the request, call a plain function, and answer in the
platform's conventions (seed 000/001): paginated lists, ``{"detail": ...}`` errors, Bearer keys."""

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import metrics, status_page
from api.auth import Gate, require_key, require_operator
from api.queries import MAX_PAGE_SIZE, CatalogueFile, DatasetFilters, DatasetReader
from models.db import reading, session_factory
from models.types import utcnow
from worker import review, webhooks
from worker.apikeys import Caller
from worker.broker import broker_url_of, celery_client, enqueue_sync
from worker.catalogue import Catalogue, CatalogueError
from worker.context import SyncContext
from worker.health import STATES, Clock, system_health
from worker.review import ReviewError
from worker.run_log import RunQueryError, list_runs, parse_since
from worker.settings import Settings, split_list

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    clock: Clock
    reader: DatasetReader
    gate: Gate
    review_ctx: SyncContext

    @property
    def catalogue(self) -> Catalogue:
        return self.reader.catalogue


class SyncRequest(BaseModel):
    category: str | None = None
    all: bool = False
    force: bool = False


class ForceRequest(BaseModel):
    force: bool = False


def create_app(settings: Settings, catalogue: Catalogue, clock: Clock = utcnow) -> FastAPI:
    sessions = session_factory(settings.database_url, settings.dataset_table())
    services = Services(
        settings,
        clock,
        DatasetReader(reading(sessions), CatalogueFile(catalogue), settings),  # never waits for a sync's write lock
        Gate(sessions, clock, settings.api_rate_anonymous_per_minute, settings.api_rate_key_per_minute),
        SyncContext.from_settings(settings),
    )
    app = FastAPI(
        title="datasync status API",
        description="Sync status of the survey platform's dataset lists; keys: `Authorization: Bearer dsk_...`.",
        version="1",
        openapi_url="/api/schema",
        docs_url="/api/docs",
        redoc_url="/api/redoc",
    )
    _errors(app)
    origins = split_list(settings.api_cors_origins)
    if origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"], allow_headers=["Authorization"]
        )
    _dataset_routes(app, services)
    _sync_routes(app, services)
    _page_routes(app, services)
    return app


def _errors(app: FastAPI) -> None:
    """Every error is ``{"detail": "..."}`` with one readable sentence."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"detail": problems}, status_code=400)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error answering %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "Internal server error."}, status_code=500)


def paginate(request: Request, items: list[dict[str, Any]], page: int, page_size: int) -> dict[str, Any]:
    """The platform's page shape: ``count``, ``next``, ``previous`` (absolute URLs), ``results``."""
    pages = max(1, -(-len(items) // page_size))
    if page > pages:
        raise HTTPException(404, "Invalid page.")

    def link(number: int) -> str | None:
        return str(request.url.include_query_params(page=number)) if 1 <= number <= pages else None

    start = (page - 1) * page_size
    return {
        "count": len(items),
        "next": link(page + 1),
        "previous": link(page - 1),
        "results": items[start : start + page_size],
    }


PageQuery = Annotated[int, Query(ge=1, description="Page number (from 1).")]
PageSizeQuery = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page.")]


def _dataset_routes(app: FastAPI, s: Services) -> None:
    AnyCaller = Annotated[Caller, Depends(s.gate.caller)]

    @app.get("/api/health", tags=["health"])
    def health(caller: AnyCaller) -> JSONResponse:
        """Public: store, broker, scheduler and workers; 503 when a critical part is down."""
        system = system_health(s.settings, broker_url_of(s.settings), s.clock())
        return JSONResponse(system.to_json(), status_code=503 if system.status == "down" else 200)

    @app.get("/api/datasets/", tags=["datasets"])
    def datasets(
        request: Request,
        caller: AnyCaller,
        category: str | None = None,
        tags: str | None = None,
        search: str | None = None,
        is_global: bool | None = None,
        page: PageQuery = 1,
        page_size: PageSizeQuery = 20,
    ) -> dict[str, Any]:
        """Datasets visible to the caller, each with its ``sync`` state; filters as the platform's."""
        filters = DatasetFilters(category, tuple(split_list(tags or "")), search, is_global)
        return paginate(request, s.reader.matching(caller, filters, s.clock()), page, page_size)

    @app.get("/api/datasets/available-tags/", tags=["datasets"])
    def available_tags(caller: AnyCaller) -> list[dict[str, Any]]:
        """Every tag on the visible datasets with how many use it."""
        return s.reader.tags(caller)

    @app.get("/api/datasets/{key}/", tags=["datasets"])
    def dataset(key: str, caller: AnyCaller) -> dict[str, Any]:
        """One dataset with its options and sync state."""
        found = s.reader.get(caller, key, s.clock())
        if found is None:
            raise HTTPException(404, "Not found.")
        return found

    def reviewable(key: str, caller: Caller) -> None:
        """Key holders only; unknown, invisible and people's rows are all 'not found'."""
        require_key(caller)
        if not s.reader.is_visible(caller, key):
            raise HTTPException(404, "Not found.")

    @app.get("/api/datasets/{key}/versions/", tags=["review"])
    def versions(
        request: Request, key: str, caller: AnyCaller, page: PageQuery = 1, page_size: PageSizeQuery = 20
    ) -> dict[str, Any]:
        """Every stored version, newest first, with its change counts."""
        reviewable(key, caller)
        return paginate(request, _review(review.history, s.review_ctx, key), page, page_size)

    @app.get("/api/datasets/{key}/diff/", tags=["review"])
    def diff(
        key: str,
        caller: AnyCaller,
        from_version: Annotated[int | None, Query(alias="from", ge=1)] = None,
        to_version: Annotated[int | None, Query(alias="to", ge=1)] = None,
    ) -> dict[str, Any]:
        """Codes added, removed and relabelled between two versions (default: previous → current)."""
        reviewable(key, caller)
        old, new, changes = _review(review.version_diff, s.review_ctx, key, from_version, to_version)
        return {"key": key, "from": old, "to": new, **changes.counts(), "changes": changes.to_json()}

    @app.post("/api/datasets/{key}/accept/", tags=["review"])
    def accept(key: str, caller: AnyCaller) -> dict[str, Any]:
        """Apply the change a guard rail held back (operator)."""
        require_operator(caller)
        reviewable(key, caller)
        outcome = _review(review.accept, s.review_ctx, key, trigger="api")
        entry = s.catalogue.by_key().get(key)
        if entry is not None:
            webhooks.after_sync(s.review_ctx, entry, outcome)  # announce the applied change and the recovery
        return dict(outcome.to_json())

    @app.post("/api/datasets/{key}/reject/", tags=["review"])
    def reject(key: str, caller: AnyCaller) -> dict[str, Any]:
        """Drop the held change; the same upstream content is not held again (operator)."""
        require_operator(caller)
        reviewable(key, caller)
        _review(review.reject, s.review_ctx, key, trigger="api")
        return {"key": key, "rejected": True}


def _review(action: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return action(*args, **kwargs)
    except ReviewError as exc:
        status = 404 if " has no version " in str(exc) or str(exc).startswith("no dataset") else 409
        raise HTTPException(status, str(exc)) from exc


def _sync_routes(app: FastAPI, s: Services) -> None:
    AnyCaller = Annotated[Caller, Depends(s.gate.caller)]

    @app.get("/api/sync/status", tags=["sync"])
    def sync_status(caller: AnyCaller) -> dict[str, Any]:
        """Counts per state, every dataset that is not ``ok`` with why, and the system state."""
        require_key(caller)
        now = s.clock()
        overview = s.reader.sync_overview(now)
        return {**overview, "system": system_health(s.settings, broker_url_of(s.settings), now).to_json()}

    @app.get("/api/sync/runs", tags=["sync"])
    def runs(
        request: Request,
        caller: AnyCaller,
        dataset: str | None = None,
        status: str | None = None,
        since: str | None = None,
        page: PageQuery = 1,
        page_size: PageSizeQuery = 20,
    ) -> dict[str, Any]:
        """Every sync attempt, newest first; filter by dataset, status and start time (``2h``, ISO)."""
        require_key(caller)
        try:
            now = s.clock()
            moment = parse_since(since, now) if since else None
            total, rows = list_runs(
                s.reader.sessions,
                dataset,
                status,
                moment,
                limit=page_size,
                offset=(page - 1) * page_size,
                now=now,
                settings=s.settings,
            )
        except RunQueryError as exc:
            raise HTTPException(400, str(exc)) from exc
        if page > 1 and not rows:
            raise HTTPException(404, "Invalid page.")
        pages = max(1, -(-total // page_size))

        def link(number: int) -> str | None:
            return str(request.url.include_query_params(page=number)) if 1 <= number <= pages else None

        return {"count": total, "next": link(page + 1), "previous": link(page - 1), "results": rows}

    @app.post("/api/sync/{key}/", status_code=202, tags=["sync"])
    def resync_one(key: str, caller: AnyCaller, body: ForceRequest | None = None) -> dict[str, Any]:
        """Queue a manual re-sync of one dataset (operator); answers the task id."""
        require_operator(caller)
        if key not in s.catalogue.by_key():
            raise HTTPException(404, "Not found.")
        return {"tasks": _enqueue(s, [key], bool(body and body.force))}

    @app.post("/api/sync/", status_code=202, tags=["sync"])
    def resync_many(caller: AnyCaller, body: SyncRequest) -> dict[str, Any]:
        """Queue a manual re-sync of a category or of every enabled dataset (operator)."""
        require_operator(caller)
        if not body.all and not body.category:
            raise HTTPException(400, 'Give "category" or "all": true.')
        try:
            keys = [entry.key for entry in s.catalogue.select(None, body.category)]
        except CatalogueError as exc:
            raise HTTPException(400, str(exc)) from exc
        if not keys:
            raise HTTPException(400, f"No enabled dataset in category {body.category!r}.")
        return {"tasks": _enqueue(s, keys, body.force)}

    @app.get("/api/sync/tasks/{task_id}", tags=["sync"])
    def task(task_id: str, caller: AnyCaller) -> dict[str, Any]:
        """A queued re-sync's state (PENDING, STARTED, RETRY, SUCCESS, FAILURE) and its outcome."""
        require_key(caller)
        url = _broker(s)
        result = celery_client(s.settings, url).AsyncResult(task_id)
        state = str(result.state)
        outcome = result.result if state == "SUCCESS" and isinstance(result.result, dict) else None
        return {"id": task_id, "state": state, "result": outcome}


def _broker(s: Services) -> str:
    url = broker_url_of(s.settings)
    if url is None:
        raise HTTPException(503, "No broker is configured (DATASYNC_BROKER_URL): syncs cannot be queued.")
    return url


def _enqueue(s: Services, keys: list[str], force: bool) -> list[dict[str, str]]:
    url = _broker(s)
    requested_at = s.clock().isoformat()
    try:
        return [{"key": key, "task_id": enqueue_sync(s.settings, url, key, force, "api", requested_at)} for key in keys]
    except Exception as exc:  # an unreachable broker is the service being unavailable, not a bug
        raise HTTPException(503, f"The broker did not accept the task: {type(exc).__name__}.") from exc


def _page_routes(app: FastAPI, s: Services) -> None:
    AnyCaller = Annotated[Caller, Depends(s.gate.caller)]

    def may_see_status(caller: Caller) -> None:
        if not s.settings.api_public_status:
            require_key(caller)

    @app.get("/metrics", tags=["monitoring"], response_class=Response)
    def prometheus(caller: AnyCaller) -> Response:
        """Prometheus text format, computed from the store at scrape time."""
        may_see_status(caller)
        body, content_type = metrics.render(s.reader, s.settings, s.clock())
        return Response(body, media_type=content_type)

    @app.get("/status", tags=["monitoring"], response_class=HTMLResponse)
    def page(caller: AnyCaller, state: str | None = None) -> HTMLResponse:
        """The status page: every dataset's state, age, next due, last error and recent runs."""
        may_see_status(caller)
        if state is not None and state not in STATES:
            raise HTTPException(400, f"state: expected one of {', '.join(STATES)}")
        html = status_page.render(s.reader, s.settings, s.clock(), state)
        return HTMLResponse(html, headers=status_page.HEADERS)
