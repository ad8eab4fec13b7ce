"""Stores opened for URLs are bounded: at most DURABLE_MAX_OPEN_STORES stay open, the least
recently used idle one is closed when another is opened, and a URL used again is reopened."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import anyio
import pytest
from support import python

import durable
from durable._stores import max_open, resolve_store, using


@durable.activity
async def triple(x: int) -> int:
    return 3 * x


@durable.workflow
async def tripler(x: int) -> int:
    return await triple(x)


@pytest.fixture(autouse=True)
def _closed_after() -> object:
    yield None
    anyio.run(durable.close_stores)


def test_150_urls_run_under_a_limit_of_100_open_files(tmp_path: Path) -> None:
    """The issue's case: 150 distinct SQLite URLs in one process with ``ulimit -n 100``."""
    program = textwrap.dedent(
        f"""
        import os, resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))
        import durable

        @durable.activity
        async def triple(x: int) -> int:
            return 3 * x

        @durable.workflow
        async def tripler(x: int) -> int:
            return await triple(x)

        most = 0
        for i in range(150):
            url = "sqlite:///{tmp_path}/many-" + str(i) + ".db"
            assert durable.run(tripler, i, id="r", store=url) == 3 * i
            most = max(most, len(os.listdir("/proc/self/fd")))
        # the first URL was closed long ago: its handle opens it again, the data is there
        first = durable.get_handle("r", "sqlite:///{tmp_path}/many-0.db")
        import anyio
        assert anyio.run(first.result) == 0
        print("most open files:", most)
        """
    )
    done = python("-c", program, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    most = int(done.stdout.split("most open files:")[1])
    assert most < 60, done.stdout


def test_a_store_in_use_is_not_closed_and_the_oldest_idle_one_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURABLE_MAX_OPEN_STORES", "2")
    urls = [f"sqlite:///{tmp_path / f's{i}.db'}" for i in range(5)]
    with using(urls[0]) as held:
        for url in urls[1:]:
            resolve_store(url)
        # urls[0] is in use: still open and still the same store, though over the limit
        assert resolve_store(urls[0]) is held
        assert durable.run(tripler, 2, id="held", store=held) == 6
    oldest_idle = resolve_store(urls[1])
    resolve_store(urls[2])
    resolve_store(urls[3])  # over the limit: urls[0] (now idle) and urls[1] are closed
    with pytest.raises(durable.StoreError, match="closed"):
        anyio.run(oldest_idle.get_run, "held")
    reopened = resolve_store(urls[0])
    assert reopened is not held
    assert anyio.run(durable.get_handle("held", urls[0]).result) == 6


def test_memory_stores_are_never_closed_to_make_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURABLE_MAX_OPEN_STORES", "1")
    assert durable.run(tripler, 1, id="m", store="memory://kept") == 3
    for i in range(3):
        durable.run(tripler, i, id="x", store=f"sqlite:///{tmp_path / f'm{i}.db'}")
    assert anyio.run(durable.get_handle("m", "memory://kept").result) == 3


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_bad_limit_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DURABLE_MAX_OPEN_STORES", value)
    with pytest.raises(ValueError, match="DURABLE_MAX_OPEN_STORES"):
        max_open()


def test_the_default_limit() -> None:
    assert "DURABLE_MAX_OPEN_STORES" not in os.environ
    assert max_open() == 8


async def test_a_worker_keeps_its_url_store_open_while_it_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURABLE_MAX_OPEN_STORES", "1")
    url = f"sqlite:///{tmp_path / 'served.db'}"
    worker = durable.Worker(url, [tripler])
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await anyio.wait_all_tasks_blocked()  # the worker has opened its store and waits
        for i in range(3):  # other URLs opened meanwhile: the worker's store is in use
            durable.get_handle("x", f"sqlite:///{tmp_path / f'other-{i}.db'}")._store  # noqa: B018
        handle = await durable.start(tripler, 5, id="served", store=url)
        with anyio.fail_after(60):
            assert await handle.result() == 15
        worker.stop()


async def test_opening_a_store_for_a_url_does_not_block_the_event_loop() -> None:
    """A server that accepts the connection and never answers: opening the store waits for
    its connect timeout on a worker thread, while the loop's other tasks run."""
    pytest.importorskip("psycopg")
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # accepted, never answered
            except OSError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    port = listener.getsockname()[1]
    url = f"postgresql://nobody@127.0.0.1:{port}/db?connect_timeout=2"
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            with pytest.raises(durable.StoreError):
                await durable.start(tripler, 1, id="never", store=url)
            assert ticks >= 1  # the loop ran while the store was being opened
            tg.cancel_scope.cancel()
    finally:
        stop.set()
        acceptor.join()
        for conn in held:
            conn.close()
        listener.close()
