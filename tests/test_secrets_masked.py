"""Passwords stay out of everything durable shows: errors, log lines, ``repr`` and the command
line, in every form a store URL can carry one (``user:pw@host``, ``?password=...``, a libpq
``password=...`` keyword string), and in driver messages put into ours."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import psycopg
import pytest
from support import durable_cli, eventually, require_postgres

import durable
from durable.backends import SQLStore
from durable.backends._redact import redact, secrets_in
from durable.store import (
    LeaseOwner,
    RunRecord,
    RunStatus,
    StepKind,
    StepRecord,
    StepStatus,
    StoreError,
)

SECRET = "s3cr3t-Pw"

# Every form a password can take in what a user passes as a store URL.
REFUSING = [  # nothing listens on port 1
    f"postgresql://postgres:{SECRET}@127.0.0.1:1/test",
    f"postgresql://postgres@127.0.0.1:1/test?password={SECRET}",
    f"postgresql://postgres@127.0.0.1:1/test?sslmode=disable&password={SECRET}&x=1",
    f"host=127.0.0.1 port=1 user=postgres password={SECRET} dbname=test",
    f"host=127.0.0.1 port=1 password='{SECRET}' dbname=test",
]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://app:pw1@db/app", "postgresql://app:***@db/app"),
        ("postgresql://app:p@ss@db:5432/app?x=1", "postgresql://app:***@db:5432/app?x=1"),
        ("postgresql://app:%40pw@db/app", "postgresql://app:***@db/app"),
        ("postgresql://app@db/app?password=pw1&a=b", "postgresql://app@db/app?password=***&a=b"),
        ("host=db password=pw1 user=app", "host=db password=*** user=app"),
        ("host=db password = 'p w' user=app", "host=db password = *** user=app"),
        ("host=db PASSWORD=pw1 sslpassword=k", "host=db PASSWORD=*** sslpassword=***"),
        ("SQLStore('postgresql://u:pw1@h/d')", "SQLStore('postgresql://u:***@h/d')"),
        ("sqlite:///var/lib/app@2/durable.db", "sqlite:///var/lib/app@2/durable.db"),
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
        ("mail me at a@b.c, see http://x/y@z", "mail me at a@b.c, see http://x/y@z"),
    ],
)
def test_redact_masks_every_url_form(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_redact_masks_a_password_quoted_out_of_context() -> None:
    url = f"host=db password='{SECRET}'"
    assert SECRET in secrets_in(url)
    message = f'missing "=" after "{SECRET}" in connection info string'
    assert SECRET not in redact(message, secrets_in(url))
    assert redact(message, secrets_in(url)).endswith("in connection info string")


@pytest.mark.parametrize("url", REFUSING)
def test_open_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(StoreError) as error:
        SQLStore(url)
    text = "".join(str(e) for e in (error.value, error.value.__cause__) if e is not None)
    assert SECRET not in text
    assert "***" in str(error.value)


def test_a_bad_option_from_the_driver_is_masked() -> None:
    """psycopg and SQLAlchemy messages about a bad URL are masked before they reach ours."""
    url = f"{_with_password(require_postgres())}?sslmode=bogus"
    with pytest.raises(StoreError) as error:
        SQLStore(url)
    assert SECRET not in str(error.value)
    assert "invalid sslmode value" in str(error.value)


def _with_password(url: str) -> str:
    """``url`` with the password `SECRET` (the test server trusts local connections, so any
    password opens it)."""
    masked = url.replace("postgres@", f"postgres:{SECRET}@", 1)
    assert SECRET in masked
    return masked


@pytest.fixture
async def store_with_password(fresh_postgres_url: str) -> AsyncIterator[tuple[SQLStore, str]]:
    """A real Postgres store opened with a password in its URL, its connections named."""
    app_name = f"durable_masked_{uuid.uuid4().hex[:8]}"
    url = _with_password(f"{fresh_postgres_url}&application_name={app_name}")
    async with SQLStore(url) as store:
        yield store, app_name


async def test_repr_and_url_of_a_store_are_masked(
    store_with_password: tuple[SQLStore, str],
) -> None:
    store, _ = store_with_password
    assert SECRET not in repr(store) and "***" in repr(store)
    assert SECRET not in store.url


async def test_store_errors_and_retry_warnings_are_masked(
    store_with_password: tuple[SQLStore, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A permanent error's message, and the warnings logged while the server drops the
    connections, never show the password."""
    store, app_name = store_with_password
    caplog.set_level(logging.WARNING, logger="durable.store")
    run_id = f"masked-{id(store)}"
    await store.create_run(RunRecord(run_id, "app.flow", RunStatus.PENDING, b"a", 1.0, 1.0))
    lease = await store.acquire_lease(
        run_id, LeaseOwner("o", "h", 1), now=1.0, duration=30, takeover_token=None
    )
    assert lease is not None
    with psycopg.connect(require_postgres(), autocommit=True) as conn:  # drop its connections
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (app_name,),
        ).fetchall()
    assert killed
    step = StepRecord(
        run_id, 1, StepKind.ACTIVITY, "a", StepStatus.COMPLETED, 2**40, 1.0, 1.0, b"r"
    )
    with pytest.raises(StoreError) as error:  # attempts out of range for Postgres' integer
        await store.commit(lease, [step], now=2.0)
    assert SECRET not in str(error.value) and run_id in str(error.value)
    assert "***" in str(error.value)
    assert any("retrying" in r.getMessage() for r in caplog.records)  # the dropped connection
    for record in caplog.records:
        assert SECRET not in record.getMessage()


async def test_a_worker_log_shows_the_store_masked(
    store_with_password: tuple[SQLStore, str], caplog: pytest.LogCaptureFixture
) -> None:
    store, _ = store_with_password

    @durable.workflow(name="secrets.noop")
    async def noop() -> None:
        return None

    async def claiming() -> bool:
        return any("claiming runs" in r.getMessage() for r in caplog.records)

    caplog.set_level(logging.INFO, logger="durable.worker")
    worker = durable.Worker(store, [noop])
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await eventually("the worker's first log line", claiming, within=10)
        worker.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert any("***" in m for m in messages)
    assert not any(SECRET in m for m in messages)


@pytest.mark.parametrize("url", [REFUSING[0], REFUSING[1], REFUSING[3]])
def test_the_command_line_never_shows_the_password(tmp_path: Path, url: str) -> None:
    (tmp_path / "one_app.py").write_text(
        "import durable\n\n@durable.workflow(name='cli.one')\nasync def one() -> int:\n"
        "    return 1\n"
    )
    for args in (("worker", "one_app", "--store", url), ("db", "init", url)):
        done = durable_cli(tmp_path, *args)
        assert done.returncode == 2, done.stderr
        assert SECRET not in done.stdout + done.stderr
        assert "***" in done.stderr


def test_db_init_prints_the_url_masked(tmp_path: Path, fresh_postgres_url: str) -> None:
    url = _with_password(fresh_postgres_url)
    done = durable_cli(tmp_path, "db", "init", url)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert "postgres:***@" in done.stdout
