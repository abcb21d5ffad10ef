"""A user's own locustfile under asyncprof: checked before the run, run unedited with the request log.

The runs are real: ``locust`` processes against a small HTTP server in this process that
records the ``traceparent`` of every request it receives.
"""

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from textwrap import dedent

import pytest

from asyncprof.collectors.loadgen import (APP_LOCUSTFILE, USER_LOCUSTFILE_ENV, LoadPlan, check_locustfile,
                                          remote_worker_command, sender_environment, start_locust)
from asyncprof.errors import LoadError, UsageError
from asyncprof.loadgen.request_log import REQUEST_LOG_HEADER
from asyncprof.loadgen.trace_headers import _wrap, format_traceparent, new_trace, parse_traceparent
from asyncprof.loadgen.trace_sampling import SAMPLE_ENV, keeps, sample_bound
from asyncprof.processes import ProcessGroup
from asyncprof.run import Run

#: A traceparent the user's own code sets: asyncprof must send it as is and log its ids.
OWN_TRACE, OWN_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
OWN = f"00-{OWN_TRACE}-{OWN_SPAN}-00"
PRESET_TRACE, PRESET_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

#: Plain HttpUser (requests) and FastHttpUser (geventhttpclient) classes as a user writes them:
#: named and unnamed requests, catch_response, a 404, their own traceparent per request and per session,
#: a sibling module imported lazily (after Locust has loaded the file), a host of their own.
USER_FILE = dedent(f'''
    from locust import HttpUser, constant, task
    from locust.contrib.fasthttp import FastHttpUser


    class Shopper(HttpUser):
        host = "http://127.0.0.1:9"  # --host replaces it
        wait_time = constant(0.05)

        @task(3)
        def browse(self):
            self.client.get("/items/", name="items")

        @task(1)
        def missing(self):
            import shop_helpers  # a sibling module, imported during the run
            import locustfile  # this very file, by its own name (not a second copy)

            assert locustfile.Shopper is type(self)
            with self.client.get(shop_helpers.MISSING, catch_response=True) as response:
                if response.status_code == 404:
                    response.failure("not found")

        @task(1)
        def own(self):
            self.client.get("/own/", name="own", headers={{"traceparent": "{OWN}"}})


    class ApiClient(FastHttpUser):
        wait_time = constant(0.05)

        @task
        def api(self):
            self.client.get("/api/items/", name="api-items", headers={{"Accept": "application/json"}})


    class Preset(FastHttpUser):
        wait_time = constant(0.05)
        default_headers = {{"traceparent": "00-{PRESET_TRACE}-{PRESET_SPAN}-01"}}

        @task
        def preset(self):
            self.client.get("/preset/", name="preset")


    class SessionHeader(HttpUser):
        wait_time = constant(0.05)

        def on_start(self):
            self.client.headers["Traceparent"] = "00-{PRESET_TRACE}-{PRESET_SPAN}-01"

        @task
        def session(self):
            self.client.post("/session/", name="session", json={{"a": 1}})
''')


class _Recorder(BaseHTTPRequestHandler):
    received: list[tuple[str, str | None]] = []  # (path, traceparent); replaced per server

    def _answer(self) -> None:
        self.received.append((self.path, self.headers.get("traceparent")))
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        status = 404 if self.path.startswith("/missing") else 200
        body = b'{"items": []}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """A threaded HTTP server on a free port of 127.0.0.1: its URL and what it received."""
    received: list[tuple[str, str | None]] = []
    handler = type("Handler", (_Recorder,), {"received": received})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", received
    finally:
        httpd.shutdown()
        httpd.server_close()


def _user_project(tmp_path: Path) -> Path:
    project = tmp_path / "shop"
    project.mkdir()
    (project / "shop_helpers.py").write_text('MISSING = "/missing/"\n')
    path = project / "locustfile.py"
    path.write_text(USER_FILE)
    return path


def _rows(log: Path) -> list[list[str]]:
    lines = log.read_text().splitlines()
    assert lines[0] + "\n" == REQUEST_LOG_HEADER
    rows = [line.split("\t") for line in lines[1:]]
    assert rows and all(len(r) == 10 for r in rows), rows[:3]
    return rows


