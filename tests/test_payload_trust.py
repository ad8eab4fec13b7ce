"""Payloads cannot run code unless the store lets them: signing (HMAC-SHA256, key rotation),
codec discipline (a JSON workflow never unpickles) and a store-wide list of allowed codecs.

The attacker here can write rows (a signal through the store, a run record, a raw UPDATE)
but does not hold the key. Each forged payload is a pickle that, if it were ever unpickled,
would create a marker file: the tests check the refusal *and* that the file never appears.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import durable
from durable import JSONCodec, RunStatus
from durable._codec import MAGIC, SIGNED, Payloads, PickleCodec, dumps
from durable.backends import MemoryStore, SQLStore
from durable.store import RunRecord, Store

KEY_A = "a" * 32
KEY_B = "b" * 32

StoreFactory = Callable[..., Any]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Any]:
    """Opens stores of one kind that share their data (a file, a Postgres schema; the memory
    store is one object whose trust is replaced), each with its own keys/codecs."""
    kind = request.param
    url = ""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'trust.db'}"
    elif kind == "postgres":
        url = request.getfixturevalue("fresh_postgres_url")
    shared: list[MemoryStore] = []

    @asynccontextmanager
    async def opened(**trust: Any) -> AsyncIterator[Store]:
        if kind == "memory":
            fresh = MemoryStore(**trust)
            if not shared:
                shared.append(fresh)
            store = shared[0]
            store.payload_trust = fresh.payload_trust
            yield store
            return
        async with SQLStore(url, **trust) as sql:
            yield sql

    return opened


class Boom:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (Path(self.marker), "the pickle ran"))


def forged(marker: Path) -> bytes:
    """A well-formed unsigned pickle payload (valid checksum) that runs code when decoded."""
    return dumps(PickleCodec(), Boom(marker), what="forged")


@durable.activity
async def add(a: int, b: int) -> int:
    return a + b


@durable.workflow
async def approval(n: int) -> int:
    total = await add(n, 1)
    extra = await durable.wait_signal("approve")
    return total + int(extra)


@durable.workflow(codec=JSONCodec())
async def json_approval(n: int) -> int:
    total = await add(n, 1)
    extra = await durable.wait_signal("approve")
    return total + int(extra)


async def all_payloads(store: Store, run_id: str) -> list[bytes]:
    run = await store.get_run(run_id)
    assert run is not None
    found = [p for p in (run.args, run.result, run.error) if p]
    for step in await store.load_steps(run_id):
        found += [p for p in (step.result, step.error) if p]
    return found


async def test_a_store_with_a_key_signs_every_payload_it_writes(open_store: StoreFactory) -> None:
    async with open_store(secret_keys=KEY_A) as store:
        handle = await durable.start(approval, 1, id="signed", store=store)
        await handle.signal("approve", 40)
        assert await durable.execute(approval, 1, id="signed", store=store) == 42
        payloads = await all_payloads(store, "signed")
        assert len(payloads) >= 4  # arguments, result, the activity and the signal
        assert all(p[:1] == SIGNED for p in payloads)
        assert await handle.result() == 42
        assert [step.result for step in await handle.history()] == [2, 40]


async def test_an_unsigned_signal_is_refused_before_it_is_decoded(
    open_store: StoreFactory, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    async with open_store(secret_keys=KEY_A) as store:
        await durable.start(approval, 1, id="victim", store=store)
        await store.send_signal("victim", "approve", forged(marker), now=time.time())
        with pytest.raises(durable.PayloadDecodeError) as info:
            await durable.execute(approval, 1, id="victim", store=store)
        message = str(info.value)
        assert "'victim'" in message and "step 2" in message
        assert "not signed" in info.value.reason
        assert await durable.get_handle("victim", store).status() == RunStatus.BLOCKED
    assert not marker.exists()


async def test_forged_run_arguments_are_refused_before_they_are_decoded(
    open_store: StoreFactory, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    async with open_store(secret_keys=[KEY_A]) as store:
        now = time.time()
        record = RunRecord(
            id="planted",
            workflow="",
            status=RunStatus.PENDING,
            args=forged(marker),
            created_at=now,
            updated_at=now,
        )
        await store.create_run(_with_workflow_name(record, approval))
        with pytest.raises(durable.PayloadDecodeError) as info:
            await durable.execute(approval, 1, id="planted", store=store)
        assert "arguments" in str(info.value) and "'planted'" in str(info.value)
    assert not marker.exists()


def _with_workflow_name(record: RunRecord, workflow: Any) -> RunRecord:
    from dataclasses import replace

    from durable._decorators import definition_of

    defn = definition_of(workflow)
    assert defn is not None
    return replace(record, workflow=defn.name)


async def test_a_tampered_signed_payload_does_not_verify(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    async with SQLStore(url, secret_keys=KEY_A) as store:
        await durable.start(approval, 1, id="t", store=store)
        await durable.signal("t", "approve", 1, store=store)
        assert await durable.execute(approval, 1, id="t", store=store) == 3
    with sqlite3.connect(tmp_path / "t.db") as db:
        (original,) = db.execute(
            "SELECT result FROM durable_steps WHERE run_id = 't' AND seq = 1"
        ).fetchone()
        assert original[:1] == SIGNED
        flipped = original[:-1] + bytes([original[-1] ^ 0x01])
        db.execute("UPDATE durable_steps SET result = ? WHERE run_id = 't' AND seq = 1", (flipped,))
    async with SQLStore(url, secret_keys=KEY_A) as store:
        with pytest.raises(durable.PayloadDecodeError) as info:
            await durable.get_handle("t", store).history()
        assert "does not verify" in info.value.reason
        assert "step 1" in str(info.value)
        assert await durable.get_handle("t", store).result() == 3  # other rows stay readable


async def test_a_forged_step_result_in_the_database_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    url = f"sqlite:///{tmp_path / 'f.db'}"
    async with SQLStore(url, secret_keys=KEY_A) as store:
        await durable.start(approval, 1, id="f", store=store)
        await durable.signal("f", "approve", 1, store=store)
        await durable.execute(approval, 1, id="f", store=store)
    with sqlite3.connect(tmp_path / "f.db") as db:
        db.execute("DELETE FROM durable_steps WHERE run_id = 'f' AND seq = 2")
        db.execute("UPDATE durable_runs SET status = 'running', result = NULL WHERE id = 'f'")
        db.execute(
            "UPDATE durable_steps SET result = ? WHERE run_id = 'f' AND seq = 1",
            (forged(marker),),
        )
    async with SQLStore(url, secret_keys=KEY_A) as store:
        with pytest.raises(durable.PayloadDecodeError):
            await durable.execute(approval, 1, id="f", store=store)
        assert await durable.get_handle("f", store).status() == RunStatus.BLOCKED
    assert not marker.exists()


async def test_keys_rotate_the_first_signs_and_every_one_verifies(
    open_store: StoreFactory,
) -> None:
    async with open_store(secret_keys=KEY_A) as store:
        await durable.start(approval, 1, id="old", store=store)
        await durable.signal("old", "approve", 1, store=store)
    async with open_store(secret_keys=[KEY_B, KEY_A]) as store:
        # the run written under key A resumes under [B, A]; what it writes now is signed by B
        assert await durable.execute(approval, 1, id="old", store=store) == 3
        old_args = (await store.get_run("old")).args  # type: ignore[union-attr]
        new_result = (await store.get_run("old")).result  # type: ignore[union-attr]
        assert old_args is not None and new_result is not None
        assert old_args[2:6] != new_result[2:6]  # different key ids
    async with open_store(secret_keys=KEY_B) as store:
        # once A is dropped, what only A signed is refused, naming the missing key's id
        with pytest.raises(durable.PayloadDecodeError) as info:
            await durable.get_handle("old", store).history()
        assert "key id" in info.value.reason
        assert await durable.get_handle("old", store).result() == 3


async def test_signed_payloads_are_refused_by_a_store_without_the_key(
    open_store: StoreFactory,
) -> None:
    async with open_store(secret_keys=KEY_A) as store:
        await durable.start(approval, 1, id="s", store=store)
        await durable.signal("s", "approve", 1, store=store)
        await durable.execute(approval, 1, id="s", store=store)
    async with open_store(secret_keys=[]) as store:
        with pytest.raises(durable.PayloadDecodeError) as info:
            await durable.get_handle("s", store).result()
        assert "no secret key" in info.value.reason


async def test_the_key_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURABLE_SECRET_KEY", f"{KEY_B}, {KEY_A}")
    url = f"sqlite:///{tmp_path / 'env.db'}"
    try:
        handle = await durable.start(approval, 1, id="e", store=url)
        await handle.signal("approve", 1)
        assert await durable.execute(approval, 1, id="e", store=url) == 3
        payloads = await all_payloads(durable._stores.resolve_store(url), "e")
        assert payloads and all(p[:1] == SIGNED for p in payloads)
    finally:
        await durable.close_stores()
    async with SQLStore(url, secret_keys=KEY_A) as store:  # A verifies only what A signed
        with pytest.raises(durable.PayloadDecodeError):
            await durable.get_handle("e", store).result()


@pytest.mark.parametrize(
    "keys",
    ["short", b"", [KEY_A, "x"], [KEY_A, 42]],
    ids=["short", "empty", "one short", "not text"],
)
def test_a_bad_key_is_refused_when_the_store_is_made(keys: Any) -> None:
    with pytest.raises(ValueError, match="key"):
        MemoryStore(secret_keys=keys)


def test_a_bad_environment_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLE_SECRET_KEY", "tiny")
    with pytest.raises(ValueError, match="DURABLE_SECRET_KEY"):
        MemoryStore()


# -- codec discipline --------------------------------------------------------------------------


async def test_a_json_workflow_never_unpickles_a_signal(
    open_store: StoreFactory, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    async with open_store() as store:  # no key: the codec alone protects the run
        await durable.start(json_approval, 1, id="j", store=store)
        await store.send_signal("j", "approve", forged(marker), now=time.time())
        with pytest.raises(durable.PayloadDecodeError) as info:
            await durable.execute(json_approval, 1, id="j", store=store)
        assert "own codec" in info.value.reason and "step 2" in str(info.value)
        # a signal sent through the SDK is encoded with the workflow's codec and is accepted
    assert not marker.exists()


async def test_a_json_workflow_never_unpickles_its_arguments_or_result(
    open_store: StoreFactory, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    async with open_store() as store:
        now = time.time()
        planted = _with_workflow_name(
            RunRecord(
                id="ja",
                workflow="",
                status=RunStatus.PENDING,
                args=forged(marker),
                created_at=now,
                updated_at=now,
            ),
            json_approval,
        )
        await store.create_run(planted)
        with pytest.raises(durable.PayloadDecodeError) as info:
            await durable.execute(json_approval, 1, id="ja", store=store)
        assert "arguments" in str(info.value)
        handle = await durable.start(json_approval, 2, id="jb", store=store)
        await handle.signal("approve", 5)
        assert await durable.execute(json_approval, 2, id="jb", store=store) == 8
        payloads = await all_payloads(store, "jb")
        assert all(p[1:2] == JSONCodec.tag for p in payloads)
    assert not marker.exists()


def test_a_pickle_workflow_reads_json_payloads_but_not_the_reverse() -> None:
    as_json = dumps(JSONCodec(), {"a": [1, 2]}, what="x")
    as_pickle = dumps(PickleCodec(), {"a": [1, 2]}, what="x")
    assert Payloads(PickleCodec()).loads(as_json, run_id="r", seq=1, what="result") == {"a": [1, 2]}
    assert Payloads(JSONCodec()).loads(as_json, run_id="r", seq=1, what="result") == {"a": [1, 2]}
    with pytest.raises(durable.PayloadDecodeError, match="own codec"):
        Payloads(JSONCodec()).loads(as_pickle, run_id="r", seq=1, what="result")


async def test_a_json_workflow_reads_its_own_history(open_store: StoreFactory) -> None:
    async with open_store() as store:
        handle = await durable.start(json_approval, 1, id="mix", store=store)
        await handle.signal("approve", 1)
        assert await durable.execute(json_approval, 1, id="mix", store=store) == 3
        assert [s.status for s in await handle.history()] == ["completed", "completed"]


async def test_allowed_codecs_forbids_pickle_for_writing_and_reading(
    open_store: StoreFactory, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    async with open_store() as store:  # a pickle run written before pickle was forbidden
        await durable.start(approval, 1, id="p", store=store)
        await durable.signal("p", "approve", 1, store=store)
        await durable.execute(approval, 1, id="p", store=store)
    async with open_store(allowed_codecs=["json"]) as store:
        with pytest.raises(durable.CodecNotAllowed) as info:
            await durable.start(approval, 1, id="new-pickle", store=store)
        assert "JSONCodec" in str(info.value) and "pickle" in str(info.value)
        assert await store.get_run("new-pickle") is None  # nothing was recorded
        with pytest.raises(durable.PayloadDecodeError) as refused:
            await durable.get_handle("p", store).result()
        assert "allows only json" in refused.value.reason
        # a JSON workflow runs; a pickle signal forged for it is refused, and never runs
        await durable.start(json_approval, 1, id="ok", store=store)
        await store.send_signal("ok", "approve", forged(marker), now=time.time())
        with pytest.raises(durable.PayloadDecodeError):
            await durable.execute(json_approval, 1, id="ok", store=store)
    assert not marker.exists()


def test_allowed_codecs_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLE_ALLOWED_CODECS", "json")
    trust = MemoryStore().payload_trust
    assert trust.allowed_codecs == {"json"} and not trust.allows("pickle")
    with pytest.raises(ValueError, match="allowed_codecs"):
        MemoryStore(allowed_codecs=[])


def test_an_unsigned_store_still_writes_the_checksummed_envelope() -> None:
    assert dumps(PickleCodec(), 1, what="x")[:1] == MAGIC
    assert os.environ.get("DURABLE_SECRET_KEY") is None


async def test_a_signed_history_replays_with_its_key_only() -> None:
    from durable.testing import replay

    async with MemoryStore(secret_keys=KEY_A) as store:
        handle = await durable.start(approval, 1, id="h", store=store)
        await handle.signal("approve", 1)
        await durable.execute(approval, 1, id="h", store=store)
        history = await handle.export_history()
    await replay(approval, history, secret_keys=KEY_A)
    with pytest.raises(durable.PayloadDecodeError, match="no secret key"):
        await replay(approval, history, secret_keys=[])
