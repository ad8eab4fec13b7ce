"""The web view's Starlette application: pages, JSON endpoints and actions.

Routes (relative to wherever the app is mounted):

* ``GET /``: the runs page; ``?status=&workflow=&prefix=&limit=&cursor=&back=``.
* ``GET /run?id=RUN``: one run's page (the id is a query parameter: ids hold ``/``).
* ``GET /api/runs``: ``{"runs": [info_json...], "next_cursor": str | null}``, the same
  filters (``status`` and ``workflow`` may repeat, ``parent`` too).
* ``GET /api/run?id=RUN``: `run_json` of the run plus ``"signature"`` (what the page compares
  to know it changed); 404 ``{"error": ...}`` when there is no such run.
* ``POST /api/actions/{cancel,retry,pause,resume,signal}``: a JSON body ``{"id": RUN}`` (plus
  ``"after_compensation": bool`` for retry, ``"name"`` and ``"payload"`` (JSON text) for
  signal). Answers ``{"ok": true, "message": ..., "run": info_json}``, or ``{"ok": false,
  "error": ...}`` with 400 (bad request), 403 (the CSRF check), 404 (no such run) or 409
  (refused: the run's status does not allow it).

The CSRF defence for actions: the request must carry the header ``X-Durable-UI: 1`` (a form or
a page of another site cannot set it without a CORS preflight, which this app never grants)
and, when it has an ``Origin``, one naming the host the request was sent to.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any, ClassVar
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from durable._client import WorkflowHandle, get_handle
from durable._codec import JSONCodec
from durable._errors import ActionRefused, DurableError, WorkflowFinished, WorkflowNotFound
from durable._inspect import info_json, inspect_run, run_json
from durable._runs import MAX_LIMIT, list_runs
from durable._signals import send_signal
from durable._stores import open_store
from durable._types import RunStatus
from durable.store import Store
from durable.ui import _pages
from durable.ui._pages import Filters

__all__ = ["build_app"]

STATIC_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
"""The files the pages load, served from the package (static/)."""
CSRF_HEADER = "x-durable-ui"

# No script but the package's own, nothing loaded from elsewhere, never inside another site's
# frame (a framed Cancel button could be clicked by a page the user is on). Inline styles are
# allowed: the timeline places its bars with style attributes.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


class _Refused(Exception):
    """An action the run's state does not allow; answered 409 with this message."""