def _check_log(rows: list[list[str]], received: list[tuple[str, str | None]], bound: int) -> None:
    """Every request logged once with the ids the server received; the user's own headers kept."""
    by_name: dict[str, list[list[str]]] = {}
    for r in rows:
        by_name.setdefault(r[1], []).append(r)
    assert {"items", "/missing/", "own", "api-items", "preset", "session"} <= set(by_name), sorted(by_name)
    assert {r[2] for r in by_name["items"] + by_name["api-items"] + by_name["own"]} == {"200"}
    assert {r[2] for r in by_name["/missing/"]} == {"404"} and all("not found" in r[6] for r in by_name["/missing/"])
    # The server saw a traceparent on every request, and it is the one logged.
    assert all(tp for _, tp in received), [p for p, tp in received if not tp]
    sent = {tp for _, tp in received}
    generated = by_name["items"] + by_name["/missing/"] + by_name["api-items"]
    for r in generated:
        trace_id, span_id, sampled = r[5], r[8], r[9]
        assert re.fullmatch(r"[0-9a-f]{32}", trace_id) and re.fullmatch(r"[0-9a-f]{16}", span_id), r
        assert sampled == ("1" if keeps(trace_id, bound) else "0"), r
        assert f"00-{trace_id}-{span_id}-{'01' if sampled == '1' else '00'}" in sent, r
    assert len({r[5] for r in generated}) == len(generated)  # a fresh trace per request
    # A traceparent the user set (per request, or for the session) is sent unchanged and logged.
    assert all((r[5], r[8], r[9]) == (OWN_TRACE, OWN_SPAN, "0") for r in by_name["own"])
    assert {tp for path, tp in received if path == "/own/"} == {OWN}
    for name in ("preset", "session"):
        assert all((r[5], r[8], r[9]) == (PRESET_TRACE, PRESET_SPAN, "1") for r in by_name[name]), name
    assert {tp for path, tp in received if path in ("/preset/", "/session/")} == {f"00-{PRESET_TRACE}-{PRESET_SPAN}-01"}


class _FastLike:
    """A client with FastHttpSession's request signature (headers and context can be positional)."""

    def __init__(self, default_headers: dict[str, str] | None = None) -> None:
        self.calls: list[tuple[object, dict]] = []
        self.client = type("Agent", (), {"default_headers": default_headers or {"User-Agent": "x"}})()

    def request(self, method: str, url: str, name: str | None = None, data: object = None,  # noqa: PLR0913
                catch_response: bool = False, stream: bool = False, headers: dict | None = None,
                auth: object = None, json: object = None, allow_redirects: bool = True, context: dict = {},  # noqa: B006
                **kwargs: object) -> None:
        self.calls.append((headers, context))


