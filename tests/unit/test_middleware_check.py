"""``middleware_check.sync_only_middleware``: the middleware Django adapts under ASGI.

Django's settings are process-wide and configured once, so each case runs in a fresh
interpreter: the shop fixture (``tests/fixtures/shopapp``, settings ``shopsite.settings``) with
its own ``MIDDLEWARE``, or ``settings.configure`` with middleware written for the case.  No
database is touched: the shop needs ``DATABASE_URL`` only to connect.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

SHOPAPP = Path(__file__).resolve().parents[1] / "fixtures" / "shopapp"
STOCK = ("django.middleware.security.SecurityMiddleware", "django.middleware.common.CommonMiddleware",
         "django.middleware.clickjacking.XFrameOptionsMiddleware")


def run_fresh(code: str, *, settings_module: str | None = None, path: Path | None = None) -> Any:
    """Run *code* in a fresh interpreter; it prints one JSON value, which is returned."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    if settings_module:
        env["DJANGO_SETTINGS_MODULE"] = settings_module
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(path), env.get("PYTHONPATH"))))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def by_path(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["path"]: e for e in entries}


def test_shop_fixture() -> None:
    """The shop's sync-only RequestTimingMiddleware is named, with the thread it drags others into."""
    entries = run_fresh("""
        import json, django
        django.setup()
        from asyncprof.worker.middleware_check import sync_only_middleware
        print(json.dumps(sync_only_middleware()))
    """, settings_module="shopsite.settings", path=SHOPAPP)
    assert [e["path"] for e in entries] == [STOCK[0], STOCK[1], "catalog.middleware.RequestTimingMiddleware",
                                            STOCK[2]]  # outermost first; shop_headers is async capable
    found = by_path(entries)
    timing = found["catalog.middleware.RequestTimingMiddleware"]
    assert timing == {"path": "catalog.middleware.RequestTimingMiddleware", "kind": "sync_only", "hooks": [],
                      "hops": 2, "thread_with": list(STOCK[:2])}
    for path in STOCK:
        assert found[path]["kind"] == "sync_hooks"
    assert found[STOCK[0]]["hooks"] == ["process_request", "process_response"]
    # Security and Common run sync inside RequestTiming's thread: their hooks do not cross there.
    assert found[STOCK[0]]["hops"] == found[STOCK[1]]["hops"] == 0
    # XFrameOptions is inside shop_headers (async): it runs async, its sync process_response hops.
    assert found[STOCK[2]] == {"path": STOCK[2], "kind": "sync_hooks", "hooks": ["process_response"], "hops": 1}
    json.dumps(entries)  # what the worker writes into workers/<pid>.json


def test_predicted_hops_match_a_real_asgi_request() -> None:
    """One request through the shop's ASGI handler, with the asgiref hooks counting: the crossings
    the check predicts for the middleware are the middleware's hop sites the hooks count."""
    out = run_fresh("""
        import asyncio, json, time
        import django
        from asyncprof.worker import call_hooks
        from asyncprof.worker.clocks import perf_counter_ns
        from asyncprof.worker.record import RequestRecord, current
        call_hooks.install_asgiref()
        from django.core.asgi import get_asgi_application
        from asyncprof.worker.middleware_check import sync_only_middleware
        app = get_asgi_application()

        async def request():
            rec = RequestRecord("ab" * 16, "/health/", time.time(), perf_counter_ns())
            current.set(rec)
            scope = {"type": "http", "method": "GET", "path": "/health/", "raw_path": b"/health/",
                     "query_string": b"", "headers": [(b"host", b"localhost")], "server": ("127.0.0.1", 80),
                     "client": ("127.0.0.1", 1), "scheme": "http", "http_version": "1.1",
                     "asgi": {"version": "3.0"}}
            messages = [{"type": "http.request", "body": b"", "more_body": False}]
            async def receive():
                if messages:
                    return messages.pop()
                await asyncio.sleep(30)
            sent = []
            async def send(message):
                sent.append(message)
            await app(scope, receive, send)
            return sent[0]["status"], rec.hops

        status, hops = asyncio.run(request())
        print(json.dumps({"status": status, "hops": hops, "sites": dict(call_hooks.HOP_SITES),
                          "middleware": sync_only_middleware()}))
    """, settings_module="shopsite.settings", path=SHOPAPP)
    assert out["status"] == 200
    sites = out["sites"]
    # Into RequestTiming's thread at its outermost member, back out into shop_headers below it,
    # and XFrameOptions' sync process_response: module-qualified where the code is the shop's.
    middleware_sites = {"SecurityMiddleware": 1, "catalog.middleware.shop_headers.<locals>.async_middleware": 1,
                        "XFrameOptionsMiddleware.process_response": 1}
    for site, count in middleware_sites.items():
        assert sites.get(site) == count, sites
    assert sites.get("catalog.views.health") == 1  # the sync view itself
    assert sum(e["hops"] for e in out["middleware"]) == sum(middleware_sites.values())
    assert out["hops"] == sum(sites.values())


