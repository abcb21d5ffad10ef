"""Nobody let in: no secret in any file of a run, no SQL parameter, owner-only files, loopback only.

One run of the shop project (``tests/fixtures/shopapp``) under an ASGI mode, through a DSN with a
password, with a SECRET_KEY of its own, a locustfile that sends ``Authorization`` and ``Cookie``
headers, queries with a distinctive parameter, and spans also exported live over OTLP/HTTP.  Then
every byte asyncprof left behind (the run directory, and what it exports from it) is searched for
each secret.
"""

import os
import secrets
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import manifest, only_run, report_json
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration

SHOP = Path(__file__).resolve().parent.parent / "fixtures" / "shopapp"
#: The digits of pg_sleep's parameter for ?db_ms=13.579246 (0.013579246...): a bound SQL parameter
#: that must not be recorded (the URL's own "13.579246" does not contain them).
SQL_PARAMETER = "013579246"

LOCUSTFILE = '''
from locust import HttpUser, constant, task


class Client(HttpUser):
    wait_time = constant(0)

    def on_start(self):
        self.client.headers["Authorization"] = "Bearer {token}"
        self.client.cookies.set("sessionid", "{cookie}")

    @task
    def work(self):
        self.client.get("/work/?cpu_ms=1&db_ms=13.579246", name="work")
'''


def _secrets_in(root: Path, needles: dict[str, str]) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{what} in {path.relative_to(root)}" for what, value in needles.items()
                      if value.encode() in data]
    return found


def _listening_ports(pid: int) -> set[str]:
    """The local addresses the process tree of *pid* listens on (from /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                out.add(fields[1])
    return out


def test_a_run_leaves_no_secret_anywhere(tmp_path: Path, service_url: str) -> None:
    password = "pw-" + secrets.token_hex(12)
    needles = {
        "the DSN's password": password,
        "SECRET_KEY": "sk-" + secrets.token_hex(16),
        "the Authorization header": "tok-" + secrets.token_hex(12),
        "the session cookie": "ck-" + secrets.token_hex(12),
    }
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(LOCUSTFILE.format(token=needles["the Authorization header"],
                                            cookie=needles["the session cookie"]))
    # trust authentication ignores the password, but asyncprof sees it in the DSN like any other
    dsn = service_url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")
    assert password in dsn
    out = tmp_path / "traces"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["SHOP_SECRET_KEY"] = needles["SECRET_KEY"]
    with OtlpReceiver() as receiver:
        proc = subprocess.run(
            [sys.executable, "-m", "asyncprof", "record", "--app", str(SHOP), "--asgi", "shopsite.asgi:application",
             "--mode", "async", "--setup", "python manage.py migrate --noinput", "--locustfile", str(locustfile),
             "--db", dsn, "--otlp", receiver.url, "--users", "4", "--workers", "2", "--duration", "4",
             "--warmup", "1", "--profile-every", "5", "--out", str(out)],
            capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(out)
    report = report_json(run)
    assert report["requests"] > 0 and report["errors"] == 0, report["warnings"]
    spans = report["instruments"]["otel"]["spans"]
    assert spans > 0 and receiver.spans, "the spans must exist for their absence of secrets to mean anything"

    # The requests carried the secrets, and the server saw them: the checks below are not vacuous.
    assert receiver.spans and any(s.attributes.get("http.target", "").startswith("/work/")
                                  or s.attributes.get("url.path") == "/work/" for s in receiver.spans)

    # Every file of the run, after every export asyncprof offers.
    for fmt in ("jaeger", "otlp"):
        target = tmp_path / f"export.{fmt}"
        exported = subprocess.run([sys.executable, "-m", "asyncprof", "export", fmt, str(run),
                                   "--output", str(target)], capture_output=True, text=True, timeout=120)
        assert exported.returncode == 0, exported.stderr[-2000:]
    # tmp_path holds the run and the exports (and the test's own locustfile, which holds two of them)
    leaks = [leak for leak in _secrets_in(tmp_path, needles) if not leak.endswith(" in locustfile.py")]
    assert not leaks, leaks
    assert not [s for s in receiver.spans if any(v in str(s.attributes) for v in needles.values())]
    # No output of asyncprof's own either.
    assert not [what for what, value in needles.items() if value in proc.stdout + proc.stderr]

    # SQL parameters are not recorded: the statement text is, with its placeholder.
    statements = [str(s.attributes.get("db.statement", "")) for s in receiver.spans if "db.statement" in s.attributes]
    assert any("pg_sleep" in s for s in statements), statements[:5]
    assert not _secrets_in(run, {"a SQL parameter": SQL_PARAMETER})
    assert not [s for s in statements if SQL_PARAMETER in s]

    # Owner-only: the run directory and everything in it.
    loose = [str(p.relative_to(run)) for p in [run, *run.rglob("*")]
             if stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert not loose, loose
    assert manifest(run)["config"].get("bind", "127.0.0.1") in ("127.0.0.1", "::1", "localhost")


def test_servers_listen_on_loopback_only(tmp_path: Path, service_url: str) -> None:
    """While a run is going, nothing asyncprof started listens beyond 127.0.0.1."""
    import time

    out = tmp_path / "traces"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "asyncprof", "record", "--mode", "sync", "--db", service_url,
                             "--duration", "6", "--warmup", "1", "--users", "2", "--workers", "2", "--no-pyspy",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        pids: list[int] = []
        while time.monotonic() < deadline and proc.poll() is None:
            runs = [p for p in out.iterdir() if (p / "manifest.json").exists()]
            if runs and "window" in manifest(runs[0]):
                m = manifest(runs[0])["pids"]
                pids = [m["server"], *m.get("workers", []), m.get("locust")]
                break
            time.sleep(0.2)
        assert pids, proc.communicate(timeout=60)
        listening = set()
        for pid in filter(None, pids):
            try:
                listening |= _listening_ports(pid)
            except FileNotFoundError:
                pass
    finally:
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    assert listening, "the server listens somewhere"
    loopback = {socket.inet_aton("127.0.0.1")[::-1].hex().upper()}
    outside = [addr for addr in listening if addr.split(":")[0] not in loopback]
    assert not outside, outside