def test_trace_headers_fill_headers_and_context_however_they_are_passed() -> None:
    request = _wrap(_FastLike.request)
    client = _FastLike()
    request(client, "GET", "/a")
    request(client, "GET", "/b", None, None, False, False, {"Accept": "x"}, None, None, True, {"k": 1})
    request(client, "GET", "/c", headers=[("Accept", "y")], context={"k": 2})
    request(client, "GET", "/d", headers={"TraceParent": "not a traceparent"})
    request(client, "GET", "/e", headers={"traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"})
    (h1, c1), (h2, c2), (h3, c3), (h4, c4), (h5, c5) = client.calls
    assert h1 == {"traceparent": format_traceparent(c1)}
    assert h2 == {"Accept": "x", "traceparent": format_traceparent(c2)} and c2["k"] == 1
    assert h3 == [("Accept", "y"), ("traceparent", format_traceparent(c3))] and c3["k"] == 2
    assert len({c["trace_id"] for c in (c1, c2, c3)}) == 3
    # A header the user set is never replaced; an invalid one gives no ids (the server ignores it too).
    assert h4 == {"TraceParent": "not a traceparent"} and c4 == {}
    assert c5 == {}
    preset = _FastLike({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"})
    request(preset, "GET", "/f")
    assert preset.calls == [(None, {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                                    "span_id": "00f067aa0ba902b7", "sampled": False})]


def test_traceparent_parsing_is_the_servers() -> None:
    trace = new_trace(sample_bound(1.0))
    assert parse_traceparent(format_traceparent(trace)) == trace
    assert parse_traceparent(" 01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-future ")["sampled"] is True
    for bad in ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # uppercase
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  # version 00 has no more fields
                "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01", ""):
        assert parse_traceparent(bad) == {}, bad


def test_check_locustfile_lists_the_users(tmp_path: Path) -> None:
    path = _user_project(tmp_path)
    assert sorted(check_locustfile(path, dict(os.environ))) == ["ApiClient", "Preset", "SessionHeader", "Shopper"]


@pytest.mark.parametrize(("source", "expected"), [
    ("from locust import HttpUser\nclass Broken(HttpUser)\n    pass\n", r"SyntaxError: .*line 2"),
    ("import shop_module_that_is_not_there\n", r"ModuleNotFoundError: No module named 'shop_module_that_is_not_there'"),
    ("from locust import HttpUser\nraise RuntimeError('no config')\n", r"RuntimeError: no config \(line 2\)"),
])
def test_check_locustfile_names_the_import_error(tmp_path: Path, source: str, expected: str) -> None:
    path = tmp_path / "locustfile.py"
    path.write_text(source)
    with pytest.raises(LoadError) as caught:
        check_locustfile(path, dict(os.environ))
    message = caught.value.message
    assert "\n" not in message and str(path) in message and re.search(expected, message), message
    assert caught.value.hint


def test_check_locustfile_without_users(tmp_path: Path) -> None:
    path = tmp_path / "locustfile.py"
    path.write_text("from locust import HttpUser, FastHttpUser\n\nclass Base(HttpUser):\n    abstract = True\n")
    with pytest.raises(LoadError, match="defines no User class") as caught:
        check_locustfile(path, dict(os.environ))
    assert "HttpUser" in caught.value.hint
    with pytest.raises(LoadError, match="does not exist"):
        check_locustfile(tmp_path / "nope.py", dict(os.environ))


def test_plan_with_a_locustfile_sends_its_path_not_asyncprofs_paths(tmp_path: Path) -> None:
    path = _user_project(tmp_path)
    plan = LoadPlan(endpoints=[], users=4, spawn_rate=4, run_time=3, locustfile=path, remote_workers=1,
                    sample_traces=0.5)
    assert sender_environment(plan) == {USER_LOCUSTFILE_ENV: str(path), SAMPLE_ENV: "0.5"}
    command = remote_worker_command(plan, "10.0.0.1", 5557)
    assert f"{USER_LOCUSTFILE_ENV}={path}" in command and "app_locustfile" in command and "--worker" in command
    # The command finds the wrapper without importing it (which would need the environment).
    where = re.search(r'python -c "([^"]+)"', command).group(1)  # type: ignore[union-attr]
    assert subprocess.run([sys.executable, "-c", where], capture_output=True, text=True).stdout.strip() \
        == str(APP_LOCUSTFILE)
    with pytest.raises(UsageError, match="--rate"):
        LoadPlan(endpoints=[], users=4, spawn_rate=4, run_time=3, locustfile=path, rate=10.0)


def test_users_own_locustfile_runs_with_traceparents_and_the_request_log(
        tmp_path: Path, server: tuple[str, list[tuple[str, str | None]]]) -> None:
    url, received = server
    path = _user_project(tmp_path)
    log = tmp_path / "requests.tsv"
    log.write_text(REQUEST_LOG_HEADER)
    elsewhere = tmp_path / "elsewhere"  # not the locustfile's directory: its sibling imports still work
    elsewhere.mkdir()
    env = {**os.environ, USER_LOCUSTFILE_ENV: str(path), "ASYNCPROF_REQUEST_LOG": str(log), SAMPLE_ENV: "0.5"}
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(APP_LOCUSTFILE), "--headless", "-u", "4", "-r", "4", "-t", "3s",
         "--host", url, "--stop-timeout", "1", "--only-summary", "--exit-code-on-error", "0", "--loglevel", "WARNING"],
        env=env, cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    rows = _rows(log)
    _check_log(rows, received, sample_bound(0.5))
    assert len(rows) == len(received)  # every request the server answered is logged, once
    flags = {r[9] for r in rows if r[1] in ("items", "api-items")}
    assert flags == {"0", "1"}  # ASYNCPROF_SAMPLE_TRACES=0.5 marks some sampled, some not


def test_users_own_locustfile_in_distributed_mode(
        tmp_path: Path, server: tuple[str, list[tuple[str, str | None]]]) -> None:
    url, received = server
    path = _user_project(tmp_path)
    run = Run.create(tmp_path / "traces", "app")
    plan = LoadPlan(endpoints=[], users=4, spawn_rate=4, run_time=3, processes=2, locustfile=path)
    with ProcessGroup() as group:
        load = start_locust(group, run, url=url, plan=plan, env=dict(os.environ))
        assert len(load.workers) == 2
        code = load.wait(60)
    logs = "".join(p.read_text(errors="replace")[-2000:] for p in sorted(run.logs_dir.glob("locust*.log")))
    assert code == 0, logs
    rows = _rows(run.requests_path)
    _check_log(rows, received, sample_bound(1.0))
    assert len(rows) == len(received)  # the workers' batches all reached the master's log
    assert {r[9] for r in rows if r[1] != "own"} == {"1"}  # no ASYNCPROF_SAMPLE_TRACES: all sampled