CASES = '''
from django.utils.decorators import sync_and_async_middleware
from django.utils.deprecation import MiddlewareMixin


def sync_factory(get_response):  # a plain function factory: sync only
    return get_response


@sync_and_async_middleware
def both(get_response):
    return get_response


class AsyncOnly:
    sync_capable, async_capable = False, True

    def __init__(self, get_response):
        self.get_response = get_response

    async def __call__(self, request):
        return await self.get_response(request)


class Mixin(MiddlewareMixin):
    def process_request(self, request):
        return None

    async def process_view(self, request, view, args, kwargs):  # async: never hops
        return None


class MixinSyncOnly(MiddlewareMixin):
    async_capable = False

    def process_request(self, request):
        return None

    def process_view(self, request, view, args, kwargs):
        return None


class OwnAcall(MiddlewareMixin):
    """Overrides __acall__: its process_request does not go through sync_to_async there."""

    def process_request(self, request):
        return None

    async def __acall__(self, request):
        return await self.get_response(request)


class Refused:
    sync_capable = async_capable = False


class ExplodesOnImport:
    pass

raise_at_import = False
'''


def test_rules_on_configured_settings(tmp_path: Path) -> None:
    (tmp_path / "mwcases.py").write_text(CASES)
    (tmp_path / "mwbroken.py").write_text("raise SystemExit('no')\n")
    order = ["mwcases.Mixin", "mwcases.sync_factory", "mwcases.both", "mwcases.AsyncOnly", "mwcases.MixinSyncOnly",
             "mwbroken.Thing", "mwcases.Refused", "mwcases.OwnAcall", "mwcases.Missing"]
    entries = run_fresh(f"""
        import json
        from django.conf import settings
        settings.configure(MIDDLEWARE={order!r})
        import django
        django.setup()
        from asyncprof.worker.middleware_check import sync_only_middleware
        print(json.dumps(sync_only_middleware()))
    """, path=tmp_path)
    found = by_path(entries)
    # Not listed: both (runs async here), AsyncOnly, Refused (Django would not start with it) and
    # OwnAcall (its own __acall__: no hook of it is known to cross).
    assert [e["path"] for e in entries] == ["mwcases.Mixin", "mwcases.sync_factory", "mwcases.MixinSyncOnly",
                                            "mwbroken.Thing", "mwcases.Missing"]
    # Mixin sits right above the sync factory: it runs sync in the factory's thread, so its
    # process_request does not cross.
    assert found["mwcases.Mixin"] == {"path": "mwcases.Mixin", "kind": "sync_hooks", "hooks": ["process_request"],
                                      "hops": 0}
    # AsyncOnly between them keeps two threads apart: two hops each, plus MixinSyncOnly's sync
    # process_view (adapted on its own, in the handler's async mode).
    assert found["mwcases.sync_factory"] == {"path": "mwcases.sync_factory", "kind": "sync_only", "hooks": [],
                                             "hops": 2, "thread_with": ["mwcases.Mixin"]}
    assert found["mwcases.MixinSyncOnly"] == {"path": "mwcases.MixinSyncOnly", "kind": "sync_only",
                                              "hooks": ["process_view"], "hops": 3, "thread_with": []}
    assert found["mwbroken.Thing"]["kind"] == "unimportable" and "SystemExit" in found["mwbroken.Thing"]["error"]
    assert found["mwcases.Missing"]["kind"] == "unimportable" and found["mwcases.Missing"]["hops"] is None


