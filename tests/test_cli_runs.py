"""``durable runs <verb>``, ``durable --version`` and ``durable ui`` as a shell user runs them:
the real command in a subprocess, against a real SQLite file (and Postgres), with runs that
this process starts and a ``durable worker`` process executes.

Exit status: 0 on success, 1 for a missing run, a refused action or an unusable store, 2 for
bad arguments.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import PROGRAMS, Processes, durable_cli, eventually_sync, python

import durable
from durable.backends import SQLStore
from durable.store import Store

sys.path.insert(0, str(PROGRAMS))
import cli_app  # the workflows the worker process runs too

LIST_KEYS = {"id", "workflow", "status", "created_at", "updated_at"}
STEP_KEYS = {"seq", "kind", "name", "status", "attempts", "started_at", "finished_at"}


# -- helpers -----------------------------------------------------------------------------------


def runs(
    url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``durable runs ARGS --store URL``."""
    argv = ["-m", "durable", "runs", *args, "--store", url]
    return python(*argv, cwd=PROGRAMS, timeout=60, env=env)


def runs_json(url: str, *args: str) -> Any:
    """``durable runs ARGS --store URL --json``, parsed; it must succeed."""
    done = runs(url, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def refused(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 1 with one line on stderr holding ``words``, and no traceback; the line."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    for word in words:
        assert word in line, line
    return line


def bad_arguments(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


def in_store(url: str, work: Callable[[Store], Awaitable[Any]]) -> Any:
    """Run ``work(store)`` in this process, on the store at ``url``."""

    async def main() -> Any:
        async with SQLStore(url) as store:
            return await work(store)

    return anyio.run(main)


def status_of(url: str, run_id: str) -> str:
    return str(in_store(url, lambda store: durable.get_handle(run_id, store=store).status()))


def wait_status(url: str, run_id: str, status: str) -> None:
    eventually_sync(f"run {run_id} {status}", lambda: status_of(url, run_id) == status, every=0.05)


def result_of(url: str, run_id: str) -> Any:
    return in_store(url, lambda store: durable.get_handle(run_id, store=store).result(60))


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


async def _seed(store: Store) -> None:
    """o-1 pending (nobody runs it), t-1 completed, f-1 failed at its second step."""
    await durable.start(cli_app.approve_json, "order-1", id="o-1", store=store)
    await durable.execute(cli_app.three, 1, id="t-1", store=store)
    with pytest.raises(KeyError):
        await durable.execute(cli_app.flaky, 1, id="f-1", store=store)


def worker(processes: Processes, url: str, tmp_path: Path, **env: str) -> None:
    environ = {**os.environ, **env}
    processes.spawn_worker(
        "cli_app", url, tmp_path / "worker.log", "--park-after", "0.1", env=environ
    )


# -- list and show -----------------------------------------------------------------------------


def test_list_is_a_table_newest_first_with_filters(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    in_store(url, _seed)
    done = runs(url, "list")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["ID", "WORKFLOW", "STATUS", "CREATED", "(UTC)", "UPDATED", "(UTC)"]
    assert [row.split()[:3] for row in rows] == [
        ["f-1", "cli.flaky", "failed"],
        ["t-1", "cli.three", "completed"],
        ["o-1", "cli.approve_json", "pending"],
    ]
    # aligned in columns: every row's status starts where the header's does
    at = header.index("STATUS")
    assert all(row[at:].split()[0] in ("failed", "completed", "pending") for row in rows)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert all(today in row for row in rows)

    def ids(*args: str) -> list[str]:
        return [run["id"] for run in runs_json(url, "list", *args)]

    assert ids("--status", "failed", "completed") == ["f-1", "t-1"]
    assert ids("--status", "failed", "--status", "pending") == ["f-1", "o-1"]
    assert ids("--workflow", "cli.three", "cli.approve_json") == ["t-1", "o-1"]
    assert ids("--prefix", "t-") == ["t-1"]
    assert ids("--status", "paused") == []
    assert runs(url, "list", "--status", "paused").stdout.strip() == "no runs"

    first = runs(url, "list", "--limit", "2")
    assert len(first.stdout.splitlines()) == 3
    cursor = first.stderr.split("--cursor ")[1].split()[0]
    assert ids("--limit", "2", "--cursor", cursor) == ["o-1"]


def test_list_json_shape(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    in_store(url, _seed)
    listed = runs_json(url, "list")
    assert isinstance(listed, list) and len(listed) == 3
    for run in listed:
        assert LIST_KEYS <= run.keys()
        created = datetime.fromisoformat(run["created_at"])
        assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0
        assert datetime.fromisoformat(run["updated_at"]) >= created
    failed = listed[0]
    assert (failed["id"], failed["workflow"], failed["status"]) == ("f-1", "cli.flaky", "failed")
    assert "KeyError" in failed["error"] and "Traceback" in failed["error"]


def test_show_text_has_outcome_error_and_timeline(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    in_store(url, _seed)
    done = runs(url, "show", "t-1")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "status     completed" in text and "result     4" in text
    assert "arguments  (1)" in text
    timeline = text.split("steps:\n")[1].splitlines()
    assert timeline[0].split() == [
        "SEQ", "KIND", "NAME", "STATUS", "ATTEMPTS", "STARTED", "(UTC)", "DURATION",
    ]  # fmt: skip
    assert [line.split()[:5] for line in timeline[1:]] == [
        [str(seq), "activity", "cli.add", "completed", "1"] for seq in (1, 2, 3)
    ]

    failed = runs(url, "show", "f-1").stdout
    assert "status     failed" in failed
    assert "error:" in failed and "Traceback" in failed and "KeyError: 'missing 1'" in failed
    step_2 = failed.split("steps:\n")[1].splitlines()[2].split()
    assert step_2[:5] == ["2", "activity", "cli.check", "failed", "2"]


def test_show_json_shape(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    in_store(url, _seed)
    shown = runs_json(url, "show", "f-1")
    assert LIST_KEYS | {"steps", "args", "result", "error"} <= shown.keys()
    assert (shown["id"], shown["status"], shown["args"]) == ("f-1", "failed", "(1)")
    assert "KeyError" in shown["error"]
    steps = shown["steps"]
    assert [s["seq"] for s in steps] == [1, 2]
    for step in steps:
        assert STEP_KEYS <= step.keys()
        assert step["kind"] == "activity"
        assert datetime.fromisoformat(step["finished_at"]) >= datetime.fromisoformat(
            step["started_at"]
        )
    assert [(s["name"], s["status"], s["attempts"]) for s in steps] == [
        ("cli.add", "completed", 1),
        ("cli.check", "failed", 2),
    ]
    done = runs_json(url, "show", "t-1")
    assert done["result"] == "4" and done["error"] is None


def test_a_missing_run_is_exit_1_naming_it(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    in_store(url, _seed)
    for verb in ("show", "cancel", "export"):
        refused(runs(url, verb, "nope"), "'nope'", "durable runs list")
    refused(runs(url, "signal", "nope", "go"), "'nope'")


def test_bad_arguments_are_exit_2(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    in_store(url, _seed)
    bad_arguments(runs(url, "list", "--status", "done"), "unknown status 'done'", "completed")
    bad_arguments(runs(url, "list", "--limit", "0"), "--limit")
    bad_arguments(runs(url, "list", "--cursor", "garbage"), "cursor")
    bad_arguments(runs(url, "signal", "o-1", "approve", "--payload", "{yes"), "not JSON")
    bad_arguments(runs(url, "fork", "t-1", "--from-step", "0"), "numbered from 1")
    bad_arguments(runs(url, "fork", "t-1"), "--from-step")
    bad_arguments(durable_cli(tmp_path, "runs"))
    bad_arguments(durable_cli(tmp_path, "runs", "frobnicate"))


# -- signal, cancel, pause, resume with a worker -----------------------------------------------


@pytest.mark.timeout(180)
def test_a_json_payload_reaches_waiting_runs_of_both_codecs(
    tmp_path: Path, processes: Processes
) -> None:
    url = sqlite_url(tmp_path)

    async def start(store: Store) -> None:
        await durable.start(cli_app.approve_json, "A", id="j-1", store=store)
        await durable.start(cli_app.approve_pickle, "B", id="p-1", store=store)

    in_store(url, start)
    worker(processes, url, tmp_path)
    wait_status(url, "j-1", "waiting")
    wait_status(url, "p-1", "waiting")
    payload = {"ok": True, "by": "ops", "n": [1, 2.5, None]}
    done = runs(url, "signal", "j-1", "approve", "--payload", json.dumps(payload))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "run 'j-1': signal 'approve' sent"
    assert runs_json(url, "signal", "p-1", "approve", "--payload", '"yes"') == {
        "id": "p-1",
        "signal": "approve",
    }
    assert result_of(url, "j-1") == {"order": "A", "total": 3, "payload": payload}
    assert result_of(url, "p-1") == {"order": "B", "total": 3, "payload": "yes"}
    # a finished run waits for nothing: refused, and nothing is recorded
    refused(runs(url, "signal", "j-1", "approve"), "'j-1'", "completed")


@pytest.mark.timeout(180)
def test_cancel_pause_and_resume_waiting_runs(tmp_path: Path, processes: Processes) -> None:
    url = sqlite_url(tmp_path)

    async def start(store: Store) -> None:
        await durable.start(cli_app.approve_json, "C", id="c-1", store=store)
        await durable.start(cli_app.approve_json, "P", id="w-1", store=store)

    in_store(url, start)
    worker(processes, url, tmp_path)
    wait_status(url, "c-1", "waiting")
    wait_status(url, "w-1", "waiting")

    done = runs(url, "cancel", "c-1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("run 'c-1': ")
    wait_status(url, "c-1", "cancelled")
    refused(runs(url, "cancel", "c-1"), "'c-1'", "cancelled already")
    assert "Cancelled" in runs_json(url, "show", "c-1")["error"]

    assert runs_json(url, "pause", "w-1") == {"id": "w-1", "status": "paused"}
    assert runs(url, "signal", "w-1", "approve", "--payload", "7").returncode == 0
    assert status_of(url, "w-1") == "paused"  # a paused run is not taken up, signal or not
    done = runs(url, "resume", "w-1")
    assert done.returncode == 0, done.stderr
    assert "resumed" in done.stdout
    assert result_of(url, "w-1") == {"order": "P", "total": 3, "payload": 7}
    refused(runs(url, "pause", "w-1"), "completed already")


# -- retry, fork, delete -----------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_retry_a_failed_run_once_the_bug_is_fixed(tmp_path: Path, processes: Processes) -> None:
    url = sqlite_url(tmp_path)
    in_store(url, _seed)
    refused(runs(url, "retry", "t-1"), "'t-1'")  # completed: nothing to retry
    refused(runs(url, "retry", "nope"), "'nope'")
    done = runs(url, "retry", "f-1")
    assert done.returncode == 0, done.stderr
    assert "'f-1'" in done.stdout
    assert runs_json(url, "show", "f-1")["status"] == "pending"
    worker(processes, url, tmp_path, CLI_APP_FIXED="1")
    assert result_of(url, "f-1") == 2 + 10
    steps = runs_json(url, "show", "f-1")["steps"]
    assert [(s["name"], s["status"]) for s in steps] == [
        ("cli.add", "completed"),
        ("cli.check", "completed"),
    ]


@pytest.mark.timeout(180)
def test_fork_from_a_step_and_delete(tmp_path: Path, processes: Processes) -> None:
    url = sqlite_url(tmp_path)
    in_store(url, _seed)
    done = runs(url, "fork", "t-1", "--from-step", "2", "--id", "t-1-again")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "t-1-again"
    forked = runs_json(url, "fork", "t-1", "--from-step", "3")
    assert forked["id"] not in ("t-1", "t-1-again")
    refused(runs(url, "fork", "nope", "--from-step", "1"), "'nope'")
    worker(processes, url, tmp_path)
    assert result_of(url, "t-1-again") == 4
    assert result_of(url, forked["id"]) == 4
    steps = runs_json(url, "show", "t-1-again")["steps"]
    assert [s["seq"] for s in steps] == [1, 2, 3]

    refused(runs(url, "delete", "o-1"), "'o-1'")  # unfinished (waiting for its signal)
    assert runs_json(url, "delete", "t-1-again") == {"id": "t-1-again", "deleted": True}
    assert runs(url, "delete", "t-1").stdout.strip() == "run 't-1': deleted"
    refused(runs(url, "show", "t-1"), "'t-1'")
    refused(runs(url, "delete", "t-1"), "'t-1'")
    assert [run["id"] for run in runs_json(url, "list")] == [forked["id"], "f-1", "o-1"]


# -- export ------------------------------------------------------------------------------------


def test_export_prints_the_history_replay_takes(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    in_store(url, _seed)
    done = runs(url, "export", "t-1")
    assert done.returncode == 0, done.stderr
    history = json.loads(done.stdout)
    assert history["format"] == "durable-history/1" and history["run"]["id"] == "t-1"
    anyio.run(durable.testing.replay, cli_app.three, done.stdout)

    out = tmp_path / "t-1.json"
    written = runs(url, "export", "t-1", "--output", str(out))
    assert written.returncode == 0, written.stderr
    assert str(out) in written.stdout
    assert json.loads(out.read_text()) == history
    refused(runs(url, "export", "t-1", "-o", str(tmp_path / "no" / "such" / "dir.json")), "dir")


# -- the store ---------------------------------------------------------------------------------


def test_the_store_comes_from_durable_url_else_the_default(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    in_store(url, _seed)
    env = {**os.environ, "DURABLE_URL": url}
    listed = python("-m", "durable", "runs", "list", "--json", cwd=tmp_path, env=env)
    assert [run["id"] for run in json.loads(listed.stdout)] == ["f-1", "t-1", "o-1"]
    # no DURABLE_URL: ./durable.db, which is not there, and is not created by looking
    env.pop("DURABLE_URL")
    missing = python("-m", "durable", "runs", "list", cwd=tmp_path, env=env)
    refused(missing, "durable.db", "--store")
    assert not (tmp_path / "durable.db").exists()


def test_an_unusable_store_is_one_line_and_exit_1(tmp_path: Path) -> None:
    refused(runs(f"sqlite:///{tmp_path / 'typo.db'}", "list"), "typo.db", "no database")
    refused(runs("mysql://nowhere/db", "list"), "mysql://nowhere/db", "unknown scheme")
    refused(runs("memory://x", "list"), "in-memory store")
    line = refused(runs("postgresql://postgres:s3cret@127.0.0.1:1/test", "show", "x"))
    assert "127.0.0.1" in line and "s3cret" not in line
    debug = python(
        "-m", "durable", "--debug", "runs", "list", "--store", "mysql://nowhere/db", cwd=tmp_path
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_postgres(fresh_postgres_url: str) -> None:
    """The same verbs on Postgres: list, show, signal a pending run, cancel one."""
    url = fresh_postgres_url

    async def start(store: Store) -> None:
        await durable.start(cli_app.approve_pickle, "PG", id="pg-1", store=store)
        await durable.start(cli_app.approve_json, "PG", id="pg-2", store=store)

    in_store(url, start)
    assert [run["id"] for run in runs_json(url, "list")] == ["pg-2", "pg-1"]
    assert runs_json(url, "show", "pg-1")["status"] == "pending"
    assert runs(url, "signal", "pg-1", "approve", "--payload", "[1, 2]").returncode == 0
    assert runs_json(url, "cancel", "pg-2")["id"] == "pg-2"

    async def finish(store: Store) -> Any:
        return await durable.execute(cli_app.approve_pickle, "PG", id="pg-1", store=store)

    assert in_store(url, finish) == {"order": "PG", "total": 3, "payload": [1, 2]}
    shown = runs_json(url, "show", "pg-1")
    assert shown["status"] == "completed" and len(shown["steps"]) == 2


# -- --version, help, ui -----------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    done = durable_cli(tmp_path, "--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"durable {importlib.metadata.version('durable-sdk')}"


def test_help_shows_the_defaults(tmp_path: Path) -> None:
    listing = durable_cli(tmp_path, "runs", "list", "--help").stdout
    assert "(default: 20)" in listing and "$DURABLE_URL" in listing
    assert "sqlite:///durable.db" in listing
    ui = durable_cli(tmp_path, "ui", "--help").stdout
    assert "127.0.0.1" in ui and "8765" in ui
    verbs = durable_cli(tmp_path, "runs", "--help").stdout
    for verb in ("list", "show", "cancel", "pause", "resume", "retry", "fork", "delete"):
        assert verb in verbs
    assert "signal" in verbs and "export" in verbs


def test_ui_without_the_extra_names_it(tmp_path: Path) -> None:
    """Without starlette and uvicorn (shadowed here by modules that fail to import), ``durable
    ui`` says which extra to install: one line, exit 1."""
    url = sqlite_url(tmp_path)
    in_store(url, _seed)
    missing = tmp_path / "missing"
    for name in ("starlette", "uvicorn"):
        (missing / name).mkdir(parents=True)
        (missing / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError('No module named {name}', name={name!r})\n"
        )
    env = {**os.environ, "PYTHONPATH": str(missing)}
    done = python("-m", "durable", "ui", "--store", url, "--port", "0", cwd=tmp_path, env=env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "durable-sdk[ui]" in done.stderr and "Traceback" not in done.stderr
    bad_arguments(durable_cli(tmp_path, "ui", "--port", "70000"), "65535")
