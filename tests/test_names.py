"""Run ids and signal names follow one rule on every store, checked before anything is
written: non-empty, at most 255 characters, no control characters (Postgres cuts text at a
NUL, so "order-7\\x00a" and "order-7\\x00b" would be one run)."""

from __future__ import annotations

import pytest

import durable
from durable.store import Store

calls: list[str] = []


@durable.workflow(name="names.greet")
async def greet(name: str) -> str:
    calls.append(name)
    return f"hello {name}"


@durable.workflow(name="names.waits")
async def waits(signal_name: str) -> str:
    return str(await durable.wait_signal(signal_name))


BAD_IDS = ["order-7\x00a", "line\nbreak", "tab\there", "bell\x07", "\ud800", "x" * 256]


@pytest.mark.parametrize("bad", BAD_IDS, ids=["nul", "newline", "tab", "bell", "surrogate", "256"])
async def test_bad_ids_are_refused_before_the_store_is_touched(store: Store, bad: str) -> None:
    """run/execute/start/get_handle/signal refuse the id with a ValueError; nothing is stored."""
    with pytest.raises(ValueError, match="id"):
        await durable.execute(greet, "a", id=bad, store=store)
    with pytest.raises(ValueError, match="id"):
        await durable.start(greet, "a", id=bad, store=store)
    with pytest.raises(ValueError, match="id"):
        durable.get_handle(bad, store)
    with pytest.raises(ValueError, match="id"):
        await durable.signal(bad, "go", store=store)
    assert await store.list_runs() == []
    assert calls == []


def test_run_refuses_a_nul_id_and_a_huge_one(tmp_path: object) -> None:
    """durable.run refuses them too; a 10,000-character id is refused, not written."""
    url = f"sqlite:///{tmp_path}/names.db"
    with pytest.raises(ValueError, match=r"control characters"):
        durable.run(greet, "a", id="order-7\x00a", store=url)
    with pytest.raises(ValueError, match="10000 characters long"):
        durable.run(greet, "a", id="y" * 10_000, store=url)
    assert calls == []


async def test_the_longest_id_is_accepted(store: Store) -> None:
    """An id of exactly 255 characters (any script) is a normal run."""
    long_id = "é" * 255
    assert await durable.execute(greet, "b", id=long_id, store=store) == "hello b"
    assert await durable.get_handle(long_id, store).status() == durable.RunStatus.COMPLETED


async def test_bad_signal_names_are_refused(store: Store) -> None:
    """A signal name with a NUL (which would satisfy another name's wait) is refused."""
    await durable.start(waits, "approve", id="w", store=store)
    with pytest.raises(ValueError, match="signal name"):
        await durable.signal("w", "approve\x00x", "yes", store=store)
    with pytest.raises(ValueError, match="signal name"):
        await durable.get_handle("w", store).signal("a" * 256)
    with pytest.raises(ValueError, match="idempotency_key"):
        await durable.signal("w", "approve", "yes", idempotency_key="k\x00", store=store)
    # Nothing was buffered: the wait gets the first signal really named "approve".
    await durable.signal("w", "approve", "the real one", store=store)
    assert await durable.execute(waits, "approve", id="w", store=store) == "the real one"


@pytest.fixture(autouse=True)
def _clear() -> None:
    calls.clear()
