"""The stores durable opens for URLs (``store="sqlite:///..."``, ``DURABLE_URL``, the default).

One store per URL, shared by the whole process. At most `max_open` of them stay open (each
SQLite store holds three files, a Postgres one a pool of connections): opening one more closes
the least recently used store that no call is using at that moment (`using`), and a URL used
again later is opened again. ``memory://<name>`` stores are never closed that way (closing
one would drop its data).
"""

from __future__ import annotations

import importlib
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import anyio
import anyio.to_thread

from durable.store import Store

__all__ = [
    "DEFAULT_URL",
    "close_stores",
    "max_open",
    "open_store",
    "resolve_store",
    "using",
    "using_async",
]

DEFAULT_URL = "sqlite:///durable.db"
_MAX_OPEN = 8
_MAX_ENV = "DURABLE_MAX_OPEN_STORES"


class _Opened:
    __slots__ = ("store", "users")

    def __init__(self, store: Store) -> None:
        self.store = store
        self.users = 0


_opened: OrderedDict[str, _Opened] = OrderedDict()  # least recently used first
_lock = threading.Lock()


def max_open() -> int:
    """How many stores opened for URLs may stay open: ``DURABLE_MAX_OPEN_STORES``, default 8.

    Raises:
        ValueError: the variable is not an integer >= 1.
    """
    text = os.environ.get(_MAX_ENV)
    if text is None:
        return _MAX_OPEN
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{_MAX_ENV} must be an integer >= 1, not {text!r}")
    return value


def resolve_store(store: Store | str | None) -> Store:
    """A store object as given, or the (process-wide, shared) store for a URL.

    ``None`` means the ``DURABLE_URL`` environment variable, else ``sqlite:///durable.db``.
    ``memory://<name>`` gives a process-wide in-memory store.
    """
    if isinstance(store, Store):
        return store
    with _lock:
        return _entry(store).store


@contextmanager
def using(store: Store | str | None) -> Iterator[Store]:
    """`resolve_store`, and keep a store opened for a URL open while the block runs."""
    if isinstance(store, Store):
        yield store
        return
    with _lock:
        entry = _entry(store)
        entry.users += 1
    try:
        yield entry.store
    finally:
        with _lock:
            entry.users -= 1
            _evict()


async def open_store(store: Store | str | None) -> Store:
    """`resolve_store` for async code: a store not open yet is opened on a worker thread (a
    database's connect and schema check never block the event loop)."""
    if isinstance(store, Store):
        return store
    with _lock:
        entry = _opened.get(_url(store))
        if entry is not None:
            _opened.move_to_end(_url(store))
            return entry.store
    return await anyio.to_thread.run_sync(resolve_store, store)


@asynccontextmanager
async def using_async(store: Store | str | None) -> AsyncIterator[Store]:
    """`using` for async code: the store is opened on a worker thread (see `open_store`)."""
    await open_store(store)
    with using(store) as opened:
        yield opened


async def close_stores() -> None:
    """Close every store durable opened for a URL in this process (``store="sqlite:///..."``,
    ``DURABLE_URL``, the default ``durable.db``): their files and connections are released.
    A URL used again afterwards is opened again. Store objects you made yourself are yours to
    close. Call it when a process that served many URLs is done with them, or at shutdown.
    """
    with _lock:
        opened = [entry.store for entry in _opened.values()]
        _opened.clear()
    for store in opened:
        await store.close()


def _url(store: object) -> str:
    """The URL a ``store=`` argument names (``None``: ``DURABLE_URL`` or the default)."""
    if store is None:
        store = os.environ.get("DURABLE_URL") or DEFAULT_URL
    if not isinstance(store, str):
        raise TypeError(f"store= must be a durable store or a URL string, not {store!r}")
    return store


def _entry(store: object) -> _Opened:
    """The entry for a URL (opened if needed, made the most recent). Called under `_lock`."""
    store = _url(store)
    entry = _opened.get(store)
    if entry is None:
        entry = _opened[store] = _Opened(_open_store(store))
        _evict()
    else:
        _opened.move_to_end(store)
    return entry


def _evict() -> None:
    """Close the least recently used idle stores beyond the limit. Called under `_lock`."""
    limit = max_open()
    closable = [url for url in _opened if not url.startswith("memory:")]
    excess = len(closable) - limit
    for url in closable:
        if excess <= 0:
            break
        entry = _opened[url]
        if entry.users == 0 and url != next(reversed(_opened)):
            del _opened[url]
            _close_now(entry.store)
            excess -= 1


def _close_now(store: Store) -> None:
    """Close a store durable made (`SQLStore.close` does not await anything) without an event
    loop: eviction happens in synchronous code."""
    closing = store.close()
    try:
        closing.send(None)
    except StopIteration:
        return
    closing.close()
    raise RuntimeError(f"{store!r}.close() awaited something; it cannot be closed here")


def _open_store(url: str) -> Store:
    backends = importlib.import_module("durable.backends")
    if url.startswith("memory:"):
        return backends.MemoryStore()  # type: ignore[no-any-return]
    return backends.SQLStore(url)  # type: ignore[no-any-return]
