"""A realistic synthetic run directory for ``scripts/bench-report``: :func:`generate`.

Importable because a script run as ``scripts/<name>`` has ``scripts/`` first on ``sys.path`` (tests
insert the directory themselves).  The run is an async (gunicorn + uvicorn workers, asgiref hops,
asyncpg) recording of a few endpoints under closed-loop load, written in exactly the formats
asyncprof's own writers produce, so the real readers take it as a recorded run:

* ``manifest.json`` with the structure of ``asyncprof record``'s (config, versions, pids, window,
  cpu_window, instruments with what they produced, the workers' ready files);
* ``requests.tsv`` (``REQUEST_LOG_HEADER``; the Locust listener's number formats), every request
  starting inside the measured window;
* ``spans/<pid>.jsonl``: OTLP/JSON lines as ``OtlpJsonFileExporter`` writes them, batches of up to
  512 spans (the batch processor's default), one server span (``opentelemetry.instrumentation.asgi``)
  and one span per query (``...asyncpg``) per request, trace and parent ids matching ``requests.tsv``;
* ``accounting/<pid>.tsv`` (``record_format.COLUMNS``) and ``accounting/<pid>.json`` (the worker
  summary), including each worker's readiness probe (``/health/``, no trace id) as a real run has;
* ``pyspy/samples.txt``: py-spy ``--subprocesses --threads`` collapsed stacks (master and worker
  process frames, ``thread (<tid>): <name>``, Python frames, count), a few thousand distinct frame
  stacks from the loop thread, the OTel batch thread and one short-lived ``ThreadPoolExecutor-N_0``
  thread per request (asgiref's per-request executor), so the file has many more lines than distinct
  stacks, as a long real recording does; ``pyspy/speedscope.json`` rendered from it by asyncprof's
  own :func:`~asyncprof.renderers.speedscope.write_speedscope`;
* ``profiles/<trace id>.pyisession``: pyinstrument sessions of sampled requests (every N-th);
* ``workers/<pid>.json``, ``logs/*.log``, ``locust/stats_*.csv``.

Writes stream: nothing holds a list of a million requests.  Deterministic for a given seed.
Spans and lines are formatted from templates serialised once with orjson (the exporter's encoder),
which is what keeps a million requests to tens of seconds.
"""

import math
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from asyncprof.loadgen.request_log import REQUEST_LOG_HEADER
from asyncprof.worker.record_format import ACCOUNTING_DIR, COLUMNS

#: Unix time at which every synthetic run's warm-up starts (fixed: the output is deterministic).
BASE_UNIX = 1_795_000_000.0
WARMUP_S = 5.0
RPS = 400.0  # the closed-loop throughput the run pretends to have had (sets the window's length)
USERS = 50
PORT = 41234
SPAN_BATCH = 512  # BatchSpanProcessor's max_export_batch_size
RECORD_BATCH = 512  # RecordWriter's batch
PROFILE_EVERY = 100
#: Draws from the stack shapes below; what comes up is the pool of distinct stacks (a few thousand),
#: weighted by how often it came up.
STACK_DRAWS = 6000
ERROR_RATE = 0.005

#: (Locust name, path, share of requests, queries, median client latency ms)
ENDPOINTS: tuple[tuple[str, str, float, int, float], ...] = (
    ("async/seed", "/async/seed/", 0.70, 3, 110.0),
    ("async/items", "/async/items/", 0.15, 1, 80.0),
    ("async/item", "/async/item/", 0.12, 2, 95.0),
    ("async/search", "/async/search/", 0.03, 4, 180.0),
)
#: The server-side categories' mean shares of wall time (README's async breakdown, ms per request).
SHARES = {"cpu": 2.1, "db_wait": 1.3, "event_loop": 69.9, "thread_hop": 11.5, "gil_wait": 0.9,
          "os_run_queue": 36.3}
HOPS = 14
HOP_SITES = (
    "Signal.asend.<locals>.sync_send", "SecurityMiddleware.process_request", "SessionMiddleware.process_request",
    "CommonMiddleware.process_request", "CsrfViewMiddleware.process_request",
    "AuthenticationMiddleware.process_request", "MessageMiddleware.process_request",
    "CsrfViewMiddleware.process_view", "XFrameOptionsMiddleware.process_response",
    "MessageMiddleware.process_response", "CsrfViewMiddleware.process_response", "CommonMiddleware.process_response",
    "SessionMiddleware.process_response", "SecurityMiddleware.process_response",
)
MIDDLEWARE = (
    ("django.middleware.security.SecurityMiddleware", ["process_request", "process_response"]),
    ("django.contrib.sessions.middleware.SessionMiddleware", ["process_request", "process_response"]),
    ("django.middleware.common.CommonMiddleware", ["process_request", "process_response"]),
    ("django.middleware.csrf.CsrfViewMiddleware", ["process_request", "process_view", "process_response"]),
    ("django.contrib.auth.middleware.AuthenticationMiddleware", ["process_request"]),
    ("django.contrib.messages.middleware.MessageMiddleware", ["process_request", "process_response"]),
    ("django.middleware.clickjacking.XFrameOptionsMiddleware", ["process_response"]),
)
STATEMENTS = (
    "SELECT id, name, price FROM item ORDER BY id LIMIT 20",
    "SELECT id, name, description, price, created FROM item WHERE id = $1",
    "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;",
    "SELECT count(*) FROM item WHERE name LIKE $1",
)
VERSIONS = {
    "asgiref": "3.13.0", "asyncpg": "0.32.0", "asyncprof": "0.1.0", "django": "5.2.19", "gunicorn": "27.0.1",
    "h11": "0.16.0", "locust": "2.47.0", "opentelemetry-sdk": "1.45.1", "py-spy": "0.4.3", "pyinstrument": "5.1.3",
    "python": "3.11.7", "uvicorn": "0.54.0", "uvicorn-worker": "0.4.0",
}
SERVER_COMMAND = [
    "/work/venv/bin/python3", "-m", "gunicorn", "-c", "python:asyncprof.worker.gunicorn_conf", "--bind",
    f"127.0.0.1:{PORT}", "--workers", "{workers}", "--worker-class", "uvicorn_worker.UvicornH11Worker",
    "--log-level", "warning", "asyncprof.worker.asgi:application",
]


