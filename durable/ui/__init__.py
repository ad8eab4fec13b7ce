"""The local web view of a store's runs: ``durable ui``, or `create_app` mounted in your own
ASGI application.

Two pages, server-rendered from the package (no build step, nothing fetched from elsewhere):
the runs, newest first, filtered and paged, refreshing themselves; and one run, with its
decoded arguments, outcome and error, the timeline of its steps drawn to scale, its parent and
children, and buttons to cancel, retry, pause, resume and signal it. The pages read JSON
endpoints (``/api/runs``, ``/api/run?id=...``) that anyone may use.

The view has no authentication of its own. `serve` binds to 127.0.0.1 by default; to show it
to others, mount `create_app` behind your application's authentication (docs/ui.md). Actions
are POST requests that must carry the ``X-Durable-UI`` header (which a page of another site
cannot send without a CORS grant the view never gives) and, when the browser says where they
come from, an ``Origin`` of this same host.

It needs the ``ui`` extra (Starlette and uvicorn): ``pip install 'durable-sdk[ui]'``. Importing
this module works without it; `create_app` and `serve` then raise `UIDependencyMissing`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from durable.store import Store

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["UIDependencyMissing", "create_app", "serve"]

INSTALL_HINT = "pip install 'durable-sdk[ui]'"

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
"""Listening on one of these, `serve` answers only requests addressed to this machine by name
(``Host: 127.0.0.1``, ``localhost`` or ``[::1]``, any port)."""


class UIDependencyMissing(ImportError):
    """The web view's dependencies (Starlette, uvicorn) are not installed; the message names
    the extra that installs them."""


def _require(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise UIDependencyMissing(
            f"the durable web view needs {module.split('.')[0]}, which is not installed; "
            f"install the ui extra: {INSTALL_HINT}",
            name=exc.name,
        ) from exc


def create_app(store: Store | str | None = None) -> Starlette:
    """The web view as an ASGI application (Starlette), to serve or to mount.

    Args:
        store: the store to show: a store object, a URL (opened on first use), or ``None``
            for ``DURABLE_URL`` / ``sqlite:///durable.db``.

    Returns:
        A Starlette application; mount it under any path (``app.mount("/durable", ...)``),
        behind your own authentication: the view has none (see the module docstring).

    Raises:
        UIDependencyMissing: Starlette is not installed.
    """
    _require("starlette")
    from durable.ui._app import build_app

    return build_app(store)


def serve(store: str | None = None, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the web view with uvicorn until interrupted (Ctrl-C); blocks.

    Args:
        store: the store's URL, or ``None`` for ``DURABLE_URL`` / ``sqlite:///durable.db``.
        host: the interface to listen on. The default answers only this machine, and only
            requests addressed to it as 127.0.0.1 / localhost (a defence against DNS
            rebinding); the view has no authentication, so listen elsewhere only behind
            something that has.
        port: the TCP port; 0 picks a free one (uvicorn's log line names it).

    Raises:
        UIDependencyMissing: Starlette or uvicorn is not installed.
    """
    _require("starlette")
    _require("uvicorn")
    import uvicorn
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    app: Any = create_app(store)
    if host in LOOPBACK:
        # A page of another site that re-points its own name at 127.0.0.1 (DNS rebinding)
        # would be same-origin with the view; it still sends its own name as Host: refused.
        app = TrustedHostMiddleware(app, allowed_hosts=["127.0.0.1", "localhost", "::1", "[::1]"])
    uvicorn.run(app, host=host, port=port, log_level="info")
