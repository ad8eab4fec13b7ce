"""The shipped store contract battery (`durable.testing.check_store`) on every store of ours,
one test per check, and the battery's own behaviour (it reports every failure, by name)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import TRUNCATE_ALL, python

from durable.backends import MemoryStore, SQLStore
from durable.store import RunRecord, RunStatus, Store
from durable.testing import STORE_CHECKS, StoreCheckFailed, check_store, run_store_check
from durable.testing._check_store import StoreFactory


@pytest.fixture
def make_store(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StoreFactory]:
    """A factory of new, empty stores of the kind: a new SQLite file each time; on Postgres
    this session's schema, emptied."""
    if store_kind == "memory":
        yield MemoryStore
    elif store_kind == "sqlite":
        numbers = itertools.count()

        def sqlite() -> Store:
            return SQLStore(f"sqlite:///{tmp_path / f'store-{next(numbers)}.db'}")

        yield sqlite
    else:
        import sqlalchemy as sa

        url: str = request.getfixturevalue("postgres_url")
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))

        def postgres() -> Store:
            store = SQLStore(url)  # creates the tables the first time
            with engine.begin() as conn:
                conn.execute(sa.text(TRUNCATE_ALL))
            return store

        yield postgres
        engine.dispose()


@pytest.mark.parametrize("check", STORE_CHECKS)
async def test_the_store_keeps_the_contract(make_store: StoreFactory, check: str) -> None:
    await run_store_check(check, make_store)


# -- the battery itself ------------------------------------------------------------------------


async def test_check_store_runs_every_check_and_names_them() -> None:
    async def make() -> Store:  # a factory may be async
        return MemoryStore()

    assert await check_store(make) == list(STORE_CHECKS)
    assert len(STORE_CHECKS) == len(set(STORE_CHECKS)) > 40
    one = ["create_run_is_idempotent"]
    assert await check_store(MemoryStore, checks=one) == one


class _NewestFirst(MemoryStore):
    """A store with one bug: it lists runs newest first."""

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 100
    ) -> list[RunRecord]:
        runs = await super().list_runs(status=status, limit=1_000)
        return runs[::-1][:limit]


class _Forgetful(MemoryStore):
    """A store with another bug: a pause request is not recorded."""

    async def request_pause(self, run_id: str, *, now: float) -> RunRecord | None:
        self._doorbell.ring(run_id)
        return await self.get_run(run_id)


async def test_check_store_reports_every_failing_check_with_its_reason() -> None:
    with pytest.raises(StoreCheckFailed) as failed:
        await check_store(_NewestFirst)
    assert set(failed.value.failures) == {"list_runs_oldest_first_by_status_and_limit"}
    assert failed.value.checks == list(STORE_CHECKS)
    message = str(failed.value)
    assert message.startswith(f"1 of {len(STORE_CHECKS)} store checks failed")
    assert "list_runs_oldest_first_by_status_and_limit: AssertionError: all runs: expected" in (
        message
    )
    assert re.search(r"\(durable/testing/_check_store/_\w+\.py line \d+\)", message)
    assert isinstance(failed.value, AssertionError)

    with pytest.raises(StoreCheckFailed) as failed:
        await check_store(_Forgetful)
    assert {
        "outcomes_replace_started_rows_and_stand_in_for_lost_ones",
        "check_requests_stops_a_step_until_the_request_is_handled",
        "request_pause_and_resume",
    } <= set(failed.value.failures)


async def test_run_store_check_raises_the_checks_own_error() -> None:
    with pytest.raises(AssertionError, match="all runs: expected"):
        await run_store_check("list_runs_oldest_first_by_status_and_limit", _NewestFirst)
    with pytest.raises(ValueError, match="STORE_CHECKS"):
        await run_store_check("no_such_check", MemoryStore)
    with pytest.raises(ValueError, match="no_such_check"):
        await check_store(MemoryStore, checks=["create_run_is_idempotent", "no_such_check"])


def test_durable_testing_imports_neither_pytest_nor_a_database_driver(tmp_path: Path) -> None:
    program = (
        "import sys, durable.testing\n"
        "loaded = {'pytest', 'psycopg'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    done = python("-c", program, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