def generate(path: Path, requests: int, samples: int, profiles: int, workers: int = 4, seed: int = 0) -> Path:
    """Write a synthetic async run of *requests* requests, *samples* py-spy samples and *profiles*
    pyinstrument sessions from *workers* workers into the new directory *path*; return *path*."""
    if requests < 1 or samples < 0 or profiles < 0 or workers < 1:
        raise ValueError("requests >= 1, samples >= 0, profiles >= 0, workers >= 1")
    path = Path(path)
    path.mkdir(parents=True, mode=0o700)
    for sub in ("spans", "profiles", "pyspy", "workers", "logs", "locust", "accounting"):
        (path / sub).mkdir(mode=0o700)
    rng = random.Random(seed)
    run_id = path.name
    master = 40_000 + seed % 1000 * 10
    pids = [master + 25 + 5 * i for i in range(workers)]
    window_s = round(requests / RPS, 3) or 0.001
    start = BASE_UNIX + WARMUP_S
    end = start + window_s
    every = max(1, requests // profiles) if profiles else 0

    stats = _write_requests_spans_records(path, rng, run_id, pids, requests, start, window_s, every, profiles)
    _write_pyspy(path, rng, master, pids, samples)
    _write_profiles(path, rng, stats["profiled"])
    for pid in pids:
        _write_json(path / "workers" / f"{pid}.json", _worker_info(pid, master, stats["spans"][pid]))
        _write_json(path / ACCOUNTING_DIR / f"{pid}.json", _worker_summary(pid, stats["served"][pid], stats["cpu_s"][pid]))
    for name in ("server.log", "pyspy.log", "locust.log"):
        (path / "logs" / name).write_text("")
    _write_locust_csvs(path, stats)
    manifest = _manifest(run_id, path, master, pids, requests, samples, len(stats["profiled"]), start, end, stats)
    (path / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    for p in path.rglob("*"):
        os.chmod(p, 0o700 if p.is_dir() else 0o600)
    return path


# --- requests, spans and accounting records ------------------------------------------------------------


def _template(obj: Any, **sentinels: str) -> str:
    """``orjson.dumps(obj)`` as a %-format string: each ``"@name@"`` string value becomes ``%(name)s``."""
    text = orjson.dumps(obj).decode().replace("%", "%%")
    for key in sentinels:
        text = text.replace(f'"@{key}@"', f"%({key})s")
    return text


def _kv(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str) and value.startswith("@") and value.endswith("@"):
        kind = {"I": "intValue", "D": "doubleValue"}.get(value[1], "stringValue")
        return {"key": key, "value": {kind: value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def _resource_prefix(pid: int, run_id: str, rng: random.Random) -> str:
    attrs = [("telemetry.sdk.language", "python"), ("telemetry.sdk.name", "opentelemetry"),
             ("telemetry.sdk.version", "1.45.1"), ("service.instance.id", _uuid(rng)),
             ("service.name", "asyncprof-target"), ("process.pid", pid), ("asyncprof.mode", "async"),
             ("asyncprof.run_id", run_id)]
    resource = {"attributes": [_kv(k, v) for k, v in attrs]}
    return '{"resourceSpans":[{"resource":' + orjson.dumps(resource).decode() + ',"scopeSpans":['


_SERVER_ATTRS = ("wall", "cpu", "db_wait", "db_connect", "upstream_wait", "event_loop", "thread_hop", "gil_wait",
                 "os_run_queue", "blocking")


def _server_template() -> str:
    attrs = [
        ("http.scheme", "http"), ("http.host", f"127.0.0.1:{PORT}"), ("net.host.port", PORT), ("http.flavor", "1.1"),
        ("http.target", "@Starget@"), ("http.url", "@Surl@"), ("http.method", "GET"),
        ("http.server_name", f"127.0.0.1:{PORT}"), ("http.user_agent", "python/gevent-http-client-2.6.1"),
        ("net.peer.ip", "127.0.0.1"), ("net.peer.port", "@Ipeer@"), ("http.status_code", "@Istatus@"),
        *((f"asyncprof.{a}_ms", f"@D{a}@") for a in _SERVER_ATTRS),
        ("asyncprof.hops", "@Ihops@"), ("asyncprof.queries", "@Iqueries@"), ("asyncprof.upstream_calls", "@Iupc@"),
    ]
    span = {"traceId": "@trace@", "spanId": "@span@", "name": "@name@", "kind": 2,
            "startTimeUnixNano": "@t0@", "endTimeUnixNano": "@t1@", "attributes": [_kv(k, v) for k, v in attrs],
            "status": {"code": "@code@"}, "parentSpanId": "@parent@"}
    keys = ["trace", "span", "name", "t0", "t1", "code", "parent", "Starget", "Surl", "Ipeer", "Istatus",
            *(f"D{a}" for a in _SERVER_ATTRS), "Ihops", "Iqueries", "Iupc"]
    text = _template(span, **dict.fromkeys(keys, ""))
    # string values keep their quotes: put them back around the string placeholders
    for key in ("trace", "span", "name", "parent", "Starget", "Surl"):
        text = text.replace(f"%({key})s", f'"%({key})s"')
    for key in ("t0", "t1", "Ipeer", "Istatus", "Ihops", "Iqueries", "Iupc"):
        text = text.replace(f"%({key})s", f'"%({key})s"')  # OTLP/JSON: 64-bit ints as strings
    return text


def _db_template() -> str:
    attrs = [("db.system", "postgresql"), ("db.name", "postgres"), ("db.user", "postgres"),
             ("net.peer.name", "127.0.0.1"), ("net.peer.port", 5432), ("net.transport", "ip_tcp"),
             ("db.statement", "@Sstmt@")]
    span = {"traceId": "@trace@", "spanId": "@span@", "name": "SELECT", "kind": 3,
            "startTimeUnixNano": "@t0@", "endTimeUnixNano": "@t1@", "attributes": [_kv(k, v) for k, v in attrs],
            "status": {"code": 0}, "parentSpanId": "@parent@"}
    text = _template(span, **dict.fromkeys(("trace", "span", "t0", "t1", "parent", "Sstmt"), ""))
    for key in ("trace", "span", "t0", "t1", "parent"):
        text = text.replace(f"%({key})s", f'"%({key})s"')
    return text  # Sstmt is substituted pre-encoded (orjson string)


_ASGI_SCOPE = '{"scope":{"name":"opentelemetry.instrumentation.asgi","version":"0.66b1"},"spans":['
_PG_SCOPE = '{"scope":{"name":"opentelemetry.instrumentation.asyncpg","version":"0.66b1"},"spans":['


class _SpanFile:
    """One worker's spans file: batches of up to :data:`SPAN_BATCH` spans, one OTLP/JSON line each."""

    def __init__(self, path: Path, prefix: str) -> None:
        self.f = open(path, "w", buffering=1 << 20)  # noqa: SIM115
        self.prefix = prefix
        self.order: list[str] = []  # scope keys in first-seen order of the batch
        self.scopes: dict[str, list[str]] = {}
        self.pending = 0
        self.written = 0

    def add(self, scope: str, span: str) -> None:
        if scope not in self.scopes:
            self.scopes[scope] = []
            self.order.append(scope)
        self.scopes[scope].append(span)
        self.pending += 1
        if self.pending >= SPAN_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        parts = [(_ASGI_SCOPE if s == "asgi" else _PG_SCOPE) + ",".join(self.scopes[s]) + "]}" for s in self.order]
        self.f.write(self.prefix + ",".join(parts) + "]}]}\n")
        self.written += self.pending
        self.order, self.scopes, self.pending = [], {}, 0

    def close(self) -> None:
        self.flush()
        self.f.close()


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _ms(us: int) -> float:
    return us / 1000.0


def _write_requests_spans_records(path: Path, rng: random.Random, run_id: str, pids: list[int], n: int,
                                  start: float, window_s: float, every: int, profiles: int) -> dict[str, Any]:
    server_t, db_t = _server_template(), _db_template()
    stmts = [orjson.dumps(s).decode() for s in STATEMENTS]
    spans = {pid: _SpanFile(path / "spans" / f"{pid}.jsonl", _resource_prefix(pid, run_id, rng)) for pid in pids}
    records = {pid: open(path / ACCOUNTING_DIR / f"{pid}.tsv", "w", buffering=1 << 20) for pid in pids}  # noqa: SIM115
    pending: dict[int, list[str]] = {pid: [] for pid in pids}
    for pid in pids:
        records[pid].write("\t".join(COLUMNS) + "\n")
    served = dict.fromkeys(pids, 0)
    cpu_us = dict.fromkeys(pids, 0)
    # each worker's readiness probe: a record without trace id and a server span of its own trace
    for i, pid in enumerate(pids):
        t = start - WARMUP_S - 2.0 + 0.1 * i
        wall = 40_000 + rng.randrange(20_000)
        pending[pid].append(f"\t{t:.6f}\t/health/\t{wall}\t{wall // 3}\t0\t0\t{wall // 10}\t{wall // 6}\t{wall // 50}"
                            f"\t{wall // 3}\t0\t15\t0\t0\t0\t0")
        trace, span = f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}"
        t0 = int(t * 1e9)
        spans[pid].add("asgi", server_t % _server_fields(trace, span, f"{rng.getrandbits(64):016x}", "/health/", t0,
                                                          t0 + wall * 1000, 200, rng, {"wall": wall}, 15, 0))
        served[pid] += 1
    names = [e[0] for e in ENDPOINTS]
    weights = [e[2] for e in ENDPOINTS]
    cum = [sum(weights[: i + 1]) for i in range(len(weights))]
    total = cum[-1]
    cats = list(SHARES)
    base = [SHARES[c] for c in cats]
    base_sum = sum(base)
    req_file = open(path / "requests.tsv", "w", buffering=1 << 20)  # noqa: SIM115
    req_file.write(REQUEST_LOG_HEADER)
    req_lines: list[str] = []
    profiled: list[tuple[str, float, float]] = []
    endpoint_stats: dict[str, list[float]] = {name: [0, 0, 0.0, math.inf, 0.0, 0] for name in names}
    step = window_s / n
    gauss, rand, getrandbits, exp = rng.gauss, rng.random, rng.getrandbits, math.exp
    for i in range(n):
        r = rand() * total
        k = 0
        while cum[k] < r:
            k += 1
        name, target, _, queries, median = ENDPOINTS[k]
        pid = pids[int(rand() * len(pids))]
        client_start = start + i * step + rand() * step
        latency_ms = median * exp(gauss(0.0, 0.45))
        queue_ms = min(latency_ms * 0.3, 4.2 * exp(gauss(0.0, 0.8)))
        wall = max(500, int((latency_ms - queue_ms) * 1000))
        other = 0.01 + 0.03 * rand()
        w = [b * exp(gauss(0.0, 0.3)) for b in base]
        scale = wall * (1 - other) / sum(w)
        parts = {c: int(x * scale) for c, x in zip(cats, w, strict=True)}
        error = rand() < ERROR_RATE
        status = 500 if error else 200
        trace, client_span, server_span = f"{getrandbits(128):032x}", f"{getrandbits(64):016x}", f"{getrandbits(64):016x}"
        took = client_start + queue_ms / 1000.0
        n_queries = 0 if error and rand() < 0.5 else queries
        # accounting record (COLUMNS order)
        pending[pid].append(
            f"{trace}\t{took:.6f}\t{target}\t{wall}\t{parts['cpu']}\t{parts['db_wait']}\t0\t{parts['event_loop']}"
            f"\t{parts['thread_hop']}\t{parts['gil_wait']}\t{parts['os_run_queue']}\t0\t{HOPS}\t{n_queries}\t0\t0\t0")
        if len(pending[pid]) >= RECORD_BATCH:
            records[pid].write("\n".join(pending[pid]) + "\n")
            pending[pid] = []
        served[pid] += 1
        cpu_us[pid] += parts["cpu"]
        # spans: the queries first (they end first), then the server span
        t0 = int(took * 1e9)
        t1 = t0 + wall * 1000
        db_total = parts["db_wait"] * 1000 + parts["cpu"] * 200
        q_start = t0 + (wall * 1000 - db_total) // 3
        for q in range(n_queries):
            q_len = db_total // max(1, n_queries)
            spans[pid].add("pg", db_t % {
                "trace": trace, "span": f"{getrandbits(64):016x}", "t0": q_start, "t1": q_start + q_len,
                "parent": server_span, "Sstmt": stmts[2 if q == n_queries - 1 and n_queries > 2 else q % 2]})
            q_start += q_len + 50_000
        spans[pid].add("asgi", server_t % _server_fields(
            trace, server_span, client_span, target, t0, t1, status, rng,
            {"wall": wall, **parts}, HOPS, n_queries))
        # the client's line
        nbytes = 1150 + int(rand() * 150) if not error else 145
        err_text = f"BadStatusCode('http://127.0.0.1:{PORT}{target}', code=500)" if error else ""
        req_lines.append(f"{client_start:.6f}\t{name}\t{status}\t{latency_ms:.3f}\t{nbytes}\t{trace}\t{err_text}"
                         f"\t\t{client_span}\t1\n")
        if len(req_lines) >= 4096:
            req_file.write("".join(req_lines))
            req_lines = []
        st = endpoint_stats[name]
        st[0] += 1
        st[1] += error
        st[2] += latency_ms
        st[3] = min(st[3], latency_ms)
        st[4] = max(st[4], latency_ms)
        st[5] += nbytes
        if every and len(profiled) < profiles and i % every == every // 2:
            profiled.append((trace, took, wall / 1e6))
    req_file.write("".join(req_lines))
    req_file.close()
    for pid in pids:
        if pending[pid]:
            records[pid].write("\n".join(pending[pid]) + "\n")
        records[pid].close()
        spans[pid].close()
    return {"served": served, "cpu_s": {p: cpu_us[p] / 1e6 for p in pids},
            "spans": {p: spans[p].written for p in pids}, "profiled": profiled,
            "endpoints": endpoint_stats, "window_s": window_s}


def _server_fields(trace: str, span: str, parent: str, target: str, t0: int, t1: int, status: int,
                   rng: random.Random, us: dict[str, int], hops: int, queries: int) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "trace": trace, "span": span, "name": f"GET {target}", "t0": t0, "t1": t1, "code": 2 if status >= 500 else 0,
        "parent": parent, "Starget": target, "Surl": f"http://127.0.0.1:{PORT}{target}",
        "Ipeer": 40000 + int(rng.random() * 20000), "Istatus": status, "Ihops": hops, "Iqueries": queries, "Iupc": 0,
    }
    for a in _SERVER_ATTRS:
        fields[f"D{a}"] = repr(us.get(a, 0) / 1000.0)
    return fields


# --- py-spy ----------------------------------------------------------------------------------------


_LOOP_BASE = (
    "_run_module_as_main (<frozen runpy>:198)", "_run_code (<frozen runpy>:88)", "<module> (gunicorn/__main__.py:10)",
    "run (gunicorn/app/wsgiapp.py:66)", "Application.run (gunicorn/app/base.py:236)",
    "BaseApplication.run (gunicorn/app/base.py:72)", "Arbiter.run (gunicorn/arbiter.py:247)",
    "Arbiter.manage_workers (gunicorn/arbiter.py:700)", "Arbiter.spawn_workers (gunicorn/arbiter.py:787)",
    "Arbiter.spawn_worker (gunicorn/arbiter.py:752)", "Worker.init_process (gunicorn/workers/base.py:146)",
    "UvicornWorker.run (uvicorn_worker/_workers.py:126)", "asyncio_run (uvicorn/_compat.py:30)",
    "Runner.run (asyncio/runners.py:118)", "BaseEventLoop.run_until_complete (asyncio/base_events.py:640)",
    "BaseEventLoop.run_forever (asyncio/base_events.py:607)",
)
_TASK = ("BaseEventLoop._run_once (asyncio/base_events.py:1922)", "Handle._run (asyncio/events.py:80)",
         "TimedCoroutine.send (asyncprof/worker/loop_hooks.py:70)", "TimedCoroutine._step (asyncprof/worker/loop_hooks.py:113)")
_CYCLE = ("RequestResponseCycle.run_asgi (uvicorn/protocols/http/h11_impl.py:411)",
          "ProxyHeadersMiddleware.__call__ (uvicorn/middleware/proxy_headers.py:63)",
          "OpenTelemetryMiddleware.__call__ (asgi/__init__.py:779)",
          "wrap_asgi.<locals>.application (asyncprof/worker/accounting.py:220)",
          "ASGIHandler.__call__ (django/core/handlers/asgi.py:166)")
_PROCESS = ("ASGIHandler.handle.<locals>.process_request (django/core/handlers/asgi.py:189)",
            "ASGIHandler.run_get_response (django/core/handlers/asgi.py:248)",
            "BaseHandler.get_response_async (django/core/handlers/base.py:162)",
            "convert_exception_to_response.<locals>.inner (django/core/handlers/exception.py:42)",
            "profile_middleware.<locals>.middleware (asyncprof/worker/profiling.py:57)",
            "convert_exception_to_response.<locals>.inner (django/core/handlers/exception.py:42)")
_MW = ("MiddlewareMixin.__acall__ (django/utils/deprecation.py:136)",
       "convert_exception_to_response.<locals>.inner (django/core/handlers/exception.py:42)")
_HOP = ("install_asgiref.<locals>.call (asyncprof/worker/call_hooks.py:191)", "SyncToAsync.__call__ (asgiref/sync.py:567)",
        "BaseEventLoop.run_in_executor (asyncio/base_events.py:829)")
_HOP_LEAVES = (
    ("ThreadPoolExecutor.submit (concurrent/futures/thread.py:{n})", 160, 180),
    ("ThreadPoolExecutor._adjust_thread_count (concurrent/futures/thread.py:199)", "Thread.start (threading.py:{n})", 955, 970),
    ("SyncToAsync.__init__ (asgiref/sync.py:483)", "iscoroutinefunction (inspect.py:{n})", 400, 416),
    ("_DefaultLocal.__getattr__ (asgiref/local.py:145)", "_CVar.__getattr__ (asgiref/local.py:{n})", 55, 65),
)
_VIEWS = ("seed_async (asyncprof_target/views.py:45)", "items_async (asyncprof_target/views.py:58)",
          "item_async (asyncprof_target/views.py:71)", "search_async (asyncprof_target/views.py:84)")
_VIEW_LEAVES = (
    ("_fetch_async (asyncprof_target/views.py:36)", "AsyncPGInstrumentor._do_execute (asyncpg/__init__.py:239)",
     "Connection.fetchrow (asyncpg/connection.py:775)", "_wrap_query.<locals>.query (asyncprof/worker/call_hooks.py:417)",
     "Connection._execute (asyncpg/connection.py:1904)", "Connection.__execute (asyncpg/connection.py:2003)",
     "Connection._do_execute (asyncpg/connection.py:{n})", 2050, 2070),
    ("_fetch_async (asyncprof_target/views.py:36)", "Pool.acquire (asyncpg/pool.py:{n})", 890, 905),
    ("JsonResponse.__init__ (django/http/response.py:762)", "dumps (json/__init__.py:238)",
     "JSONEncoder.encode (json/encoder.py:{n})", 195, 205),
    ("JsonResponse.__init__ (django/http/response.py:762)", "HttpResponse.content (django/http/response.py:{n})", 410, 420),
    ("render_item (asyncprof_target/views.py:{n})", 20, 30),
)
_LOOP_LEAVES = (
    ("_SelectorSocketTransport._read_ready (asyncio/selector_events.py:952)",
     "_SelectorSocketTransport._read_ready__data_received (asyncio/selector_events.py:{n})", 995, 1012),
    ("_SelectorSocketTransport._read_ready (asyncio/selector_events.py:952)",
     "_SelectorSocketTransport._read_ready__data_received (asyncio/selector_events.py:1009)",
     "H11Protocol.data_received (uvicorn/protocols/http/h11_impl.py:{n})", 180, 200),
    ("BaseSelectorEventLoop._read_from_self (asyncio/selector_events.py:{n})", 118, 126),
)
_THREAD = ("Thread._bootstrap (threading.py:1002)", "Thread._bootstrap_inner (threading.py:1045)",
           "Thread.run (threading.py:982)")
_EXEC = ("_worker (concurrent/futures/thread.py:83)", "_WorkItem.run (concurrent/futures/thread.py:58)",
         "install_asgiref.<locals>.thread_handler (asyncprof/worker/call_hooks.py:228)",
         "SyncToAsync.thread_handler (asgiref/sync.py:635)",
         "install_asgiref.<locals>.thread_handler.<locals>.timed_func (asyncprof/worker/call_hooks.py:226)",
         "SyncToAsync.__call__.<locals>.func (asgiref/sync.py:562)",
         "SyncToAsync.__call__.<locals>.func.<locals>.run_child (asgiref/sync.py:560)",
         "install_asgiref.<locals>.thread_handler.<locals>.timed_func.<locals>.timed_child (asyncprof/worker/call_hooks.py:203)")
_EXEC_LEAVES = tuple(
    (f"{site} (django/{mod}:{{n}})", lo, lo + 25) for site, mod, lo in (
        ("SecurityMiddleware.process_request", "middleware/security.py", 30),
        ("SessionMiddleware.process_request", "contrib/sessions/middleware.py", 18),
        ("CommonMiddleware.process_request", "middleware/common.py", 34),
        ("CsrfViewMiddleware.process_request", "middleware/csrf.py", 400),
        ("AuthenticationMiddleware.process_request", "contrib/auth/middleware.py", 60),
        ("MessageMiddleware.process_request", "contrib/messages/middleware.py", 10),
        ("CsrfViewMiddleware.process_view", "middleware/csrf.py", 430),
        ("XFrameOptionsMiddleware.process_response", "middleware/clickjacking.py", 25),
        ("CsrfViewMiddleware.process_response", "middleware/csrf.py", 470),
        ("SessionMiddleware.process_response", "contrib/sessions/middleware.py", 30),
        ("close_old_connections", "db/__init__.py", 55),
        ("Signal.send", "dispatch/dispatcher.py", 180),
    )
) + (
    ("_WorkItem.run (concurrent/futures/thread.py:64)", "Future.set_result (concurrent/futures/_base.py:550)",
     "Future._invoke_callbacks (concurrent/futures/_base.py:340)",
     "_chain_future.<locals>._call_set_state (asyncio/futures.py:403)",
     "install.<locals>.call_soon_threadsafe (asyncprof/worker/loop_hooks.py:{n})", 200, 210),
)
_OTEL_STACK = ("BatchProcessor.worker (_shared_internal/__init__.py:162)",
               "BatchProcessor._export (_shared_internal/__init__.py:187)",
               "CountingExporter.export (asyncprof/worker/span_counts.py:48)",
               "OtlpJsonFileExporter.export (asyncprof/worker/otlp_file.py:89)",
               "encode_request (asyncprof/worker/otlp_file.py:64)", "encode_span (asyncprof/worker/otlp_file.py:47)",
               "encode_attributes (asyncprof/worker/otlp_file.py:34)",
               "encode_attributes.<locals>.<listcomp> (asyncprof/worker/otlp_file.py:34)",
               "_value (asyncprof/worker/otlp_file.py:{n})", 20, 30)


def _leaf(rng: random.Random, spec: tuple) -> list[str]:
    *frames, lo, hi = spec
    n = rng.randint(lo, hi)
    return [f.format(n=n) if "{n}" in f else f for f in frames]


def _loop_stack(rng: random.Random) -> tuple[str, ...]:
    """One stack of a worker's loop thread, root first (after the process and thread frames)."""
    r = rng.random()
    if r < 0.015:  # the loop going idle (a GIL holder caught on its way into epoll)
        return (*_LOOP_BASE, "BaseEventLoop._run_once (asyncio/base_events.py:1884)", "EpollSelector.select (selectors.py:468)")
    if r < 0.08:
        return (*_LOOP_BASE, f"BaseEventLoop._run_once (asyncio/base_events.py:{rng.randint(1860, 1925)})")
    if r < 0.18:
        return (*_LOOP_BASE, *_TASK[:2], *_leaf(rng, rng.choice(_LOOP_LEAVES)))
    if r < 0.33:  # request setup: ASGI handler, signals, OTel middleware, hops from handle()
        head = (*_LOOP_BASE, *_TASK, *_CYCLE, f"ASGIHandler.handle (django/core/handlers/asgi.py:{rng.choice((168, 179, 233))})")
        if rng.random() < 0.5:
            return (*head, "install_asgiref.<locals>.call (asyncprof/worker/call_hooks.py:181)",
                    "SyncToAsync.__call__ (asgiref/sync.py:567)", "BaseEventLoop.run_in_executor (asyncio/base_events.py:829)",
                    *_leaf(rng, rng.choice(_HOP_LEAVES)))
        return (*head, "Signal.asend (django/dispatch/dispatcher.py:251)", f"gather (asyncio/tasks.py:{rng.randint(760, 830)})")
    depth = rng.randint(0, 7)
    head = (*_LOOP_BASE, *_TASK, *_PROCESS, *(_MW * depth))
    if depth == 7 or rng.random() < 0.35:  # in the view
        view = _VIEWS[rng.randrange(len(_VIEWS))]
        return (*head, "BaseHandler._get_response_async (django/core/handlers/base.py:253)", view,
                *_leaf(rng, rng.choice(_VIEW_LEAVES)))
    return (*head, *_HOP, *_leaf(rng, rng.choice(_HOP_LEAVES)))


def _exec_stack(rng: random.Random) -> tuple[str, ...]:
    r = rng.random()
    if r < 0.08:  # being created / torn down
        return (_THREAD[0], f"Thread._bootstrap_inner (threading.py:{rng.choice((1030, 1038, 1045))})",
                f"Thread._set_ident (threading.py:{rng.randint(1005, 1012)})")
    return (*_THREAD, *_EXEC, *_leaf(rng, rng.choice(_EXEC_LEAVES)))


def _stack_pool(rng: random.Random, make: Any, draws: int) -> tuple[list[str], list[float]]:
    """The distinct stacks of *draws* calls of *make*, and cumulative weights: how often each came up."""
    counts = Counter(";".join(make(rng)) for _ in range(draws))
    stacks = list(counts)
    cum, acc = [], 0.0
    for stack in stacks:
        acc += counts[stack]
        cum.append(acc)
    return stacks, cum


def _write_pyspy(path: Path, rng: random.Random, master: int, pids: list[int], samples: int) -> None:
    """``pyspy/samples.txt`` as py-spy ``record --format raw --subprocesses --threads`` writes it."""
    out = path / "pyspy" / "samples.txt"
    if samples <= 0:
        out.write_text("")
        return
    loop_pool, loop_cum = _stack_pool(rng, _loop_stack, STACK_DRAWS)
    exec_pool, exec_cum = _stack_pool(rng, _exec_stack, STACK_DRAWS // 4)
    otel_pool = [";".join((*_THREAD, *_OTEL_STACK[:i], _OTEL_STACK[i].format(n=n)))
                 for i in range(4, len(_OTEL_STACK) - 2) for n in (20, 26, 34)]
    otel_cum = [float(i + 1) for i in range(len(otel_pool))]
    cmd = " ".join(SERVER_COMMAND).replace("{workers}", str(len(pids)))
    master_frame = f'process {master}:"{cmd}"'
    heads = {pid: f'{master_frame};process {pid}:"{cmd}";' for pid in pids}
    otel_tid = {pid: pid + 3 + i for i, pid in enumerate(pids)}
    aggregated: Counter[tuple[int, int, int]] = Counter()  # (pid, 0 loop / 1 otel, stack index)
    choices = rng.choices
    n_loop = int(samples * 0.70)
    n_otel = int(samples * 0.05)
    n_exec = samples - n_loop - n_otel
    for pid, idx in zip(rng.choices(pids, k=n_loop), choices(range(len(loop_pool)), cum_weights=loop_cum, k=n_loop),
                        strict=True):
        aggregated[(pid, 0, idx)] += 1
    for pid, idx in zip(rng.choices(pids, k=n_otel), choices(range(len(otel_pool)), cum_weights=otel_cum, k=n_otel),
                        strict=True):
        aggregated[(pid, 1, idx)] += 1
    with open(out, "w", buffering=1 << 20) as f:
        # one short-lived executor thread per request hop site: each lives for a sample or two
        executor_no = dict.fromkeys(pids, 90)
        next_tid = max(pids) + 1000
        left = n_exec
        lines: list[str] = []
        while left > 0:
            pid = pids[int(rng.random() * len(pids))]
            k = min(left, 1 + int(rng.expovariate(1.5)))
            left -= k
            executor_no[pid] += 1
            next_tid += 1 + int(rng.random() * 3)
            thread = f"thread ({next_tid}): ThreadPoolExecutor-{executor_no[pid]}_0;"
            for idx, count in Counter(choices(range(len(exec_pool)), cum_weights=exec_cum, k=k)).items():
                lines.append(f"{heads[pid]}{thread}{exec_pool[idx]} {count}\n")
            if len(lines) >= 4096:
                f.write("".join(lines))
                lines = []
        f.write("".join(lines))
        for (pid, kind, idx), count in aggregated.items():
            if kind == 0:
                f.write(f"{heads[pid]}thread ({pid}): MainThread;{loop_pool[idx]} {count}\n")
            else:
                f.write(f"{heads[pid]}thread ({otel_tid[pid]}): OtelBatchSpanRecordProcessor;{otel_pool[idx]} {count}\n")
    from asyncprof.renderers.speedscope import write_speedscope

    write_speedscope(out, path / "pyspy" / "speedscope.json", path.name)


# --- pyinstrument ----------------------------------------------------------------------------------

_SITE = "/work/venv/lib/python3.11/site-packages/"
_STDLIB = "/root/.pyenv/versions/3.11.7/lib/python3.11/"
_STDLIB_FILES = ("asyncio/", "concurrent/", "threading.py", "selectors.py", "inspect.py", "json/", "<frozen")


def _pyi_frame(frame: str) -> str:
    """A py-spy frame ``Class.func (short/path.py:line)`` as a pyinstrument frame identifier."""
    func, _, rest = frame.partition(" (")
    short, _, line = rest.rstrip(")").rpartition(":")
    cls, _, name = func.rpartition(".") if "<locals>" not in func else ("", "", func.rpartition(".")[2])
    if short.startswith("<frozen"):
        full = short
    elif short.startswith(("asyncprof/", "asyncprof_target/")):
        full = f"/work/main/{'src' if short.startswith('asyncprof/') else 'target'}/{short}"
    elif short.startswith(_STDLIB_FILES):
        full = _STDLIB + short
    else:
        full = _SITE + short
    first = max(1, int(line) - 12) if line.isdigit() else 0
    return f"{name}\x00{full}\x00{first}" + (f"\x01c{cls}" if cls else "") + f"\x01l{line}"


def _write_profiles(path: Path, rng: random.Random, profiled: list[tuple[str, float, float]]) -> None:
    """One pyinstrument session per profiled request, named by its trace id (``asyncprof.worker.profiling``)."""
    if not profiled:
        return
    pool = [tuple(_pyi_frame(f) for f in _loop_stack(rng)) for _ in range(400)]
    thread = f"MainThread\x00<thread>\x00{140_498_509_458_304 + rng.randrange(1 << 20)}"
    start_stack = [thread, *(_pyi_frame(f) for f in (*_LOOP_BASE, *_TASK, *_PROCESS[:5]))]
    for trace, took, duration in profiled:
        records = []
        count = max(10, int(duration * 1000))
        for _ in range(min(count, 60)):
            records.append([[thread, *rng.choice(pool)], 0.001 + rng.random() * 0.00005])
        session = {
            "start_time": took, "duration": duration, "min_interval": 0.001, "max_interval": 0.001,
            "sample_count": len(records), "start_call_stack": start_stack,
            "target_description": "Profile at /work/main/src/asyncprof/worker/profiling.py:59",
            "cpu_time": duration * 0.4, "sys_path": ["/work/main", "/work/main/target", _STDLIB[:-1],
                                                      _SITE[:-1], "/work/main/src"],
            "sys_prefixes": ["/work/venv", "/root/.pyenv/versions/3.11.7"], "frame_records": records,
        }
        (path / "profiles" / f"{trace}.pyisession").write_bytes(orjson.dumps(session))


# --- the small JSON files and the manifest -----------------------------------------------------------------


def _write_json(p: Path, obj: Any) -> None:
    p.write_bytes(orjson.dumps(obj))


def _middleware() -> list[dict[str, Any]]:
    return [{"path": p, "kind": "sync_hooks", "hooks": hooks, "hops": len(hooks)} for p, hooks in MIDDLEWARE]


def _worker_info(pid: int, master: int, spans: int) -> dict[str, Any]:
    return {"pid": pid, "ppid": master, "ready_unix": BASE_UNIX - 2.5, "python": "3.11.7", "server": "gunicorn",
            "worker_class": "UvicornH11Worker", "loop": "asyncio", "http": "h11", "middleware": _middleware(),
            "spans": {"ended": spans, "written": spans, "write_failed": 0}}


def _worker_summary(pid: int, requests: int, cpu_s: float) -> dict[str, Any]:
    sites = dict.fromkeys(HOP_SITES, requests)
    sites["asyncprof_target.views.health"] = 1
    steps = requests * 28
    return {"pid": pid, "interface": "asgi", "loop": "asyncio", "ready_wait_measured": True, "schedstat": True,
            "hooks": {"asgiref": True, "psycopg2": True, "asyncpg": True, "httpx": True, "time.sleep": True},
            "thread_cpu_at_install_s": 0.327509781, "clock_read_ns": 4344.9, "requests": requests,
            "records_written": requests, "hop_sites": sites, "steps": steps,
            "steps_cpu_s": round(cpu_s * 0.6, 6), "loop_thread_cpu_s": round(cpu_s * 1.7, 6),
            "hook_cost_us_per_request": 920.0, "loop_hooks_us_per_request": 780.0}


def _write_locust_csvs(path: Path, stats: dict[str, Any]) -> None:
    head = ("Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
            "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,"
            "99.99%,100%\n")
    rows, window = [], stats["window_s"]
    for name, (n, errors, total, lo, hi, nbytes) in stats["endpoints"].items():
        if n:
            mean = total / n
            rows.append(f"GET,{name},{n},{errors},{mean:.0f},{mean},{lo},{hi},{nbytes / n},{n / window},"
                        f"{errors / window}" + f",{mean:.0f}" * 11 + "\n")
    (path / "locust" / "stats_stats.csv").write_text(head + "".join(rows))
    (path / "locust" / "stats_failures.csv").write_text("Method,Name,Error,Occurrences,First Seen,Last Seen\n")
    (path / "locust" / "stats_exceptions.csv").write_text("Count,Message,Traceback,Nodes\n")


def _manifest(run_id: str, path: Path, master: int, pids: list[int], requests: int, samples: int, profiles: int,
              start: float, end: float, stats: dict[str, Any]) -> dict[str, Any]:
    workers = len(pids)
    window_s = end - start
    config = {
        "accounting": True, "app": None, "asgi": None, "calibrate": None, "connect": "persistent", "db": "url",
        "duration": round(window_s, 3), "host": "127.0.0.1", "load_master_bind": "127.0.0.1",
        "load_master_port": None, "load_processes": 1, "load_remote_workers": 0, "locustfile": None,
        "mode": "async", "otel": True, "otlp": None, "out": str(path.parent), "paths": [], "pin": None,
        "pool_size": 10, "port": None, "profile_every": PROFILE_EVERY, "pyinstrument": True, "pyspy": True,
        "pyspy_nonblocking": True, "pyspy_rate": 20, "rate": None, "rows": 10000, "sample_traces": 1.0,
        "scenario": "seed", "settings": None, "setup": None, "spawn_rate": 50.0, "threads": None,
        "upstream_delay_ms": 20.0, "users": USERS, "view": "async", "warmup": WARMUP_S, "workers": workers,
        "wsgi": None,
    }
    command = ["/work/venv/bin/python3", "-m", "gunicorn", *SERVER_COMMAND[3:]]
    command[command.index("{workers}")] = str(workers)
    return {
        "app": None, "asyncprof_version": "0.1.0",
        "command": ["asyncprof", "record", "--mode", "async", "--duration", str(round(window_s)), "--workers",
                    str(workers), "--users", str(USERS)],
        "config": config,
        "connections": "one asyncpg pool per worker, at most 10 connections",
        "cpu_window": {
            "load_cpu_s": {"locust": round(window_s * 0.35, 2)}, "locust_cpu_s": round(window_s * 0.35, 2),
            "machine_busy_share": 0.97, "pyspy_cpu_s": round(window_s * 0.04, 2), "seconds": round(window_s, 3),
            "server_master_cpu_s": 0.0, "upstream_cpu_s": None,
            # the workers' kernel CPU: the requests' accounted CPU plus the loop and hop machinery
            "workers_cpu_s": {str(p): round(stats["cpu_s"][p] * 2.1, 2) for p in pids},
        },
        "database": {"kind": "external", "seeded": {"refilled": False, "rows": 10000},
                     "server_version": "15.20 (Debian 15.20-0+deb12u1)",
                     "url": "postgresql://postgres@127.0.0.1:5432/postgres"},
        "ended_unix": end + 2.0,
        "host": {"cpu_count": 2, "cpus_usable": 2, "loadavg_at_start": [2.1, 1.9, 1.4], "machine": "x86_64",
                 "platform": "Linux-6.18.44-x86_64-with-glibc2.36"},
        "instruments": {
            "accounting": {"enabled": True, "produced": {"record_files": workers}},
            "otel": {"enabled": True, "otlp": None, "otlp_endpoint": False, "produced": {"span_files": workers},
                     "sample_traces": 1.0},
            "pyinstrument": {"enabled": True, "every": PROFILE_EVERY, "produced": {"profiles": profiles}},
            "pyspy": {"enabled": True, "flags": ["--subprocesses", "--gil", "--idle", "--threads", "--nonblocking"],
                      "produced": {"samples_file": samples > 0, "speedscope_file": samples > 0}, "rate_hz": 20},
        },
        "load": {"distributed": False, "model": "closed", "processes": 1, "rate_rps": None, "remote_workers": 0,
                 "users": USERS},
        "pids": {"locust": master + 300, "server": master, "workers": pids},
        "pinning": None,
        "run_id": run_id,
        "server": {"command": command, "description": "gunicorn with uvicorn workers (uvicorn-worker), ASGI; asyncio "
                   "loop and h11 parser, as in the seed thread (--mode uvicorn for uvloop/httptools)",
                   "host": "127.0.0.1", "interface": "asgi", "mode": "async", "port": PORT, "threads": None},
        "started_unix": BASE_UNIX - 3.0,
        "status": "complete",
        "synthetic": {"generator": "scripts/bench_report_data.py", "requests": requests, "samples": samples,
                      "profiles": profiles},
        "versions": VERSIONS,
        "warnings": [],
        "window": {"end_unix": end, "start_unix": start},
        "workers": [_worker_info(p, master, stats["spans"][p]) for p in pids],
    }
