"""The examples a newcomer runs really do what their docstrings say."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from support import eventually, eventually_sync, python

from durable import RunStatus
from durable.backends import SQLStore

EXAMPLES = Path(__file__).parent.parent / "examples"

pytestmark = pytest.mark.timeout(600)  # processes with timeouts of their own, up to 300 s


def test_quickstart_shows_a_crash_and_a_resume(tmp_path: Path) -> None:
    proc = python(str(EXAMPLES / "quickstart.py"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("reserve_stock(sku-42) runs") == 1  # recorded before the crash
    assert out.count("charge_card(1999) runs") == 2  # in flight at the kill: runs again
    assert out.count("ship(reservation-sku-42) runs") == 1
    assert "killed by SIGKILL" in out and out.count("result: {'payment'") == 2


def test_trip_booking_compensates_and_resumes_after_a_crash(tmp_path: Path) -> None:
    crashed = python(str(EXAMPLES / "trip_booking.py"), "--crash", cwd=tmp_path)
    assert crashed.returncode != 0
    assert "undo: return the car in Rome" in crashed.stdout
    resumed = python(str(EXAMPLES / "trip_booking.py"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "undo: return the car in Rome" not in resumed.stdout  # recorded: not repeated
    assert "undo: cancel flight LH1838" in resumed.stdout
    assert "every booking was undone" in resumed.stdout


def test_approval_waits_for_a_decision_from_another_process(tmp_path: Path) -> None:
    requester = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / "approval.py"),
            "request",
            "exp-1",
            "12.5",
            "--timeout",
            "60",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    async def waiting() -> None:
        async with SQLStore(f"sqlite:///{tmp_path / 'durable.db'}") as store:

            async def waits() -> bool:
                run = await store.get_run("exp-1")
                return run is not None and run.status == RunStatus.WAITING

            await eventually("the request's wait for a decision", waits, within=30)

    try:
        db = tmp_path / "durable.db"
        eventually_sync("the requester's database", db.exists, within=30)
        anyio.run(waiting)
        approve = python(str(EXAMPLES / "approval.py"), "approve", "exp-1", cwd=tmp_path)
        assert approve.returncode == 0, approve.stderr
        out, err = requester.communicate(timeout=60)
    finally:
        if requester.poll() is None:
            requester.kill()
            requester.communicate()
    assert requester.returncode == 0, err
    assert "paid out 12.50 EUR" in out and out.strip().endswith("exp-1: paid")
    again = python(str(EXAMPLES / "approval.py"), "approve", "exp-1", cwd=tmp_path)
    assert again.returncode == 1 and "completed" in again.stderr


def test_the_example_tests_of_the_approval_workflow_pass() -> None:
    proc = python(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "test_approval.py",
        cwd=EXAMPLES,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "8 passed" in proc.stdout


def test_the_agent_survives_a_killed_worker_and_streams_to_another_process(
    tmp_path: Path,
) -> None:
    """The worker is SIGKILLed while the refund waits for approval; a new worker finishes the
    conversation: the model is asked once per request and every tool runs once, and the asker
    (another process) streamed the whole answer across the kill."""
    log = tmp_path / "calls.log"
    env = {**os.environ, "AGENT_EXAMPLE_LOG": str(log), "DURABLE_URL": "sqlite:///durable.db"}
    script = str(EXAMPLES / "agent.py")

    outputs: list[Path] = []

    def start(*args: str) -> subprocess.Popen[str]:
        # Output goes to files, not pipes: a pipe nobody reads yet fills up, and the process
        # writing to it (a worker logging under load) would block where the test waits for it.
        output = tmp_path / f"{len(outputs)}-{args[0]}.out"
        outputs.append(output)
        with open(output, "w") as sink:
            return subprocess.Popen(
                [sys.executable, script, *args],
                cwd=tmp_path,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def said() -> str:
        """What every process started printed (for a failure's message)."""
        return "\n".join(f"--- {path.name}:\n{path.read_text()}" for path in outputs)

    async def waiting() -> None:
        async with SQLStore(f"sqlite:///{tmp_path / 'durable.db'}") as store:

            async def waits() -> bool:
                run = await store.get_run("chat-1")
                return run is not None and run.status == RunStatus.WAITING

            await eventually("the refund's wait for approval", waits, within=60)

    worker = start("worker")
    asker = start("ask", "chat-1", "Order o-7 arrived broken, I want my money back")
    second = None
    try:
        eventually_sync("the database", (tmp_path / "durable.db").exists, within=60)
        anyio.run(waiting)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        second = start("worker")
        approve = subprocess.run(
            [sys.executable, script, "approve", "chat-1"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert approve.returncode == 0, approve.stderr
        asker.wait(timeout=120)
    except BaseException as exc:
        exc.add_note(said())
        raise
    finally:
        for proc in (worker, asker, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    out = outputs[1].read_text()
    assert asker.returncode == 0, said()
    answer = "refund o-7-R1 of 49.90 EUR issued. Thank you for your patience"
    assert "[waiting for a human to approve the refund of o-7]" in out
    assert "[refund approved]" in out and out.count(answer) == 2  # streamed, then the result
    assert log.read_text().splitlines().count("model") == 3  # one per recorded request
    assert log.read_text().splitlines().count("tool lookup_order") == 1
    assert log.read_text().splitlines().count("tool pay_refund") == 1
