"""``asyncprof record --app``: a Django project asyncprof has never seen, recorded without edits.

The project is ``tests/fixtures/shopapp`` (its own settings reading ``DATABASE_URL``, a sync-only
custom middleware, an ORM model with migrations, a template view, an async JSON view, and
``/work/?cpu_ms=&db_ms=``, a page of known cost).  It is served from its own ``wsgi.py``/``asgi.py``
under a WSGI and an ASGI mode, migrated by ``--setup``, loaded by ``--path`` or by its own
locustfile, against this machine's PostgreSQL service.
"""

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import assert_adds_up, asyncprof, close_to, manifest, only_run, report_json

pytestmark = pytest.mark.integration

SHOP = Path(__file__).resolve().parent.parent / "fixtures" / "shopapp"
SERVE = {"sync": ("--wsgi", "shopsite.wsgi:application"), "async": ("--asgi", "shopsite.asgi:application")}
MIGRATE = "python manage.py migrate --noinput"
A_CPU, B_DB = 30.0, 30.0


def _fingerprint() -> str:
    """A digest of every file of the project: recording must leave it as it was."""
    digest = hashlib.sha256()
    for path in sorted(SHOP.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(SHOP)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _record(out: Path, db: str, mode: str, *load: str, users: int = 2, ok: bool = True) -> Any:
    out.mkdir()
    proc = asyncprof("record", "--app", str(SHOP), *SERVE[mode], "--mode", mode, "--setup", MIGRATE, *load,
                     "--users", str(users), "--spawn-rate", "100", "--workers", "2", "--duration", "5",
                     "--warmup", "2", "--db", db, "--no-pyinstrument", "--out", str(out), timeout=240)
    if not ok:
        return proc
    assert proc.returncode == 0, proc.stderr[-3000:]
    return report_json(only_run(out))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_known_costs_of_the_project_are_recovered(mode: str, tmp_path: Path, service_url: str) -> None:
    before = _fingerprint()
    zero = _record(tmp_path / "zero", service_url, mode, "--path", "/work/?cpu_ms=0&db_ms=0")
    loaded = _record(tmp_path / "loaded", service_url, mode, "--path", f"/work/?cpu_ms={A_CPU:g}&db_ms={B_DB:g}")
    assert _fingerprint() == before, "recording changed a file of the project"
    for report in (zero, loaded):
        assert report["errors"] == 0 and report["requests"] > 0
        assert report["attribution_ms"] is not None, report.get("warnings")
        assert_adds_up(report)
    z, x = zero["attribution_ms"], loaded["attribution_ms"]
    assert close_to(x["cpu"] - z["cpu"], A_CPU), (z, x)
    # A sync view under ASGI runs in the executor thread while the loop thread runs Python: after the
    # query returns, that thread waits for the GIL up to the 5 ms switch interval, and that wait is
    # still billed to db_wait (not yet split out as gil_wait).  Bounded, and stated here, not hidden.
    gil_switch_ms = 5.0 if mode == "async" else 0.0
    assert close_to(x["db_wait"] - z["db_wait"], B_DB) or \
        0 <= x["db_wait"] - z["db_wait"] - B_DB <= gil_switch_ms, (z, x)
    assert [e["name"] for e in loaded["endpoints"]] == [f"/work/?cpu_ms={A_CPU:g}&db_ms={B_DB:g}"]
    m = manifest(only_run(tmp_path / "loaded"))
    assert m["app"]["dir"] == str(SHOP) and m["app"]["settings"] == "shopsite.settings"
    assert m["app"]["served"] == SERVE[mode][1]
    assert m["config"]["app_packages"] == ["catalog", "shopsite"]
    assert m["setup"]["command"] == MIGRATE
    assert "Applying" in (only_run(tmp_path / "loaded") / "logs" / "setup.log").read_text() or \
        "No migrations to apply" in (only_run(tmp_path / "loaded") / "logs" / "setup.log").read_text()
    # The page's CPU is the project's own code: py-spy bills it to the app category.
    assert loaded["cpu_profile"]["app"] >= 0.3, loaded["cpu_profile"]


def test_async_mode_with_the_projects_locustfile(tmp_path: Path, service_url: str) -> None:
    report = _record(tmp_path / "run", service_url, "async", "--locustfile", str(SHOP / "locustfile.py"), users=6)
    assert report["errors"] == 0
    names = {e["name"] for e in report["endpoints"]}
    assert names == {"items", "api-items"}, names
    assert report["accounting"]["match_rate"] >= 0.99, report["accounting"]
    assert_adds_up(report)
    m = manifest(only_run(tmp_path / "run"))
    assert m["load"]["user_classes"] == ["ShopVisitor"]
    # The sync-only middleware of the project is named in the hop finding, first.
    hops = next(f for f in report["findings"] if f["title"].startswith("Thread hops"))
    assert "catalog.middleware.RequestTimingMiddleware" in hops["detail"], hops["detail"]
    assert "catalog.middleware.RequestTimingMiddleware" in hops["try"], hops["try"]


def test_project_errors_are_one_line(tmp_path: Path, service_url: str) -> None:
    out = tmp_path / "traces"
    # An ASGI mode with only --wsgi: says which flag is missing, starts nothing.
    proc = asyncprof("record", "--app", str(SHOP), "--wsgi", "shopsite.wsgi:application", "--mode", "async",
                     "--db", service_url, "--out", str(out))
    assert proc.returncode == 2 and "--asgi shopsite.asgi:application" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    # A module that is not in the project.
    proc = asyncprof("record", "--app", str(SHOP), "--wsgi", "nosuch.wsgi:application", "--mode", "sync",
                     "--db", service_url, "--out", str(out))
    assert proc.returncode == 2 and "nosuch.wsgi" in proc.stderr and "Traceback" not in proc.stderr
    # A failing setup command stops the run with its output, and the run directory says so.
    bad = tmp_path / "bad"
    bad.mkdir()
    proc = asyncprof("record", "--app", str(SHOP), *SERVE["sync"], "--mode", "sync", "--db", service_url,
                     "--setup", "python manage.py nosuchcommand", "--duration", "2", "--warmup", "0",
                     "--out", str(bad))
    assert proc.returncode == 3, proc.stderr
    assert "nosuchcommand" in proc.stderr and "Unknown command" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert manifest(only_run(bad))["status"] == "failed"
    # A locustfile that does not import: Locust's error, before the server starts.
    broken = tmp_path / "broken_locustfile.py"
    broken.write_text("from locust import HttpUser\nimport no_such_module_here\n")
    proc = asyncprof("record", "--app", str(SHOP), *SERVE["sync"], "--mode", "sync", "--db", service_url,
                     "--locustfile", str(broken), "--duration", "2", "--warmup", "0", "--out", str(tmp_path / "lf"))
    assert proc.returncode != 0 and "no_such_module_here" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "lf").exists()  # nothing started, nothing written
