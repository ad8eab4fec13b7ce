"""The web view without a browser (Starlette's TestClient): pages, JSON shapes, escaping, the
CSRF check, refusals and actions. tests/test_ui_browser.py drives it in a real browser."""

from __future__ import annotations

import http.client
import os
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import Processes, python, read_log, wait_for_log

import durable
import durable.ui

pytest.importorskip("starlette", reason="the ui extra (starlette) is not installed")
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

EVIL = "<script>alert('x')</script>"
ACTION_HEADERS = {"X-Durable-UI": "1"}


@durable.activity(name="ui.double")
async def double(x: int) -> int:
    return 2 * x


@durable.workflow(name="ui.echo")
async def echo(text: str) -> str:
    await double(1)
    return text


@durable.workflow(name="ui.parent")
async def parent(n: int) -> int:
    first = await double(n)
    return await echo(str(first)) and first


@durable.workflow(name="ui.waits")
async def waits() -> object:
    return await durable.wait_signal("go")


class Boom(Exception):
    pass


@durable.activity(name="ui.explode")
async def explode(text: str) -> None:
    raise Boom(text)


@durable.workflow(name="ui.fails")
async def fails(text: str) -> None:
    await double(2)
    await explode(text)


FLAKY = {"fail": True}


@durable.activity(name="ui.flaky", retry=durable.RetryPolicy(max_attempts=1))
async def flaky() -> str:
    if FLAKY["fail"]:
        raise Boom("not yet")
    return "fixed"


@durable.workflow(name="ui.flaky_flow")
async def flaky_flow() -> str:
    await double(5)
    return await flaky()


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'ui.db'}"
    yield url
    anyio.run(durable.close_stores)


@pytest.fixture
def client(url: str) -> Iterator[TestClient]:
    with TestClient(durable.ui.create_app(url)) as client:
        yield client


def _start(workflow: Any, *args: Any, id: str, url: str) -> None:
    async def start() -> None:
        await durable.start(workflow, *args, id=id, store=url)

    anyio.run(start)


def _status(run_id: str, url: str) -> durable.RunStatus:
    return anyio.run(durable.get_handle(run_id, store=url).status)


def _record(run_id: str, url: str) -> Any:
    async def read() -> Any:
        from durable._stores import open_store

        return await (await open_store(url)).get_run(run_id)

    return anyio.run(read)


def _post(client: TestClient, verb: str, body: dict[str, Any]) -> Any:
    return client.post(f"/api/actions/{verb}", json=body, headers=ACTION_HEADERS)


# -- pages -------------------------------------------------------------------------------------


def test_runs_page_lists_runs_newest_first_with_values_escaped(
    client: TestClient, url: str
) -> None:
    durable.run(echo, "first", id="first", store=url)
    durable.run(echo, "second", id=EVIL, store=url)
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert EVIL not in page.text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page.text
    assert page.text.index("&lt;script&gt;") < page.text.index(">first<")
    assert "ui.echo" in page.text


def test_run_page_shows_arguments_result_steps_and_escapes_them(
    client: TestClient, url: str
) -> None:
    durable.run(echo, EVIL, id=EVIL, store=url)
    page = client.get("/run", params={"id": EVIL})
    assert page.status_code == 200
    assert "<script>" not in page.text.replace('<script src="/static/app.js" defer>', "")
    assert "&lt;script&gt;" in page.text
    assert 'data-kind="activity"' in page.text  # the timeline row of ui.double
    assert "Result" in page.text and "Arguments" in page.text


def test_failed_run_shows_error_with_traceback(client: TestClient, url: str) -> None:
    with pytest.raises(Boom):
        durable.run(fails, "<b>bad</b>", id="fails", store=url)
    page = client.get("/run", params={"id": "fails"})
    assert page.status_code == 200
    assert "Traceback" in page.text and "Boom" in page.text
    assert "&lt;b&gt;bad&lt;/b&gt;" in page.text and "<b>bad</b>" not in page.text
    assert "st-failed" in page.text


