"""Logs: a worker writes each run's lifecycle on ``durable.run``, as text or JSON lines that
carry the run id and the workflow; the library itself configures nothing."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import PROGRAMS, Processes, eventually, python, read_log, stop

import durable
from durable import RunStatus
from durable._logging import JSONFormatter, configure_logging
from durable.backends import MemoryStore, SQLStore
from durable.store import LeaseOwner, Store

sys.path.insert(0, str(PROGRAMS))
import logged_app


def _json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a ``--log-format json`` log, parsed: each must be one JSON object."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _events(lines: list[dict[str, Any]], run_id: str) -> list[str]:
    return [line["event"] for line in lines if line.get("run_id") == run_id and "event" in line]


async def _finished(store: Store, *ids: str) -> None:
    async def check() -> bool:
        runs = [await store.get_run(i) for i in ids]
        return all(r is not None and r.status.finished for r in runs)

    await eventually(f"the end of runs {ids}", check)


def test_a_worker_logs_each_runs_lifecycle_as_json(processes: Processes, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    log = tmp_path / "worker.log"
    worker = processes.spawn_worker(
        "logged_app", url, log, "--log-format", "json", "--park-after", "0.05"
    )

    async def start_and_wait() -> None:
        async with SQLStore(url) as store:
            await durable.start(logged_app.naps, 0.3, id="nap-1", store=store)
            await durable.start(logged_app.fails, id="fail-1", store=store)
            await _finished(store, "nap-1", "fail-1")

    try:
        anyio.run(start_and_wait)
    finally:
        assert stop(worker) == 0, read_log(log)
    lines = _json_lines(read_log(log))
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
        datetime.fromisoformat(line["time"])  # ISO 8601
        assert line["time"].endswith("Z")
    assert any("durable worker: ready" in line["message"] for line in lines)

    naps = [line for line in lines if line.get("run_id") == "nap-1"]
    assert _events(lines, "nap-1") == ["claimed", "parked", "claimed", "woken", "completed"]
    for line in naps:
        assert line["logger"] == "durable.run" and line["level"] == "INFO"
        assert line["workflow"] == "logs.naps"
        assert "'nap-1'" in line["message"] and "'logs.naps'" in line["message"]
    parked = next(line for line in naps if line["event"] == "parked")
    assert parked["status"] == "sleeping"
    assert parked["wake_at"] in parked["message"]
    assert datetime.fromisoformat(parked["wake_at"]).tzinfo is not None

    assert _events(lines, "fail-1") == ["claimed", "failed"]
    failed = next(line for line in lines if line.get("event") == "failed")
    assert failed["level"] == "ERROR" and failed["workflow"] == "logs.fails"
    assert "ValueError: the boiler exploded" in failed["message"]
    assert "Traceback" in failed["exc_info"]
    assert "the boiler exploded" in failed["exc_info"]


def test_log_options_are_checked_and_shown_with_their_defaults(tmp_path: Path) -> None:
    shown = python("-m", "durable", "worker", "--help", cwd=tmp_path)
    assert shown.returncode == 0
    help_text = " ".join(shown.stdout.split())
    assert "--log-level" in help_text and "(default: INFO)" in help_text
    assert "--log-format {text,json}" in help_text and "(default: text)" in help_text
    refused = python("-m", "durable", "worker", "app", "--log-format", "xml", cwd=tmp_path)
    assert refused.returncode == 2 and "invalid choice: 'xml'" in refused.stderr


def test_the_log_level_filters_the_worker_log(processes: Processes, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    log = tmp_path / "worker.log"
    # At WARNING, "ready" (INFO) is not written, so the test does not wait for it: the worker
    # executes the run whenever it is up. A failed run (ERROR) is written.
    args = ["-m", "durable", "worker", "logged_app", "--store", url, "--log-level", "warning"]
    worker = processes.spawn(args, log)

    async def run_one() -> None:
        async with SQLStore(url) as store:
            await durable.start(logged_app.fails, id="fail-2", store=store)
            await _finished(store, "fail-2")

    try:
        anyio.run(run_one)
    finally:
        assert stop(worker) == 0, read_log(log)
    text = read_log(log)
    assert "durable worker: ready" not in text
    assert "claimed" not in text
    assert "run 'fail-2' (workflow 'logs.fails') failed: ValueError" in text
    assert "Traceback" in text


def test_importing_durable_configures_no_logging(tmp_path: Path) -> None:
    code = (
        "import logging, durable, durable.backends, durable.testing\n"
        "root = logging.getLogger()\n"
        "assert not root.handlers, root.handlers\n"
        "assert not logging.getLogger('durable').handlers\n"
        "assert root.level == logging.WARNING\n"
    )
    done = python("-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_json_lines_carry_the_run_fields_and_the_traceback() -> None:
    formatter = JSONFormatter()
    try:
        raise KeyError("x")
    except KeyError:
        record = logging.LogRecord(
            "durable.run", logging.ERROR, __file__, 1, "run %r failed", ("r-1",), sys.exc_info()
        )
    record.run_id, record.workflow = "r-1", "wf"
    line = json.loads(formatter.format(record))
    assert line["message"] == "run 'r-1' failed"
    assert (line["run_id"], line["workflow"], line["level"]) == ("r-1", "wf", "ERROR")
    assert line["logger"] == "durable.run"
    assert "KeyError" in line["exc_info"]
    plain = logging.LogRecord("durable.worker", logging.INFO, __file__, 1, "hi", (), None)
    assert "run_id" not in json.loads(formatter.format(plain))


def test_configure_logging_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging("loud", "text")
    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "xml")


# -- in process: cancelled, lease lost -------------------------------------------------------


@durable.workflow(name="logs.waits")
async def waits() -> object:
    return await durable.wait_signal("go")


gate: list[anyio.Event] = []


@durable.activity(name="logs.held")
async def held() -> str:
    gate[0].set()  # the test takes the lease away now
    await anyio.sleep(0.2)  # and the worker notices it at its next write
    return "done"


@durable.workflow(name="logs.holds")
async def holds() -> str:
    return await held()


def _run_lines(caplog: pytest.LogCaptureFixture, run_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "run_id", None) == run_id]


async def test_a_cancelled_run_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="durable")
    store = MemoryStore()
    worker = durable.Worker(store, workflows=[waits], park_after=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        handle = await durable.start(waits, id="w-1", store=store)

        async def parked() -> bool:
            return any(getattr(r, "event", None) == "parked" for r in _run_lines(caplog, "w-1"))

        await eventually("the run parked", parked)
        await handle.cancel()
        await _finished(store, "w-1")

        async def logged() -> bool:
            return any(getattr(r, "event", None) == "cancelled" for r in caplog.records)

        await eventually("the cancel logged", logged)
        worker.stop()
    assert (await handle.status()) == RunStatus.CANCELLED
    records = _run_lines(caplog, "w-1")
    assert [getattr(r, "event", None) for r in records] == [
        "claimed",
        "parked",
        "claimed",
        "woken",
        "cancelled",
    ]
    parked_line = records[1].getMessage()
    assert parked_line == "run 'w-1' (workflow 'logs.waits') parked (waiting) until a signal"
    assert records[-1].levelno == logging.INFO
    assert records[-1].getMessage() == "run 'w-1' (workflow 'logs.waits') cancelled"


async def test_a_lost_lease_is_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="durable")
    store = MemoryStore()
    gate[:] = [anyio.Event()]
    worker = durable.Worker(store, workflows=[holds])
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await durable.start(holds, id="h-1", store=store)
        await gate[0].wait()
        run = await store.get_run("h-1")
        assert run is not None
        thief = LeaseOwner("thief", "elsewhere", 1)
        taken = await store.acquire_lease(
            "h-1", thief, now=run.updated_at, duration=60.0, takeover_token=run.lease_token
        )
        assert taken is not None

        async def logged() -> bool:
            return any(getattr(r, "event", None) == "lease_lost" for r in caplog.records)

        await eventually("the lost lease logged", logged)
        worker.stop()
    lost = next(r for r in _run_lines(caplog, "h-1") if getattr(r, "event", None) == "lease_lost")
    assert lost.levelno == logging.WARNING
    assert lost.name == "durable.run"
    assert lost.getMessage().startswith("run 'h-1' (workflow 'logs.holds') stopped: lease lost")
    assert getattr(lost, "workflow", None) == "logs.holds"


def test_text_format_names_run_and_level(tmp_path: Path) -> None:
    code = (
        "import logging\n"
        "from durable._logging import configure_logging\n"
        "configure_logging('info', 'text')\n"
        "logging.getLogger('durable.run').info('run %r claimed', 'r-9')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "INFO run 'r-9' claimed" in done.stderr
