"""Errors that no retry can cure fail at once with a clear `StoreError`; only connection-level
failures are outages worth waiting out. Opening a store whose server accepts no connections
fails at once (naming host and port) unless the caller asked to wait for it.

All against the real server: the permanent errors are made by values Postgres refuses (an
index entry too large, an integer out of range, text UTF-8 cannot encode, a field over 1 GB),
and by a constraint added to durable's table as another tool might; the store keeps its
default ``reconnect_timeout`` of 60 s, so failing within a few seconds proves no retry ran.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url
from support import require_postgres

from durable.backends import SQLStore
from durable.store import (
    Lease,
    LeaseOwner,
    RunRecord,
    RunStatus,
    RunUpdate,
    StepKind,
    StepRecord,
    StepStatus,
    Store,
    StoreError,
)

OWNER = LeaseOwner("owner-a", "host-a", 101)
QUICK = 15.0  # seconds: far below reconnect_timeout (60 s), so nothing was retried


def _step(run_id: str, seq: int, *, attempts: int = 1, result: bytes = b"ok") -> StepRecord:
    return StepRecord(
        run_id,
        seq,
        StepKind.ACTIVITY,
        "app.charge",
        StepStatus.COMPLETED,
        attempts,
        1.0,
        2.0,
        result,
    )


async def _leased(store: Store, run_id: str) -> Lease:
    await store.create_run(RunRecord(run_id, "app.flow", RunStatus.PENDING, b"args", 1.0, 1.0))
    lease = await store.acquire_lease(run_id, OWNER, now=1.0, duration=60)
    assert lease is not None
    return lease


@pytest.fixture
async def pg_store(fresh_postgres_url: str) -> AsyncIterator[SQLStore]:
    async with SQLStore(fresh_postgres_url) as store:
        yield store


async def test_an_index_entry_too_large_fails_at_once(
    pg_store: SQLStore, caplog: pytest.LogCaptureFixture
) -> None:
    """An idempotency key over Postgres' index-entry limit: refused at once, nothing kept."""
    caplog.set_level(logging.WARNING, logger="durable.store")
    await _leased(pg_store, "big-key")
    started = time.monotonic()
    with pytest.raises(StoreError) as error:
        await pg_store.send_signal(
            "big-key", "go", b"p", now=2.0, idempotency_key=os.urandom(8000).hex()
        )
    assert time.monotonic() - started < QUICK
    message = str(error.value)
    assert "'big-key'" in message and "too large" in message and "Retrying cannot help" in message
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]
    await pg_store.send_signal("big-key", "go", b"p", now=3.0, idempotency_key="k")  # still fine


async def test_an_integer_out_of_range_fails_at_once_naming_run_and_step(
    pg_store: SQLStore,
) -> None:
    lease = await _leased(pg_store, "range")
    started = time.monotonic()
    with pytest.raises(StoreError) as error:
        await pg_store.commit(lease, [_step("range", 1, attempts=2**40)], now=2.0)
    assert time.monotonic() - started < QUICK
    message = str(error.value)
    assert "step 1 of run 'range'" in message and "out of range" in message
    assert "nothing of this write was recorded" in message
    assert await pg_store.load_steps("range") == []
    await pg_store.commit(lease, [_step("range", 1)], now=2.0)  # the store goes on working


async def test_text_utf8_cannot_encode_fails_at_once(pg_store: SQLStore) -> None:
    lease = await _leased(pg_store, "surrogate")
    update = RunUpdate(RunStatus.FAILED, error_text="broken \udc80 text", release=True)
    started = time.monotonic()
    with pytest.raises(StoreError) as error:
        await pg_store.commit(lease, update=update, now=2.0)
    assert time.monotonic() - started < QUICK
    assert "run 'surrogate'" in str(error.value) and "data error" in str(error.value)
    run = await pg_store.get_run("surrogate")
    assert run is not None and run.status == RunStatus.RUNNING


