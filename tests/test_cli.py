"""The command line says what is wrong in one line and exits 2 (bad arguments, a bad URL, a
module without workflows); ``--debug`` shows the traceback instead."""

from __future__ import annotations

import time
from pathlib import Path

from support import durable_cli


def _problems(stderr: str) -> list[str]:
    """The stderr lines that are not the worker's INFO log lines."""
    return [line for line in stderr.splitlines() if line.startswith("durable ")]


def test_a_module_without_workflows_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """`durable worker` on a module that defines no workflow says so in one line."""
    (tmp_path / "empty_app.py").write_text("X = 1\n")
    done = durable_cli(tmp_path, "worker", "empty_app", "--store", f"sqlite:///{tmp_path}/w.db")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    (line,) = _problems(done.stderr)
    assert "empty_app" in line and "no @durable.workflow" in line


def test_a_bad_store_url_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A URL durable cannot use: one line naming it, for the worker and for `db init`."""
    (tmp_path / "one_app.py").write_text(
        "import durable\n\n@durable.workflow(name='cli.one')\nasync def one() -> int:\n"
        "    return 1\n"
    )
    done = durable_cli(tmp_path, "worker", "one_app", "--store", "mysql://nowhere/db")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = _problems(done.stderr)
    assert "mysql://nowhere/db" in line and "unknown scheme" in line
    done = durable_cli(tmp_path, "db", "init", "mysql://nowhere/db")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "mysql://nowhere/db" in done.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    """With --debug the same mistake shows where it was raised."""
    (tmp_path / "empty_app.py").write_text("X = 1\n")
    done = durable_cli(tmp_path, "--debug", "worker", "empty_app")
    assert done.returncode != 0 and "Traceback" in done.stderr
    assert "no @durable.workflow" in done.stderr


def test_a_worker_whose_database_refuses_fails_at_once_or_waits_when_asked(
    tmp_path: Path,
) -> None:
    """No server at the URL: one line naming host and port, at once; ``--wait-for-db`` makes
    the worker retry for that long first (and the line says so)."""
    (tmp_path / "one_app.py").write_text(
        "import durable\n\n@durable.workflow(name='cli.one')\nasync def one() -> int:\n"
        "    return 1\n"
    )
    url = "postgresql://postgres@127.0.0.1:1/test"
    started = time.monotonic()
    done = durable_cli(tmp_path, "worker", "one_app", "--store", url)
    assert time.monotonic() - started < 15
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = _problems(done.stderr)
    assert "'127.0.0.1', port 1" in line and "--wait-for-db" in line

    started = time.monotonic()
    done = durable_cli(tmp_path, "worker", "one_app", "--store", url, "--wait-for-db", "1.5")
    assert 0.5 < time.monotonic() - started < 15
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "waited 1.5 s" in done.stderr and "retrying" in done.stderr