def test_child_runs_link_both_ways_with_slash_in_the_id(client: TestClient, url: str) -> None:
    assert durable.run(parent, 21, id="fam/ily?#..", store=url) == 42
    child_id = "fam/ily?#../2"
    page = client.get("/run", params={"id": "fam/ily?#.."})
    child_href = "/run?id=fam%2Fily%3F%23..%2F2"
    assert f'href="{child_href}"' in page.text  # the timeline bar, the steps and children
    child = client.get(child_href)
    assert child.status_code == 200
    assert 'href="/run?id=fam%2Fily%3F%23..">' in child.text  # the parent link
    data = client.get("/api/run", params={"id": child_id}).json()
    assert data["id"] == child_id and data["parent_id"] == "fam/ily?#.."


def test_a_missing_run_is_404(client: TestClient) -> None:
    page = client.get("/run", params={"id": "nope"})
    assert page.status_code == 404
    assert "There is no run" in page.text
    api = client.get("/api/run", params={"id": "nope"})
    assert api.status_code == 404
    assert "no run 'nope'" in api.json()["error"]
    assert client.get("/run").status_code == 400


def test_pages_carry_security_headers(client: TestClient) -> None:
    page = client.get("/")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"


def test_static_files_come_from_the_package(client: TestClient) -> None:
    css = client.get("/static/style.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "textContent" in js.text
    assert client.get("/static/../_app.py").status_code == 404
    assert client.get("/static/nope.js").status_code == 404


# -- filters and pages of runs -----------------------------------------------------------------


def test_filters_and_paging(client: TestClient, url: str) -> None:
    for i in range(5):
        durable.run(echo, str(i), id=f"run-{i}", store=url)
    _start(waits, id="other-waiting", url=url)

    only = client.get("/", params={"status": "pending"})
    assert "other-waiting" in only.text and "run-0" not in only.text
    prefixed = client.get("/", params={"prefix": "run-"})
    assert "run-4" in prefixed.text and "other-waiting" not in prefixed.text
    by_workflow = client.get("/", params={"workflow": "ui.waits"})
    assert "other-waiting" in by_workflow.text and "run-3" not in by_workflow.text

    first = client.get("/", params={"prefix": "run-", "limit": "2"})
    assert ">run-4<" in first.text and ">run-3<" in first.text and ">run-2<" not in first.text
    assert 'rel="prev"' not in first.text
    older = re.search(r'<a rel="next" href="([^"]+)"', first.text)
    assert older is not None
    second = client.get(older.group(1).replace("&amp;", "&"))
    assert ">run-2<" in second.text and ">run-1<" in second.text and ">run-4<" not in second.text
    newer = re.search(r'<a rel="prev" href="([^"]+)"', second.text)
    assert newer is not None
    back = client.get(newer.group(1).replace("&amp;", "&"))
    assert ">run-4<" in back.text and ">run-2<" not in back.text


def test_bad_filters_are_reported(client: TestClient) -> None:
    page = client.get("/", params={"status": "sleepy"})
    assert page.status_code == 400
    assert "sleepy" in page.text
    assert client.get("/api/runs", params={"limit": "lots"}).status_code == 400
    assert client.get("/api/runs", params={"cursor": "forged"}).status_code == 400


def test_api_json_shapes(client: TestClient, url: str) -> None:
    durable.run(parent, 3, id="shape", store=url)
    listing = client.get("/api/runs", params={"limit": 1}).json()
    assert set(listing) == {"runs", "next_cursor"}
    assert listing["next_cursor"] is not None
    (run,) = listing["runs"]
    for key in ("id", "workflow", "status", "created_at", "updated_at", "parent_id", "attempts"):
        assert key in run
    rest = client.get("/api/runs", params={"cursor": listing["next_cursor"]}).json()
    assert {r["id"] for r in rest["runs"]} | {run["id"]} == {"shape", "shape/2"}
    assert rest["next_cursor"] is None
    children = client.get("/api/runs", params={"parent": "shape"}).json()["runs"]
    assert [r["id"] for r in children] == ["shape/2"]

    data = client.get("/api/run", params={"id": "shape"}).json()
    assert data["status"] == "completed" and data["result"] == "6"
    assert [step["kind"] for step in data["steps"]] == ["activity", "child"]
    assert data["steps"][1]["child_id"] == "shape/2"
    assert set(data["steps"][0]) >= {"seq", "name", "status", "attempts", "started_at"}
    assert [child["id"] for child in data["children"]] == ["shape/2"]
    assert data["signature"]


# -- actions -----------------------------------------------------------------------------------


def test_actions_need_the_csrf_header_and_a_same_origin(client: TestClient, url: str) -> None:
    _start(waits, id="guarded", url=url)
    plain = client.post("/api/actions/cancel", json={"id": "guarded"})
    assert plain.status_code == 403 and "X-Durable-UI: 1" in plain.json()["error"]
    foreign = client.post(
        "/api/actions/cancel",
        json={"id": "guarded"},
        headers={**ACTION_HEADERS, "Origin": "http://evil.example"},
    )
    assert foreign.status_code == 403 and "evil.example" in foreign.json()["error"]
    assert _record("guarded", url).cancel_requested is False
    same = client.post(
        "/api/actions/cancel",
        json={"id": "guarded"},
        headers={**ACTION_HEADERS, "Origin": "http://testserver"},
    )
    assert same.status_code == 200, same.text
    assert _record("guarded", url).cancel_requested is True
    assert client.get("/api/actions/cancel").status_code == 405


def test_cancel_requests_and_refuses_a_finished_run(client: TestClient, url: str) -> None:
    _start(waits, id="to-cancel", url=url)
    answer = _post(client, "cancel", {"id": "to-cancel"})
    assert answer.status_code == 200 and answer.json()["ok"] is True
    assert answer.json()["run"]["id"] == "to-cancel"
    with pytest.raises(durable.Cancelled):
        durable.run(waits, id="to-cancel", store=url)
    assert _status("to-cancel", url) == durable.RunStatus.CANCELLED

    again = _post(client, "cancel", {"id": "to-cancel"})
    assert again.status_code == 409
    assert again.json() == {"ok": False, "error": again.json()["error"]}
    assert "cancelled" in again.json()["error"] and "nothing to cancel" in again.json()["error"]


def test_signal_delivers_a_json_payload(client: TestClient, url: str) -> None:
    _start(waits, id="to-signal", url=url)
    answer = _post(client, "signal", {"id": "to-signal", "name": "go", "payload": '{"n": [1]}'})
    assert answer.status_code == 200, answer.text
    assert durable.run(waits, id="to-signal", store=url) == {"n": [1]}
    finished = _post(client, "signal", {"id": "to-signal", "name": "go", "payload": "1"})
    assert finished.status_code == 409 and "completed" in finished.json()["error"]


def test_bad_action_requests(client: TestClient, url: str) -> None:
    _start(waits, id="target", url=url)
    assert _post(client, "explode", {"id": "target"}).status_code == 404
    assert _post(client, "cancel", {}).status_code == 400
    bad_json = client.post("/api/actions/cancel", content=b"{", headers=ACTION_HEADERS)
    assert bad_json.status_code == 400
    payload = _post(client, "signal", {"id": "target", "name": "go", "payload": "{nope"})
    assert payload.status_code == 400 and "not valid JSON" in payload.json()["error"]
    assert _post(client, "signal", {"id": "target", "name": " "}).status_code == 400
    missing = _post(client, "cancel", {"id": "ghost"})
    assert missing.status_code == 404 and "ghost" in missing.json()["error"]
    assert _post(client, "signal", {"id": "ghost", "name": "go"}).status_code == 404


def test_retry_resumes_a_failed_run_and_refuses_a_completed_one(
    client: TestClient, url: str
) -> None:
    FLAKY["fail"] = True
    with pytest.raises(Boom):
        durable.run(flaky_flow, id="flaky", store=url)
    assert _post(client, "retry", {"id": "flaky", "after_compensation": "yes"}).status_code == 400
    answer = _post(client, "retry", {"id": "flaky"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["run"]["status"] == "pending"
    FLAKY["fail"] = False
    assert durable.run(flaky_flow, id="flaky", store=url) == "fixed"

    refused = _post(client, "retry", {"id": "flaky"})
    assert refused.status_code == 409
    assert "completed" in refused.json()["error"]
    assert _post(client, "retry", {"id": "ghost"}).status_code == 404


def test_pause_and_resume(client: TestClient, url: str) -> None:
    _start(waits, id="pausable", url=url)
    refused = _post(client, "resume", {"id": "pausable"})
    assert refused.status_code == 409 and "not paused" in refused.json()["error"]
    assert _post(client, "pause", {"id": "pausable"}).status_code == 200
    assert _status("pausable", url) == durable.RunStatus.PAUSED
    assert _post(client, "pause", {"id": "pausable"}).status_code == 409
    assert _post(client, "resume", {"id": "pausable"}).status_code == 200
    assert _status("pausable", url) == durable.RunStatus.PENDING


# -- mounting and installing -------------------------------------------------------------------


def test_mounted_under_a_prefix_its_links_keep_the_prefix(url: str) -> None:
    durable.run(echo, "x", id="mounted", store=url)
    host = Starlette(routes=[Mount("/ops/durable", app=durable.ui.create_app(url))])
    with TestClient(host) as client:
        page = client.get("/ops/durable/")
        assert page.status_code == 200
        assert 'href="/ops/durable/run?id=mounted"' in page.text
        assert 'href="/ops/durable/static/style.css"' in page.text
        assert client.get("/ops/durable/static/style.css").status_code == 200
        assert client.get("/ops/durable/run", params={"id": "mounted"}).status_code == 200
        answer = client.post(
            "/ops/durable/api/actions/cancel", json={"id": "mounted"}, headers=ACTION_HEADERS
        )
        assert answer.status_code == 409  # completed: reached the action, refused


def test_without_the_extra_import_works_and_use_names_it(tmp_path: Path) -> None:
    done = python(
        "-c",
        textwrap.dedent(
            """
            import sys
            sys.modules["starlette"] = None  # as if the ui extra were not installed
            sys.modules["uvicorn"] = None
            import durable, durable.ui
            for call in (durable.ui.create_app, durable.ui.serve):
                try:
                    call()
                except ImportError as exc:
                    assert isinstance(exc, durable.ui.UIDependencyMissing), exc
                    print(exc)
            """
        ),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all("pip install 'durable-sdk[ui]'" in line for line in lines)


def _serve(tmp_path: Path, procs: Processes) -> tuple[str, int]:
    """``durable ui`` in its own process (which imports none of these tests' workflows) on a
    new SQLite file: the store's URL and the port it listens on."""
    url = f"sqlite:///{tmp_path / 'ui.db'}"
    assert python("-m", "durable", "db", "init", url, cwd=tmp_path).returncode == 0
    log = tmp_path / "ui.log"
    server = procs.spawn(
        ["-m", "durable", "ui", "--store", url, "--port", "0"], log, dict(os.environ)
    )
    wait_for_log(server, log, "Uvicorn running on")
    found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", read_log(log))
    assert found is not None, read_log(log)
    return url, int(found.group(1))


def _request(
    port: int, method: str, path: str, host: str, body: bytes | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Host": host, "X-Durable-UI": "1", "Content-Type": "application/json"}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_served_on_localhost_it_answers_only_requests_addressed_to_localhost(
    tmp_path: Path,
) -> None:
    """`durable ui` on 127.0.0.1 refuses a Host that names another site (a DNS-rebinding
    page re-pointing its own name at 127.0.0.1 would otherwise be same-origin with it)."""
    procs = Processes()
    try:
        _, port = _serve(tmp_path, procs)
        for host, expected in (("127.0.0.1", 200), ("localhost", 200), ("evil.example", 400)):
            status, _ = _request(port, "GET", "/api/runs", f"{host}:{port}")
            assert status == expected, host
    finally:
        procs.close()


@durable.workflow(name="ui.json_wait", codec=durable.JSONCodec())
async def json_wait() -> object:
    return await durable.wait_signal("go")


def test_a_signal_from_the_view_reaches_a_json_codec_workflow(tmp_path: Path) -> None:
    """The view's process does not import the workflow, so it cannot know its codec: the
    payload (JSON text in the form) is sent JSON-encoded, which JSON and pickle workflows
    both read."""
    procs = Processes()
    try:
        url, port = _serve(tmp_path, procs)
        anyio.run(lambda: durable.start(json_wait, id="j", store=url))
        body = b'{"id": "j", "name": "go", "payload": "{\\"ok\\": true}"}'
        status, text = _request(port, "POST", "/api/actions/signal", f"127.0.0.1:{port}", body)
        assert status == 200, text
    finally:
        procs.close()
    assert anyio.run(lambda: durable.execute(json_wait, id="j", store=url)) == {"ok": True}
