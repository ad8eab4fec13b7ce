"""``durable schedules <verb>`` as a shell user runs it: the real command in a subprocess,
against a real SQLite file (and Postgres), with schedules this process stores.

Exit status: 0 on success, 1 for a missing schedule or an unusable store, 2 for bad arguments.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import PROGRAMS, python

import durable
from durable.backends import SQLStore
from durable.store import Store

sys.path.insert(0, str(PROGRAMS))
import sched_app

KEYS = {
    "name",
    "workflow",
    "cron",
    "timezone",
    "catch_up",
    "queue",
    "paused",
    "next_run",
    "last_run",
    "created_at",
    "updated_at",
}


def schedules(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``durable schedules ARGS --store URL``."""
    return python("-m", "durable", "schedules", *args, "--store", url, cwd=PROGRAMS, timeout=60)


def ok_json(url: str, *args: str) -> Any:
    done = schedules(url, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def in_store(url: str, work: Callable[[Store], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with SQLStore(url) as store:
            return await work(store)

    return anyio.run(main)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store holding the schedule ``nightly`` (daily, args ``("n",)``) and ``hourly``."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cli.db'}"
    else:
        url = str(request.getfixturevalue("fresh_postgres_url"))

    async def create(store: Store) -> None:
        await durable.schedule(
            "nightly", sched_app.tick, cron="0 0 * * *", args=("n",), store=store
        )
        await durable.schedule(
            "hourly", sched_app.tick, cron="0 * * * *", timezone="Europe/Paris", store=store
        )

    in_store(url, create)
    return url


def test_list_shows_every_schedule(url: str) -> None:
    listed = ok_json(url, "list")
    assert [s["name"] for s in listed] == ["hourly", "nightly"]
    assert all(set(s) == KEYS for s in listed)
    assert listed[0]["timezone"] == "Europe/Paris" and listed[1]["cron"] == "0 0 * * *"
    assert listed[1]["workflow"] == "sched_app.tick" and listed[1]["paused"] is False
    assert listed[1]["next_run"].endswith("T00:00:00+00:00")
    text = schedules(url, "list")
    assert text.returncode == 0, text.stderr
    header, *rows = text.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "WORKFLOW", "CRON"]
    assert rows[1].startswith("nightly ") and "active" in rows[1]


def test_pause_resume_and_delete(url: str) -> None:
    paused = ok_json(url, "pause", "nightly")
    assert paused["paused"] is True and paused["next_run"] is None
    text = schedules(url, "list")
    assert "paused" in text.stdout.splitlines()[2]
    resumed = schedules(url, "resume", "nightly")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("schedule 'nightly': active (next run ")
    assert ok_json(url, "delete", "nightly") == {"name": "nightly", "deleted": True}
    assert [s["name"] for s in ok_json(url, "list")] == ["hourly"]


def test_trigger_starts_a_run(url: str) -> None:
    done = ok_json(url, "trigger", "nightly")
    assert done["name"] == "nightly" and done["id"].startswith("nightly@trigger-")
    run = in_store(url, lambda store: store.get_run(done["id"]))
    assert run is not None and run.workflow == "sched_app.tick" and run.status == "pending"
    text = schedules(url, "trigger", "nightly")
    assert text.returncode == 0 and "started run 'nightly@trigger-" in text.stdout


@pytest.mark.parametrize("verb", ["pause", "resume", "delete", "trigger"])
def test_a_missing_schedule_exits_1(url: str, verb: str) -> None:
    done = schedules(url, verb, "nope")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"durable schedules {verb}: no schedule 'nope'")


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'none.db'}"
    for args in (["pause"], ["frobnicate"], ["list", "--limit", "3"]):
        done = schedules(url, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr
    in_store(url, lambda store: store.list_schedules())  # create the database
    done = schedules(url, "pause", "a@b")
    assert done.returncode == 2 and "may not contain '@'" in done.stderr


def test_a_store_that_cannot_be_used_exits_1(tmp_path: Path) -> None:
    done = schedules(f"sqlite:///{tmp_path / 'missing.db'}", "list")
    assert done.returncode == 1 and "there is no database at" in done.stderr
    assert ok_empty(tmp_path) == "no schedules"


def ok_empty(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    in_store(url, lambda store: store.list_schedules())
    done = schedules(url, "list")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
