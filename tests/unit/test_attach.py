"""``asyncprof attach`` without a server: options, checks, /proc reading, and the report of an attach run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asyncprof.analysis.attached import apply_run_kind
from asyncprof.analysis.report import build_report
from asyncprof.attacher import (AttachConfig, AttachError, check_process, check_url, merge_endpoints, parse_path,
                                redact_argv)
from asyncprof.cli import main
from asyncprof.collectors.proctree import (cmdline, descendants, guess_server, listening_ports, process_alive,
                                           project_packages)
from asyncprof.errors import UsageError
from asyncprof.loadgen.request_log import REQUEST_LOG_HEADER
from asyncprof.run import Run

# --- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "endpoint"), [
    ("/", ("/", "/", 1)),
    ("/items/", ("/items/", "/items/", 1)),
    ("/items/:3", ("/items/", "/items/", 3)),
    ("/items", ("/items", "/items", 1)),
    ("/search/?q=a=b", ("/search/?q_a_b", "/search/?q=a=b", 1)),
])  # fmt: skip
def test_parse_path(spec: str, endpoint: tuple[str, str, int]) -> None:
    assert parse_path(spec) == endpoint


@pytest.mark.parametrize("spec", ["items", "/a,b", "/x:0", "http://h/x", "/a:b"])
def test_bad_paths_are_usage_errors(spec: str) -> None:
    with pytest.raises(UsageError, match="--path"):
        parse_path(spec)


def test_the_same_path_twice_adds_weights() -> None:
    assert merge_endpoints([parse_path("/a:2"), parse_path("/b"), parse_path("/a")]) == [("/a", "/a", 3),
                                                                                         ("/b", "/b", 1)]


def test_config_defaults_and_conflicts() -> None:
    config = AttachConfig(pid=1, url="http://127.0.0.1:8000").validate()
    assert config.users == 10 and config.paths == ["/"] and config.endpoints == [("/", "/", 1)]
    assert AttachConfig(pid=1, url="http://x", rate=100).validate().users == 50  # connections in open loop
    with pytest.raises(UsageError, match="--url"):
        AttachConfig(pid=1).validate()
    with pytest.raises(UsageError, match="--no-load sends no request, so --users, --path"):
        AttachConfig(pid=1, load=False, users=3, paths=["/x"]).validate()
    assert AttachConfig(pid=1, load=False).validate().users is None
    for bad in ({"duration": 0}, {"warmup": -1}, {"users": 0}, {"rate": 0}, {"pid": 0}):
        with pytest.raises(UsageError):
            AttachConfig(**{"pid": 1, "url": "http://x", **bad}).validate()  # type: ignore[arg-type]


@pytest.mark.parametrize(("url", "expected"), [
    ("http://127.0.0.1:8000", ("http://127.0.0.1:8000", "127.0.0.1", 8000)),
    ("http://localhost/", ("http://localhost", "localhost", 80)),
    ("https://staging.example.com", ("https://staging.example.com", "staging.example.com", 443)),
    ("http://[::1]:9000", ("http://[::1]:9000", "::1", 9000)),
])  # fmt: skip
def test_check_url(url: str, expected: tuple[str, str, int]) -> None:
    assert check_url(url) == expected


@pytest.mark.parametrize(("url", "says"), [
    ("ftp://host", "not an http"), ("127.0.0.1:8000", "not an http"), ("http://", "not an http"),
    ("http://h:99999", "not a URL"), ("http://h:8000/items/", "--path /items/"),
])  # fmt: skip
def test_bad_urls(url: str, says: str) -> None:
    with pytest.raises(AttachError, match=says.replace("/", "/")):
        check_url(url)


def test_redact_argv() -> None:
    argv = ["gunicorn", "--env", "DATABASE_URL=postgresql://u:pw@h/db", "--db-password=hunter2", "app:app"]
    text = " ".join(redact_argv(argv))
    assert "pw@" not in text and "hunter2" not in text and "app:app" in text


# --- the process checks and /proc -----------------------------------------------------------------


def test_check_process_errors() -> None:
    with pytest.raises(AttachError, match="no process with pid"):
        check_process(2**22 + 12345)
    with pytest.raises(AttachError, match="asyncprof itself"):
        check_process(os.getpid())


def test_a_zombie_is_not_a_server() -> None:
    """An exited child not yet waited for is a zombie (unless a SIGCHLD handler, gevent's once Locust's
    modules were imported by another test, reaped it already: then it is simply gone)."""
    proc = subprocess.Popen(["true"])
    try:
        for _ in range(500):
            if not process_alive(proc.pid):
                break
            time.sleep(0.02)
        with pytest.raises(AttachError, match=r"no process with pid \d+: it is (a zombie|not running)"):
            check_process(proc.pid)
    finally:
        proc.wait()


def test_tree_cmdline_and_listening_ports(tmp_path: Path) -> None:
    """A parent with two children, one of them listening: /proc sees the tree and the port."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "__init__.py").write_text("")
    script = (
        "import socket, subprocess, sys, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); print(s.getsockname()[1], flush=True)\n"
        "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']) for _ in range(2)]\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                              start_new_session=True)
    try:
        assert parent.stdout is not None
        port = int(parent.stdout.readline())
        for _ in range(100):
            if len(descendants(parent.pid)) == 2:
                break
            time.sleep(0.05)
        kids = descendants(parent.pid)
        assert len(kids) == 2
        assert cmdline(parent.pid)[0] == sys.executable
        assert port in listening_ports([parent.pid])
        assert port not in listening_ports(kids)  # the children hold no listening socket of their own
        assert project_packages(parent.pid) == ("pkg",)  # tests/ is left out
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


@pytest.mark.parametrize(("argv", "server", "interface", "mode", "app"), [
    (["/v/bin/python", "-m", "gunicorn", "--workers", "2", "--bind", "127.0.0.1:8000", "shop.wsgi:application"],
     "gunicorn", "wsgi", "sync", "shop.wsgi:application"),
    (["/v/bin/gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-b", "0.0.0.0:80", "shop.asgi:application"],
     "gunicorn", "asgi", "async", "shop.asgi:application"),
    (["gunicorn", "--worker-class=gthread", "shop.wsgi:app"], "gunicorn", "wsgi", "gthread", "shop.wsgi:app"),
    (["gunicorn", "--threads", "8", "shop.wsgi:app"], "gunicorn", "wsgi", "gthread", "shop.wsgi:app"),
    (["gunicorn", "-kgevent", "shop.wsgi:app"], "gunicorn", "wsgi", "gevent", "shop.wsgi:app"),
    (["gunicorn", "-c", "conf.py", "shop.wsgi:app"], "gunicorn", None, None, "shop.wsgi:app"),
    (["gunicorn: master [shop.wsgi:application]"], "gunicorn", None, None, "shop.wsgi:application"),
    (["/usr/bin/python3", "/v/bin/uvicorn", "--workers", "4", "shop.asgi:application"],
     "uvicorn", "asgi", "uvicorn", "shop.asgi:application"),
    (["python", "-m", "granian", "--interface", "wsgi", "--blocking-threads", "2", "shop.wsgi:application"],
     "granian", "wsgi", "granian-wsgi", "shop.wsgi:application"),
    (["granian", "shop.asgi:application"], "granian", None, None, "shop.asgi:application"),
    (["python", "server.py", "--port", "8000"], "unknown", None, None, None),
])  # fmt: skip
def test_guess_server(argv: list[str], server: str, interface: str | None, mode: str | None,
                      app: str | None) -> None:
    guess = guess_server(argv)
    assert (guess.server, guess.interface, guess.mode, guess.app) == (server, interface, mode, app)
    assert guess.app_packages == (("shop",) if app else ())


def test_guess_server_threads_and_framework_apps() -> None:
    granian = ["python", "-m", "granian", "--interface", "wsgi", "--blocking-threads", "3", "a.w:app"]
    assert guess_server(granian).threads == 3
    assert guess_server(["gunicorn", "--threads", "8", "a.w:app"]).threads == 8
    assert guess_server(["gunicorn", "asyncprof_target.wsgi:application"]).app_packages == ()


# --- the report of an attach run -------------------------------------------------------------------

ROOT = 'process 10:"gunicorn";process {pid}:"gunicorn";thread ({pid}): MainThread'
SAMPLES = [
    ROOT + ";handle (gunicorn/workers/sync.py:1);render (django/template/base.py:2);"
    "product_list (catalog/views.py:3) 30",
    ROOT + ";handle (gunicorn/workers/sync.py:1);parse (gunicorn/http/message.py:4) 10",
]


def _attach_run(parent: Path, *, load: bool) -> Run:
    run = Run.create(parent, "attach-gunicorn")
    run.update(
        kind="attach", status="complete",
        config={"kind": "attach", "mode": None, "scenario": None, "workers": 2, "users": 10 if load else None,
                "rate": None, "warmup": 1.0, "app_packages": ["catalog"], "load": load},
        server={"mode": "sync", "interface": "wsgi", "server": "gunicorn", "description": "attached: gunicorn",
                "attached": True},
        target={"pid": 10, "url": "http://127.0.0.1:8000", "workers": [11, 12]},
        host={"cpu_count": 2, "cpus_usable": 2},
        window={"start_unix": 1000.0, "end_unix": 1010.0},
        cpu_window={"seconds": 10.0, "workers_cpu_s": {"11": 2.0, "12": 2.0}, "server_master_cpu_s": 0.01,
                    "locust_cpu_s": 1.0 if load else None, "machine_busy_share": 0.5},
        instruments={"pyspy": {"enabled": True},
                     **{n: {"enabled": False, "unavailable": "attached"}
                        for n in ("otel", "pyinstrument", "accounting")}},
        load={"model": "closed" if load else "none"},
        missing=["no per-request breakdown", *([] if load else ["no client latency or throughput"])],
        warnings=[],
    )
    run.pyspy_dir.joinpath("samples.txt").write_text(
        "\n".join(s.format(pid=pid) for pid in (11, 12) for s in SAMPLES) + "\n")
    if load:
        lines = [f"{1000.5 + i * 0.01:.6f}\t/items/\t200\t20.0\t100\t{i:032x}\t\t\t\t1\n" for i in range(500)]
        run.requests_path.write_text(REQUEST_LOG_HEADER + "".join(lines))
    return run


def test_report_of_an_attach_run(tmp_path: Path) -> None:
    report = build_report(_attach_run(tmp_path, load=True))
    assert report["kind"] == "attach" and report["mode"] == "attach"
    assert report["missing"] == ["no per-request breakdown"]
    assert report["warnings"][0].startswith("attached to pid 10, a server asyncprof did not start: no per-request")
    assert not any("was off for this run" in w for w in report["warnings"])
    assert report["throughput_rps"] == 50.0 and report["errors"] == 0
    assert report["attribution_ms"] is None
    # The leaf frames are the project's own (catalog, from the manifest's app_packages) and gunicorn's parser.
    shares = report["cpu_profile"]
    assert shares["app"] == pytest.approx(0.75) and shares["http_server"] == pytest.approx(0.25)
    assert report["instruments"]["pyspy"]["samples_by_pid"] == {"11": 40, "12": 40}
    assert report["capacity"]["cpu_ms_per_request"] == pytest.approx(8.0)
    assert report["attached"]["workers"] == [11, 12]
    # Findings from the CPU profile only: none of them is a share of the latency (there is no breakdown).
    titles = [f["title"] for f in report["findings"]]
    assert any(t.startswith("Pure-Python HTTP parsing") for t in titles), titles
    assert all(f["share_of"] != "latency" for f in report["findings"])


def test_report_of_an_attach_run_without_load(tmp_path: Path) -> None:
    report = build_report(_attach_run(tmp_path, load=False))
    assert report["load"]["model"] == "none"
    assert report["throughput_rps"] is None and report["error_rate"] is None and report["requests"] == 0
    assert "no client latency or throughput" in report["warnings"][0]
    assert report["cpu_profile"] is not None


def test_recorded_runs_get_kind_record() -> None:
    report: dict = {"warnings": ["otel was off for this run: its data is missing from the report"]}
    apply_run_kind({"config": {"mode": "sync"}}, report)
    assert report["kind"] == "record" and report["missing"] == [] and len(report["warnings"]) == 1
    odd: dict = {"warnings": []}
    apply_run_kind({"kind": "attach", "missing": "not a list", "target": [], "load": 3}, odd)
    assert odd["kind"] == "attach" and odd["missing"] == [] and odd["attached"]["pid"] is None


def test_attach_report_renders_in_the_terminal_and_as_json(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    run = _attach_run(tmp_path, load=False)
    assert main(["report", str(run.path)]) == 0
    text = capsys.readouterr().out
    assert "mode=attach" in text and "a server asyncprof did not start" in text
    assert main(["report", str(run.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "attach"


def test_cli_bad_pid_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attach", "--pid", str(2**22 + 12345), "--url", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no process with pid") and "\n" not in err
