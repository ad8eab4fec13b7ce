"""A row holding a status or step kind this version does not know (someone wrote ``'bogus'``
into it) gives an error naming the run (and the step) and saying that the database was
written by a newer or different version of durable, or is damaged: never a bare
``ValueError: 'bogus' is not a valid RunStatus``. (That a worker blocks such a run and keeps
serving is in tests/test_ids_prune_rows.py.)"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import durable
from durable.backends import SQLStore
from durable.store import Store, UnreadableRecord


@durable.activity(name="oddrows.step")
async def step(n: int) -> int:
    return n


@durable.workflow(name="oddrows.flow")
async def flow() -> int:
    return await step(1) + await step(2)


def _write(store: Store, sql: str) -> None:
    """Change a row behind durable's back, as a hand-written UPDATE would."""
    assert isinstance(store, SQLStore)
    url = store.url.replace("postgresql://", "postgresql+psycopg://")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(sql))
    finally:
        engine.dispose()


def _says_what_to_do(message: str) -> None:
    assert "newer (or different) version of durable" in message, message
    assert "damaged" in message and "'bogus'" in message, message


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
async def test_an_unknown_run_status_names_the_run(store: Store) -> None:
    await durable.start(flow, id="odd-status", store=store)
    _write(store, "UPDATE durable_runs SET status = 'bogus' WHERE id = 'odd-status'")
    with pytest.raises(durable.StoreError) as error:
        await durable.execute(flow, id="odd-status", store=store)
    assert "run 'odd-status'" in str(error.value)
    _says_what_to_do(str(error.value))
    # Read by handle: blocked, with the same explanation.
    run = await store.get_run("odd-status")
    assert run is not None and run.status == durable.RunStatus.BLOCKED
    assert run.error_text is not None
    _says_what_to_do(run.error_text)


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("column", ["kind", "status"])
async def test_an_unknown_step_kind_or_status_names_run_and_step(store: Store, column: str) -> None:
    assert await durable.execute(flow, id="odd-step", store=store) == 3
    _write(
        store, f"UPDATE durable_steps SET {column} = 'bogus' WHERE run_id = 'odd-step' AND seq = 2"
    )
    with pytest.raises(UnreadableRecord) as error:
        await durable.get_handle("odd-step", store=store).history()
    assert (error.value.run_id, error.value.seq, error.value.field) == ("odd-step", 2, column)
    assert "step 2 of run 'odd-step'" in str(error.value)
    _says_what_to_do(str(error.value))
    assert isinstance(error.value, durable.StoreError)
