"""A workflow's bug keeps its traceback: the recorded error, raised again later (the same id,
`handle.result()`, `history()`), carries the traceback of its first raise as a note; a worker
logs the failure with it."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import anyio
import pytest

import durable
from durable.backends import MemoryStore
from durable.store import Store


def lookup_email(customer: dict[str, str]) -> str:
    return customer["email"]


@durable.workflow(name="tracebacks.notify")
async def notify(customer: dict[str, str]) -> str:
    return lookup_email(customer)


@durable.workflow(name="tracebacks.notify_json", codec=durable.JSONCodec())
async def notify_json(customer: dict[str, str]) -> str:
    return lookup_email(customer)


def parse_amount(text: str) -> int:
    return int(text)


@durable.activity
async def charge(text: str) -> int:
    return parse_amount(text)


@durable.workflow(name="tracebacks.bills")
async def bills(text: str) -> int:
    return await charge(text)


def _notes(exc: BaseException) -> str:
    return "\n".join(getattr(exc, "__notes__", []))


@pytest.mark.parametrize("workflow", [notify, notify_json], ids=["pickle", "json"])
async def test_a_recorded_failure_keeps_its_original_traceback(store: Store, workflow: Any) -> None:
    """The same id again and handle.result() raise the error with where it really came from."""
    with pytest.raises(KeyError) as first:
        await durable.execute(workflow, {"name": "ann"}, id="t", store=store)
    assert "lookup_email" in "".join(traceback.format_exception(first.value))
    with pytest.raises(KeyError) as again:
        await durable.execute(workflow, {"name": "ann"}, id="t", store=store)
    with pytest.raises(KeyError) as waited:
        await durable.get_handle("t", store).result()
    for exc in (again.value, waited.value):
        notes = _notes(exc)
        assert "lookup_email" in notes and 'return customer["email"]' in notes
        assert notes.count("Recorded by durable") == 1


async def test_an_activitys_failure_in_history_keeps_its_traceback(store: Store) -> None:
    """A failed step's error in history() shows the activity's own frames."""
    with pytest.raises(ValueError, match="invalid literal"):
        await durable.execute(bills, "ten", id="b", store=store)
    (step,) = await durable.get_handle("b", store).history()
    assert step.error is not None and "parse_amount" in _notes(step.error)


async def test_a_worker_logs_a_failed_run_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The worker's log says which run failed, and why, with the traceback."""
    store = MemoryStore()
    worker = durable.Worker(store, [notify])
    with caplog.at_level(logging.WARNING, logger="durable.run"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await durable.start(notify, {"name": "bob"}, id="w", store=store)
            with pytest.raises(KeyError), anyio.fail_after(10):
                await durable.get_handle("w", store).result()
            worker.stop()
    failed = [r for r in caplog.records if "run 'w' (workflow" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None
    assert failed[0].levelno == logging.ERROR and "failed: KeyError" in failed[0].getMessage()
    assert "lookup_email" in "".join(traceback.format_exception(*failed[0].exc_info))