async def test_a_constraint_violation_fails_at_once(
    pg_store: SQLStore, fresh_postgres_url: str
) -> None:
    """A constraint some other tool put on durable's table: the refusal is not an outage."""
    schema = fresh_postgres_url.rsplit("%3D", 1)[1]
    with psycopg.connect(require_postgres(), autocommit=True) as conn:
        conn.execute(
            f"ALTER TABLE {schema}.durable_steps ADD CONSTRAINT few CHECK (attempts < 100)"
        )
    lease = await _leased(pg_store, "checked")
    started = time.monotonic()
    with pytest.raises(StoreError) as error:
        await pg_store.commit(lease, [_step("checked", 1, attempts=500)], now=2.0)
    assert time.monotonic() - started < QUICK
    message = str(error.value)
    assert "step 1 of run 'checked'" in message and "constraint" in message


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
async def test_a_payload_over_one_gigabyte_fails_at_once(store: Store) -> None:
    """Over what one field holds (1 GB; SQLite's default limit is 10^9 bytes): refused before
    anything is sent, naming the step; the zero-filled buffer costs no real memory."""
    lease = await _leased(store, "huge")
    huge = bytes((1 << 30) + 1)
    started = time.monotonic()
    with pytest.raises(StoreError) as error:
        await store.commit(lease, [_step("huge", 1, result=huge)], now=2.0)
    del huge
    assert time.monotonic() - started < QUICK
    message = str(error.value)
    assert "step 1 of run 'huge'" in message and "too large" in message
    assert await store.load_steps("huge") == []


# -- opening a store whose server accepts no connections ---------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_opening_a_refusing_server_fails_at_once_naming_host_and_port(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="durable.store")
    port = _free_port()
    started = time.monotonic()
    with pytest.raises(StoreError) as error:
        SQLStore(f"postgresql://postgres@127.0.0.1:{port}/test")
    assert time.monotonic() - started < QUICK
    message = str(error.value)
    assert "'127.0.0.1'" in message and f"port {port}" in message
    assert "wait_for_server" in message and "--wait-for-db" in message
    assert not caplog.records  # no retry warnings


def test_wait_for_server_retries_then_names_the_wait(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="durable.store")
    port = _free_port()
    started = time.monotonic()
    with pytest.raises(StoreError) as error:
        SQLStore(f"postgresql://postgres@127.0.0.1:{port}/test", wait_for_server=1.5)
    assert 0.5 < time.monotonic() - started < QUICK
    assert "waited 1.5 s" in str(error.value) and f"port {port}" in str(error.value)
    assert any("retrying" in r.getMessage() for r in caplog.records)


# A TCP relay in a process of its own (libpq's blocking connect holds the GIL, so a relay
# thread in the test's process could not answer it): it starts listening after a second.
_RELAY = """
import socket, sys, threading, time

port, target = int(sys.argv[1]), (sys.argv[2], int(sys.argv[3]))


def pipe(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


time.sleep(1.0)
with socket.create_server(("127.0.0.1", port)) as server:
    while True:
        client, _ = server.accept()
        upstream = socket.create_connection(target)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pipe, args=(a, b), daemon=True).start()
"""


@pytest.fixture
def late_server() -> Iterator[int]:
    """A port where the test Postgres starts answering one second from now (like a database
    container that starts after its workers)."""
    base = require_postgres()
    server = psycopg.conninfo.conninfo_to_dict(base)
    host, target = str(server.get("host") or "127.0.0.1"), str(server.get("port") or 5432)
    port = _free_port()
    relay = subprocess.Popen([sys.executable, "-c", _RELAY, str(port), host, target])
    try:
        yield port
    finally:
        relay.kill()
        relay.wait(10)


async def test_wait_for_server_opens_once_the_server_is_up(
    late_server: int, fresh_postgres_url: str
) -> None:
    parsed = make_url(fresh_postgres_url)
    url = parsed.set(host="127.0.0.1", port=late_server).render_as_string(hide_password=False)
    async with SQLStore(url, wait_for_server=30) as store:
        await store.create_run(RunRecord("late", "app.flow", RunStatus.PENDING, b"a", 1.0, 1.0))
        assert await store.get_run("late") is not None


def test_wait_for_server_must_be_seconds() -> None:
    with pytest.raises(StoreError, match="wait_for_server"):
        SQLStore(f"postgresql://postgres@127.0.0.1:1/{uuid.uuid4().hex}", wait_for_server=-1)