class _SecurityHeaders:
    """ASGI middleware that adds `SECURITY_HEADERS` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _UI:
    """The handlers, sharing the store argument (a URL is opened at each use: a store opened
    for it may have been closed since)."""

    def __init__(self, store: Store | str | None) -> None:
        self.store_arg = store

    async def store(self) -> Store:
        return await open_store(self.store_arg)

    def handle(self, run_id: str) -> WorkflowHandle:
        return get_handle(run_id, store=self.store_arg)

    # -- pages ---------------------------------------------------------------------------------

    async def runs_page(self, request: Request) -> Response:
        root = _root(request)
        try:
            filters = _filters(request)
            page = await list_runs(
                status=filters.status or None,
                workflow=filters.workflow or None,
                id_prefix=filters.prefix or None,
                limit=filters.limit,
                cursor=filters.cursor or None,
                store=self.store_arg,
            )
        except ValueError as exc:
            body = _pages.runs_page(root, Filters(), [], None, problem=str(exc))
            return HTMLResponse(body, status_code=400)
        return HTMLResponse(_pages.runs_page(root, filters, page.runs, page.next_cursor))

    async def run_page(self, request: Request) -> Response:
        root = _root(request)
        run_id = request.query_params.get("id")
        if not run_id:
            return HTMLResponse(
                _pages.error_page(root, "No run given", "Open a run from the runs page."),
                status_code=400,
            )
        view = await inspect_run(await self.store(), run_id)
        if view is None:
            message = f"There is no run {run_id!r} in this store."
            return HTMLResponse(_pages.error_page(root, "No such run", message), status_code=404)
        return HTMLResponse(_pages.run_page(root, view, datetime.now(UTC)))

    # -- JSON ----------------------------------------------------------------------------------

    async def api_runs(self, request: Request) -> Response:
        params = request.query_params
        try:
            page = await list_runs(
                status=params.getlist("status") or None,
                workflow=params.getlist("workflow") or None,
                id_prefix=params.get("prefix") or None,
                parent=params.get("parent") or None,
                limit=_limit(params.get("limit")),
                cursor=params.get("cursor") or None,
                store=self.store_arg,
            )
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(
            {"runs": [info_json(run) for run in page.runs], "next_cursor": page.next_cursor}
        )

    async def api_run(self, request: Request) -> Response:
        run_id = request.query_params.get("id")
        if not run_id:
            return JSONResponse({"error": "give the run's id: /api/run?id=..."}, status_code=400)
        view = await inspect_run(await self.store(), run_id)
        if view is None:
            return JSONResponse({"error": str(WorkflowNotFound(run_id))}, status_code=404)
        data = run_json(view)
        data["signature"] = _pages.signature(view)
        return JSONResponse(data)

    # -- actions -------------------------------------------------------------------------------

    async def action(self, request: Request) -> Response:
        verb = request.path_params["verb"]
        act = self.ACTIONS.get(verb)
        if act is None:
            return _failure(404, f"no action {verb!r}; actions: {', '.join(self.ACTIONS)}")
        problem = _csrf_problem(request)
        if problem is not None:
            return _failure(403, problem)
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _failure(400, "the request body must be a JSON object")
        run_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(run_id, str) or not run_id:
            return _failure(400, 'the request body must name the run: {"id": "..."}')
        handle = self.handle(run_id)
        try:
            message = await act(self, handle, body)
            info = await handle.describe()
        except WorkflowNotFound as exc:
            return _failure(404, str(exc))
        except (_Refused, ActionRefused, WorkflowFinished) as exc:
            return _failure(409, str(exc))
        except ValueError as exc:
            return _failure(400, str(exc))
        except DurableError as exc:  # whatever else the store or the run says no with
            return _failure(409, str(exc))
        return JSONResponse({"ok": True, "message": message, "run": info_json(info)})

    async def _cancel(self, handle: WorkflowHandle, body: dict[str, Any]) -> str:
        status = await handle.status()
        if status.finished:
            raise _Refused(f"run {handle.id!r} is {status}: there is nothing to cancel")
        await handle.cancel()
        return f"cancel requested: run {handle.id!r} stops at its next step (a worker ends it)"

    async def _retry(self, handle: WorkflowHandle, body: dict[str, Any]) -> str:
        after = body.get("after_compensation", False)
        if not isinstance(after, bool):
            raise ValueError("after_compensation must be true or false")
        await handle.retry(after_compensation=after)
        return f"run {handle.id!r} is pending again: the next worker retries it"

    async def _pause(self, handle: WorkflowHandle, body: dict[str, Any]) -> str:
        status = await handle.status()
        if status.finished or status == RunStatus.PAUSED:
            raise _Refused(f"run {handle.id!r} is {status}: there is nothing to pause")
        await handle.pause()
        return f"pause requested: run {handle.id!r} stops at its next step boundary"

    async def _resume(self, handle: WorkflowHandle, body: dict[str, Any]) -> str:
        status = await handle.status()
        if status != RunStatus.PAUSED:
            raise _Refused(f"run {handle.id!r} is {status}, not paused: there is nothing to resume")
        await handle.resume()
        return f"run {handle.id!r} resumed: the next worker continues it"

    async def _signal(self, handle: WorkflowHandle, body: dict[str, Any]) -> str:
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError("give the signal's name")
        text = body.get("payload")
        if text is None or (isinstance(text, str) and not text.strip()):
            payload = None
        elif isinstance(text, str):
            try:
                payload = json.loads(text)
            except ValueError as exc:
                raise ValueError(f"the payload is not valid JSON: {exc}") from None
        else:
            raise ValueError("payload must be JSON text")
        # JSON-encoded, as `durable runs signal` sends it: this process may not import the
        # workflow, so its codec is unknown, and JSON is what JSON and pickle workflows read.
        store = await self.store()
        await send_signal(store, handle.id, name, payload, now=time.time(), codec=JSONCodec())
        return f"signal {name!r} sent to run {handle.id!r}"

    ACTIONS: ClassVar[
        Mapping[str, Callable[[_UI, WorkflowHandle, dict[str, Any]], Awaitable[str]]]
    ] = {
        "cancel": _cancel,
        "retry": _retry,
        "pause": _pause,
        "resume": _resume,
        "signal": _signal,
    }


def _root(request: Request) -> str:
    """Where the app is mounted (``""`` at the top): the prefix of every link it makes."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _limit(text: str | None, default: int = 50) -> int:
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}") from None
    return value


def _filters(request: Request) -> Filters:
    params = request.query_params
    return Filters(
        status=params.get("status", ""),
        workflow=params.get("workflow", "").strip(),
        prefix=params.get("prefix", ""),
        cursor=params.get("cursor", ""),
        back=tuple(params.getlist("back")),
        limit=_limit(params.get("limit")),
    )


def _failure(status: int, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message}, status_code=status)


def _csrf_problem(request: Request) -> str | None:
    """Why this POST may come from another site's page, or ``None`` when it may not."""
    if request.headers.get(CSRF_HEADER) != "1":
        return "refused: actions need the header X-Durable-UI: 1 (the web view's page sends it)"
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc.lower() != host.lower():
            return f"refused: the request comes from {origin!r}, not from this host ({host!r})"
    return None


async def _static(request: Request) -> Response:
    name = request.path_params["name"]
    media_type = STATIC_TYPES.get(name)
    if media_type is None:
        return Response("not found", status_code=404, media_type="text/plain")
    content = (resources.files("durable.ui") / "static" / name).read_bytes()
    return Response(content, media_type=media_type, headers={"cache-control": "no-cache"})


def build_app(store: Store | str | None) -> Starlette:
    """The application `durable.ui.create_app` returns."""
    ui = _UI(store)
    routes = [
        Route("/", ui.runs_page, name="runs"),
        Route("/run", ui.run_page, name="run"),
        Route("/api/runs", ui.api_runs, name="api_runs"),
        Route("/api/run", ui.api_run, name="api_run"),
        Route("/api/actions/{verb}", ui.action, methods=["POST"], name="action"),
        Route("/static/{name}", _static, name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(_SecurityHeaders)
    return app
