"""The web view in a real headless browser: Debian's chromium driven by Playwright, against the
view served by ``durable ui`` (the command) in its own process and a worker process, on one SQLite
file. Skipped when chromium or Playwright is missing, except under CI (``CI`` set), where that
is a failure: .ci/run installs chromium."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import anyio
import pytest
from support import PROGRAMS, Processes, eventually_sync, read_log, stop, wait_for_log

import durable

sys.path.insert(0, str(PROGRAMS))
import worker_app

T = TypeVar("T")
CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 60_000
"""How long a browser-side wait may hang before the test fails (never a speed bound)."""


def _browser_problem(chromium: str = CHROMIUM) -> str | None:
    if not os.path.exists(chromium):
        return f"no chromium at {chromium} (Debian: apt-get install chromium)"
    for module, extra in (("playwright", "test"), ("starlette", "ui"), ("uvicorn", "ui")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (the {extra} extra)"
    return None


def _require_browser(chromium: str = CHROMIUM) -> None:
    """Return when the browser test can run; skip it when it cannot, but fail under CI."""
    problem = _browser_problem(chromium)
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the browser test cannot run: {problem}; CI must run it")
    pytest.skip(f"the browser test needs a browser: {problem}")


@pytest.fixture
def browser_ready() -> None:
    _require_browser()


def test_a_missing_browser_skips_but_fails_under_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = str(tmp_path / "no-chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        _require_browser(missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run it"):
        _require_browser(missing)


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.close()


def _in_thread(call: Callable[[], Awaitable[T]]) -> T:
    """``anyio.run(call)`` in a thread of its own: Playwright's sync API keeps an event loop
    running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, call).result()


def _status(run_id: str, url: str) -> durable.RunStatus:
    return _in_thread(durable.get_handle(run_id, store=url).status)


def _start_waiting(run_id: str, url: str) -> None:
    async def start() -> None:
        await durable.start(worker_app.waits_for_items, 1, id=run_id, store=url)

    _in_thread(start)


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("browser_ready")
def test_list_timeline_and_cancel_in_a_browser(tmp_path: Path, processes: Processes) -> None:
    from playwright.sync_api import expect, sync_playwright

    url = f"sqlite:///{tmp_path / 'ui.db'}"
    waiting = "orders/browser-1"  # a '/' as child ids have
    _start_waiting(waiting, url)
    env = {**os.environ, "SIDE_FILE": str(tmp_path / "side.txt")}
    worker_log = tmp_path / "worker.log"
    worker = processes.spawn_worker("worker_app", url, worker_log, "--park-after", "0.2", env=env)
    eventually_sync(
        "the run parks in wait_signal",
        lambda: _status(waiting, url) == durable.RunStatus.WAITING,
    )

    ui_log = tmp_path / "ui.log"
    server = processes.spawn(["-m", "durable", "ui", "--store", url, "--port", "0"], ui_log, env)
    wait_for_log(server, ui_log, "Uvicorn running on")
    found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", read_log(ui_log))
    assert found is not None, read_log(ui_log)
    base = f"http://127.0.0.1:{found.group(1)}"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(base + "/")
            rows = page.locator("#runs tbody tr")
            expect(rows.filter(has_text=waiting)).to_have_count(1, timeout=WAIT_MS)

            # The list refreshes itself: a run started now appears without a reload.
            _start_waiting("browser-late", url)
            expect(rows.filter(has_text="browser-late")).to_have_count(1, timeout=WAIT_MS)

            page.get_by_role("link", name=waiting, exact=True).click()
            page.wait_for_url(re.compile(r"/run\?id="), timeout=WAIT_MS)
            expect(page.locator("h1 .run-id")).to_have_text(waiting)
            signal_row = page.locator('#timeline .tl-row[data-kind="signal"]')
            expect(signal_row).to_have_count(1)
            expect(signal_row.locator(".tl-bar.open")).to_have_count(1)  # still waiting
            expect(page.locator("#live-head h1 .status")).to_have_text("waiting")

            page.locator('button[data-action="cancel"]').click()
            expect(page.locator("#action-result.ok")).to_contain_text(
                "cancel requested", timeout=WAIT_MS
            )
            eventually_sync(
                "the worker ends the run cancelled",
                lambda: _status(waiting, url) == durable.RunStatus.CANCELLED,
            )
            # The page takes the new state without a reload.
            expect(page.locator("#live-head h1 .status")).to_have_text("cancelled", timeout=WAIT_MS)

            page.locator('button[data-action="cancel"]').click()  # again: refused, visibly
            expect(page.locator("#action-result.error")).to_contain_text(
                "nothing to cancel", timeout=WAIT_MS
            )
            assert errors == []
        finally:
            browser.close()
    assert stop(worker) == 0, read_log(worker_log)
