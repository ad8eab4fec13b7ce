"""One seeded random sequence of store operations, applied to `MemoryStore` and to `SQLStore`
(SQLite, and Postgres when it answers) with the same inputs: every result (or the type of the
error raised) and every run's record and steps must be equal after every operation.

`MemoryStore` is the pure rules of ``backends/_rules.py``; the SQL store spells the same rules
as statements. This test is what keeps the two spellings in step. A failure names the seed, the
operation's number and the operations that led to it, so it replays exactly.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from durable import DurableError
from durable.backends import MemoryStore, SQLStore
from durable.store import (
    Lease,
    LeaseOwner,
    QueueSettings,
    RunRecord,
    RunStatus,
    RunUpdate,
    StepKind,
    StepRecord,
    StepStatus,
    Store,
)

SEEDS = [1, 2, 3, 4]
OPERATIONS = 300

WORKFLOWS = ["wf.a", "wf.b"]
QUEUES = ["qa", "qb"]
RUN_IDS = ["r1", "r2", "r3", "c1", "c2"]
PARENTS = {"c1": "r1", "c2": "c1"}  # children (and a grandchild), for prune's ancestor rule
OWNERS = [
    LeaseOwner("owner-a", "host-a", 1),
    LeaseOwner("owner-b", "host-a", 2),
    LeaseOwner("owner-c", "host-c", 3),
]


@pytest.fixture
def anyio_backend() -> str:
    """One event loop is enough: what varies is the sequence, not the loop."""
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
async def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'differential.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    async with SQLStore(url) as store:
        yield store


@dataclass
class _Operation:
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __str__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.method}({', '.join(parts)})"


@dataclass
class _Scenario:
    """Draws operations from a seeded generator; remembers every lease handed out (stale ones
    too: they must be refused alike)."""

    rng: random.Random
    now: float = 100.0
    leases: list[Lease] = field(default_factory=list)

    def tick(self) -> float:
        self.now += self.rng.choice([0.0, 0.0, 0.5, 1.0, 5.0, 20.0, 40.0])
        return self.now

    def run_id(self) -> str:
        return self.rng.choice([*RUN_IDS, "ghost"])  # "ghost" is never created

    def lease(self) -> Lease:
        if self.leases and self.rng.random() < 0.9:
            # the newest leases most often: they are the ones that may still write
            return self.rng.choice(self.leases[-4:] if self.rng.random() < 0.7 else self.leases)
        run_id = self.run_id()
        return Lease(run_id, self.rng.choice(OWNERS), self.rng.randint(0, 4), self.now + 30.0)

    def step(self, run_id: str, *, kind: StepKind | None = None) -> StepRecord:
        rng = self.rng
        return StepRecord(
            run_id=run_id,
            seq=rng.randint(1, 6),
            kind=kind or rng.choice(list(StepKind)),
            name=rng.choice(["app.charge", "app.ship", "sleep"]),
            status=rng.choice(list(StepStatus)),
            attempts=rng.randint(1, 3),
            started_at=self.now,
            finished_at=self.now + 0.5,
            result=rng.choice([None, b"ok", b"\x00\xff"]),
            error=rng.choice([None, None, b"boom"]),
            location=rng.choice([None, "app.py:12"]),
        )

    def update(self) -> RunUpdate:
        rng = self.rng
        return RunUpdate(
            status=rng.choice(list(RunStatus)),
            result=rng.choice([None, None, b"result"]),
            error=rng.choice([None, None, b"error"]),
            error_text=rng.choice([None, "why"]),
            release=rng.random() < 0.5,
            cancelled_seq=rng.choice([None, None, rng.randint(1, 6)]),
            wake_at=rng.choice([None, self.now + rng.choice([0.0, 5.0, 60.0])]),
        )

    def create(self) -> _Operation:
        rng = self.rng
        run_id = rng.choice(RUN_IDS)
        status = rng.choice(
            [RunStatus.PENDING] * 6 + [RunStatus.SLEEPING, RunStatus.WAITING, RunStatus.COMPLETED]
        )
        parked = status in (RunStatus.SLEEPING, RunStatus.WAITING)
        queue = rng.choice([None, None, *QUEUES])
        run = RunRecord(
            id=run_id,
            workflow=rng.choice(WORKFLOWS),
            status=status,
            args=b"args",
            created_at=self.now,
            updated_at=self.now,
            parent_id=PARENTS.get(run_id),
            wake_at=self.now + rng.choice([0.0, 10.0]) if parked else None,
            queue=queue,
            queue_key=rng.choice([None, "k1", "k2"]) if queue else None,
            priority=rng.choice([0, 0, 1, -1]) if queue else 0,
        )
        return _Operation("create_run", (run,), {})

    def queues(self) -> list[str] | None:
        return self.rng.choice([None, None, QUEUES[:1], QUEUES, []])

    def put_queue(self) -> _Operation:
        rng = self.rng
        count, period = rng.choice([(None, None), (1, 10.0), (2, 30.0)])
        settings = QueueSettings(
            rng.choice(QUEUES),
            concurrency=rng.choice([None, 1, 2]),
            per_key_concurrency=rng.choice([None, 1]),
            rate_count=count,
            rate_period=period,
            updated_at=self.now,
        )
        return _Operation("put_queue", (settings,), {})

    def next(self) -> _Operation:
        rng = self.rng
        now = self.tick()
        kind = rng.choices(
            [
                "create",
                "acquire",
                "claim",
                "renew",
                "release",
                "commit",
                "send_signal",
                "receive_signal",
                "request",
                "wake",
                "prune",
                "read",
                "put_queue",
                "continue",
            ],
            weights=[6, 6, 5, 3, 3, 10, 4, 3, 4, 2, 2, 2, 1, 2],
        )[0]
        if kind == "create":
            return self.create()
        if kind == "put_queue":
            return self.put_queue()
        if kind == "acquire":
            token = rng.choice([None, None, None, rng.randint(0, 4)])
            return _Operation(
                "acquire_lease",
                (self.run_id(), rng.choice(OWNERS)),
                {"now": now, "duration": rng.choice([5.0, 30.0]), "takeover_token": token},
            )
        if kind == "claim":
            workflows = rng.choice([WORKFLOWS, WORKFLOWS[:1], WORKFLOWS[1:], []])
            return _Operation(
                "claim",
                (rng.choice(OWNERS),),
                {
                    "now": now,
                    "duration": rng.choice([5.0, 30.0]),
                    "limit": rng.randint(0, 3),
                    "workflows": workflows,
                    "queues": self.queues(),
                },
            )
        if kind == "renew":
            duration = rng.choice([5.0, 30.0])
            return _Operation("renew_lease", (self.lease(),), {"now": now, "duration": duration})
        if kind == "release":
            return _Operation("release_lease", (self.lease(),), {})
        if kind == "commit":
            lease = self.lease()

            def owner_run() -> str:
                return lease.run_id if rng.random() < 0.95 else self.run_id()

            steps = [self.step(owner_run()) for _ in range(rng.choice([0, 1, 1, 2]))]
            outcomes = [self.step(owner_run()) for _ in range(rng.choice([0, 0, 1]))]
            return _Operation(
                "commit",
                (lease, steps, self.update() if rng.random() < 0.5 else None),
                {
                    "now": now,
                    "outcomes": outcomes,
                    "check_requests": rng.random() < 0.4,
                    "relaxed": rng.random() < 0.2,
                },
            )
        if kind == "send_signal":
            return _Operation(
                "send_signal",
                (self.run_id(), rng.choice(["go", "stop"]), rng.choice([b"1", b"2"])),
                {"now": now, "idempotency_key": rng.choice([None, None, "k1", "k2"])},
            )
        if kind == "receive_signal":
            lease = self.lease()
            step = self.step(lease.run_id, kind=StepKind.SIGNAL)
            return _Operation(
                "receive_signal", (lease, rng.choice(["go", "stop"]), step), {"now": now}
            )
        if kind == "request":
            method = rng.choice(["request_cancel", "request_pause", "resume", "request_rollback"])
            return _Operation(method, (self.run_id(),), {"now": now})
        if kind == "wake":
            return _Operation("wake", (self.run_id(),), {"now": now})
        if kind == "continue":
            args = rng.choice([b"args-2", b"args-3"])
            return _Operation("continue_run", (self.lease(), args), {"now": now})
        if kind == "prune":
            before = now - rng.choice([-1.0, 0.0, 10.0, 100.0])
            return _Operation("prune", (), {"before": before, "limit": rng.randint(0, 3)})
        reads = [
            _Operation("list_runs", (), {"status": rng.choice([None, *RunStatus]), "limit": 3}),
            _Operation("leased_on", (rng.choice(["host-a", "host-c"]),), {"workflows": WORKFLOWS}),
            _Operation("block_unreadable", (), {"now": now}),
            _Operation(
                "next_due", (), {"workflows": WORKFLOWS, "now": now, "queues": self.queues()}
            ),
            _Operation("list_queues", (), {}),
        ]
        return rng.choice(reads)

    def learn(self, result: Any) -> None:
        """Keep the leases a call handed out."""
        if isinstance(result, Lease):
            self.leases.append(result)
        elif isinstance(result, list):
            self.leases.extend(item[1] for item in result if isinstance(item, tuple))


def _normalised(method: str, result: Any) -> Any:
    if method == "leased_on":  # the contract does not order them
        return sorted(result, key=lambda run: run.id)
    return result


async def _apply(store: Store, op: _Operation) -> tuple[str, Any]:
    try:
        result = await getattr(store, op.method)(*op.args, **op.kwargs)
    except DurableError as exc:  # LeaseLost, StoreError...
        return "raised", type(exc).__name__
    return "returned", _normalised(op.method, result)


async def _state(store: Store) -> dict[str, Any]:
    state: dict[str, Any] = {
        "list_runs": await store.list_runs(limit=100),
        "list_queues": await store.list_queues(),
    }
    for run_id in RUN_IDS:
        state[run_id] = (await store.get_run(run_id), await store.load_steps(run_id))
    return state


def _difference(expected: dict[str, Any], got: dict[str, Any]) -> str:
    lines = []
    for key in expected:
        if expected[key] != got[key]:
            lines.append(f"  {key}:\n    memory: {expected[key]!r}\n    sql:    {got[key]!r}")
    return "\n".join(lines)


async def _compare(seed: int, sql: SQLStore, *, sink: Callable[[str], None] | None = None) -> None:
    scenario = _Scenario(random.Random(seed))
    history: list[str] = []
    async with MemoryStore() as memory:
        for number in range(1, OPERATIONS + 1):
            op = scenario.next()
            history.append(f"{number:4}  {op}")
            expected = await _apply(memory, op)
            got = await _apply(sql, op)
            where = (
                f"seed {seed}, operation {number} of {sql!r}; the last operations:\n"
                + "\n".join(history[-12:])
            )
            assert got == expected, f"{where}\n  memory: {expected!r}\n  sql:    {got!r}"
            if expected[0] == "returned":
                scenario.learn(expected[1])
            before, after = await _state(memory), await _state(sql)
            assert before == after, f"{where}\nthe stores differ after it:\n" + _difference(
                before, after
            )
            if sink is not None:
                sink(op.method)


@pytest.mark.parametrize("seed", SEEDS)
async def test_memory_and_sql_stores_agree_on_a_random_sequence(
    sql_store: SQLStore, seed: int
) -> None:
    seen: set[str] = set()
    await _compare(seed, sql_store, sink=seen.add)
    # the sequence reached every kind of operation
    expected = {"commit", "claim", "receive_signal", "prune", "request_pause", "put_queue"}
    assert expected | {"continue_run"} <= seen