def test_mixin_hooks_cross_when_it_runs_async(tmp_path: Path) -> None:
    (tmp_path / "mwcases.py").write_text(CASES)
    entries = run_fresh("""
        import json
        from django.conf import settings
        settings.configure(MIDDLEWARE=["mwcases.Mixin", "mwcases.both"])
        import django
        django.setup()
        from asyncprof.worker.middleware_check import sync_only_middleware
        print(json.dumps(sync_only_middleware()))
    """, path=tmp_path)
    # Async all the way: process_request goes through sync_to_async; the async process_view does not.
    assert entries == [{"path": "mwcases.Mixin", "kind": "sync_hooks", "hooks": ["process_request"], "hops": 1}]


def test_without_django_or_settings_it_is_empty() -> None:
    assert run_fresh("""
        import json, sys
        from asyncprof.worker.middleware_check import sync_only_middleware
        result = sync_only_middleware()
        print(json.dumps([result, "django" in sys.modules]))
    """) == [[], False]  # Django is not imported into a worker of another framework
    assert run_fresh("""
        import json
        import django.conf
        from asyncprof.worker.middleware_check import sync_only_middleware
        print(json.dumps(sync_only_middleware()))
    """) == []  # no DJANGO_SETTINGS_MODULE, nothing configured


def test_report_names_the_middleware_the_workers_reported(tmp_path: Path) -> None:
    """workers/<pid>.json ``middleware`` (the union over workers) and ``config.app_packages`` reach
    the hop finding; a run without them reads as before."""
    from asyncprof.analysis.report import build_report
    from tests.unit.test_report_compose import full_run

    def hop_finding(run_dir: Path, middleware: list[list[dict[str, Any]]] | None,
                    packages: list[str] | None) -> dict[str, Any]:
        config = {"mode": "async", "scenario": "seed", "view": "async", "workers": 2, "users": 10, "warmup": 1.0}
        if packages is not None:
            config["app_packages"] = packages
        run = full_run(run_dir, config=config)
        run.workers_dir.mkdir(parents=True, exist_ok=True)
        for pid, entries in zip((11, 12), middleware or [None, None]):
            info: dict[str, Any] = {"pid": pid, "server": "uvicorn"}
            if entries is not None:
                info["middleware"] = entries
            (run.workers_dir / f"{pid}.json").write_text(json.dumps(info))
        report = build_report(run)
        return next(f for f in report["findings"] if f["title"].startswith("Thread hops"))

    timing = {"path": "catalog.middleware.RequestTimingMiddleware", "kind": "sync_only", "hooks": [], "hops": 2,
              "thread_with": ["django.middleware.common.CommonMiddleware"]}
    common = {"path": "django.middleware.common.CommonMiddleware", "kind": "sync_hooks",
              "hooks": ["process_request", "process_response"], "hops": 0}
    named = hop_finding(tmp_path / "a", [[common, timing], [common, timing]], ["catalog"])
    assert named["detail"].startswith("your middleware catalog.middleware.RequestTimingMiddleware is sync-only")
    assert "catalog.middleware.RequestTimingMiddleware" in named["try"]
    assert [m["path"] for m in named["evidence"]["sync_middleware"]] == [timing["path"]]  # once, not per worker
    before = hop_finding(tmp_path / "b", None, None)
    assert "sync_middleware" not in before["evidence"] and before["detail"].startswith("4.0 sync<->async hops")


def test_before_django_setup_it_is_empty() -> None:
    """Settings readable but the app registry not ready: importing the user's middleware would fail
    for reasons of timing, not of the middleware, so nothing is reported."""
    assert run_fresh("""
        import json
        import django.apps, django.conf
        from asyncprof.worker.middleware_check import sync_only_middleware
        print(json.dumps(sync_only_middleware()))
    """, settings_module="shopsite.settings", path=SHOPAPP) == []
