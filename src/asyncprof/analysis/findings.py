"""Findings: the causes of a run's latency and CPU cost in plain words, ranked, with evidence.

:func:`diagnose` is a pure function of :class:`FindingInputs` (numbers the report has already
computed).  Each :class:`Finding` has a ``share``: the fraction of the mean client latency of the
matched requests (``share_of == "latency"``) or of the workers' on-CPU samples (``"cpu"``) that
the cause accounts for; the ``detail`` says which.  Findings that make the run unfit for
conclusions (a saturated load generator, errors above 1%) have ``share_of == "validity"`` and
``share`` None, come first, and set ``valid`` False.  The rest are sorted by share.

Every threshold is a named constant below with the reason for its value.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: A cause must explain at least a tenth of the mean latency to be named: the seed trials'
#: p50 spreads by about ±10% between identical runs (README), so smaller parts are noise.
LATENCY_SHARE = 0.10
#: Same reasoning for a category's share of the workers' on-CPU samples.
CPU_SHARE = 0.10
#: Opening a connection is pure overhead with a one-line fix (persistent or pooled
#: connections), so it is worth naming from 5% of the latency on.
DB_CONNECT_SHARE = 0.05
#: With httptools the HTTP server's own code stays well under a tenth of the workers' CPU; at
#: 15% and more the parser and protocol code are among the main consumers.
HTTP_SERVER_CPU_SHARE = 0.15
#: Queueing before the server is expected whenever closed-loop users outnumber what the server
#: runs at once; it is only worth a finding when it is a quarter of the latency or more.
SERVER_QUEUE_SHARE = 0.25
#: Locust is one process: at 90% of one core it can no longer keep its users' pace (Locust
#: itself warns at 90% CPU).
LOADGEN_CORES = 0.90
#: The issue's limit: above 1% errors, latency and throughput describe failures too.
ERROR_RATE = 0.01
#: A loop thread on a CPU 80% of the time or more has little idle left: it is saturated, and
#: ready tasks wait for it.  Below that, event-loop waits come from long steps, not from load.
LOOP_BUSY = 0.80
# Sync<->async crossings per request worth naming even when their own time is small: each one
# is a thread round trip plus a return through the loop's queue, which under load waits behind
# every other request (that part is in event_loop).
HOPS_PER_REQUEST = 2.0
#: How many hop sites and top functions a finding quotes.
TOP = 5


@dataclass(frozen=True)
class FindingInputs:
    """The numbers :func:`diagnose` reads; None (or empty) where the source was missing.

    ``attribution_ms``: mean ms per request by category (summing to the mean client latency of
    the matched requests).  ``hop_sites``: sync functions that caused hops, with counts over
    ``worker_requests`` requests.  ``cpu_shares``/``cpu_top``: the py-spy profile's shares and top
    functions by category.  ``loop_busy``: fraction of a core each loop thread used.
    ``http_parser``: what the workers reported (``httptools``, ``h11``, None for gunicorn sync).
    ``locust_cores``: the load generator's CPU over the window in cores.
    """

    interface: str | None = None
    workers: int | None = None
    cpus_usable: int | None = None
    attribution_ms: Mapping[str, float] | None = None
    pool_wait_ms: float | None = None
    hops_per_request: float | None = None
    queries_per_request: float | None = None
    hop_sites: Mapping[str, int] = field(default_factory=dict)
    worker_requests: int = 0
    cpu_shares: Mapping[str, float] | None = None
    cpu_top: Mapping[str, Sequence[Mapping[str, Any]]] | None = None
    connections: str | None = None
    loop: str | None = None
    loop_busy: float | None = None
    http_parser: str | None = None
    machine_busy_share: float | None = None
    error_rate: float | None = None
    locust_cores: float | None = None
    manifest_warnings: Sequence[str] = ()

    @property
    def latency_ms(self) -> float | None:
        """Mean client latency of the matched requests (the breakdown's total), None if unknown."""
        if not self.attribution_ms:
            return None
        total = sum(self.attribution_ms.values())
        return total if total > 0 else None

    def latency_share(self, category: str) -> float | None:
        lat = self.latency_ms
        return self.attribution_ms[category] / lat if lat and self.attribution_ms else None

    def cpu_share(self, category: str) -> float | None:
        return self.cpu_shares.get(category) if self.cpu_shares else None

    def top_functions(self, category: str) -> list[str]:
        rows = (self.cpu_top or {}).get(category, ())
        return [str(r.get("function")) for r in rows[:TOP]]


@dataclass(frozen=True)
class Finding:
    """One cause: ``title``, ``detail`` (numbers, in words), ``share`` of ``share_of``, ``evidence``, ``try_``."""

    title: str
    detail: str
    share: float | None
    share_of: str
    evidence: dict[str, Any]
    try_: str

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "detail": self.detail,
            "share": None if self.share is None else round(self.share, 4),
            "share_of": self.share_of,
            "evidence": self.evidence,
            "try": self.try_,
        }


@dataclass(frozen=True)
class Diagnosis:
    """Ranked findings (validity problems first) and whether the run supports conclusions."""

    findings: list[Finding]
    valid: bool
    invalid_reasons: list[str]
    load_generator_saturated: bool


def diagnose(inp: FindingInputs) -> Diagnosis:
    """Every finding whose threshold is met, ranked; validity from the load generator and errors."""
    validity = [f for f in (_load_generator(inp), _errors(inp)) if f is not None]
    causes = [f for check in _CAUSES if (f := check(inp)) is not None]
    causes.sort(key=lambda f: -(f.share or 0.0))
    return Diagnosis(
        findings=validity + causes,
        valid=not validity,
        invalid_reasons=[f.detail for f in validity],
        load_generator_saturated=any(f.evidence.get("kind") == "load_generator" for f in validity),
    )


def _ms(inp: FindingInputs, category: str) -> float:
    return round(inp.attribution_ms[category], 3) if inp.attribution_ms else 0.0


def _of_latency(inp: FindingInputs, category: str) -> str:
    return (f"{_ms(inp, category):.1f} ms of the {inp.latency_ms or 0:.1f} ms mean client latency "
            f"({inp.latency_share(category) or 0:.0%} of latency)")


# --- validity -----------------------------------------------------------------------------------


def _load_generator(inp: FindingInputs) -> Finding | None:
    warned = [w for w in inp.manifest_warnings if "cpu" in w.lower() and ("locust" in w.lower() or "load" in w.lower())]
    busy = inp.locust_cores is not None and inp.locust_cores >= LOADGEN_CORES
    if not busy and not warned:
        return None
    why = f"used {inp.locust_cores:.0%} of a core" if busy else f"warned: {warned[0]}"
    return Finding(
        title="Load generator saturated",
        detail=f"the load generator {why}: it may not have kept its users' pace, so latency and throughput "
               "partly measure Locust, not the server (share: not applicable)",
        share=None, share_of="validity",
        evidence={"kind": "load_generator", "locust_cores": inp.locust_cores, "warnings": warned},
        try_="fewer users, or run Locust distributed (--processes) or on another machine",
    )


def _errors(inp: FindingInputs) -> Finding | None:
    if inp.error_rate is None or inp.error_rate <= ERROR_RATE:
        return None
    return Finding(
        title="Errors above 1%",
        detail=f"{inp.error_rate:.1%} of requests failed: their latency is that of failures (share: not applicable)",
        share=None, share_of="validity",
        evidence={"kind": "errors", "error_rate": inp.error_rate},
        try_="read logs/server.log and logs/locust.log; lower the load until errors stop",
    )


# --- causes -------------------------------------------------------------------------------------


def _event_loop(inp: FindingInputs) -> Finding | None:
    share = inp.latency_share("event_loop")
    if share is None or share < LATENCY_SHARE:
        return None
    busy = f"; each loop thread was on a CPU {inp.loop_busy:.0%} of the time" if inp.loop_busy is not None else ""
    saturated = inp.loop_busy is None or inp.loop_busy >= LOOP_BUSY
    cpu = ""
    if inp.cpu_shares:
        cpu = (f"; of the workers' CPU, {inp.cpu_share('event_loop') or 0:.0%} is loop machinery and "
               f"{inp.cpu_share('http_server') or 0:.0%} the HTTP server")
    return Finding(
        title="Event loop saturated" if saturated else "Requests wait for long event-loop steps",
        detail=f"requests were ready to run but waited for their worker's busy event loop: "
               f"{_of_latency(inp, 'event_loop')}{busy}{cpu}",
        share=share, share_of="latency",
        evidence={"event_loop_ms": _ms(inp, "event_loop"), "loop_busy": inp.loop_busy, "loop": inp.loop,
                  "cpu_event_loop_share": inp.cpu_share("event_loop"),
                  "cpu_http_server_share": inp.cpu_share("http_server"),
                  "top_functions": inp.top_functions("event_loop") + inp.top_functions("http_server")},
        try_="cut the CPU each request spends on the loop (see the CPU profile), move CPU-heavy work to a "
             "thread or process, or add workers up to the core count",
    )


def _thread_hops(inp: FindingInputs) -> Finding | None:
    if inp.interface != "asgi":
        return None
    lat_share, cpu_share = inp.latency_share("thread_hop"), inp.cpu_share("thread_pool")
    many = (inp.hops_per_request or 0) >= HOPS_PER_REQUEST
    if (lat_share or 0) < LATENCY_SHARE and (cpu_share or 0) < CPU_SHARE and not many:
        return None
    share_of, share = ("cpu", cpu_share) if (cpu_share or 0) > (lat_share or 0) else ("latency", lat_share)
    sites = [
        {"site": s, "count": n, "per_request": round(n / inp.worker_requests, 3) if inp.worker_requests else None}
        for s, n in sorted(inp.hop_sites.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]
    ]
    named = ", ".join(f"{s['site']} ({s['per_request']}/request)" if s["per_request"] is not None else s["site"]
                      for s in sites)
    hops = f"{inp.hops_per_request:.1f} sync<->async hops per request" if inp.hops_per_request is not None else "hops"
    parts = [hops + (f", caused by {named}" if named else "")]
    if lat_share is not None:
        parts.append(f"crossing them costs {_of_latency(inp, 'thread_hop')}, and each one returns through "
                     "the event loop's queue (that wait is in event_loop)")
    if cpu_share is not None:
        parts.append(f"thread creation, executor queues and asgiref take {cpu_share:.0%} of the workers' CPU")
    return Finding(
        title="Thread hops from sync code under ASGI",
        detail="; ".join(parts) + f" (share of {share_of})",
        share=share, share_of=share_of,
        evidence={"hops_per_request": inp.hops_per_request, "hop_sites": sites, "thread_hop_ms": _ms(inp, "thread_hop"),
                  "thread_hop_latency_share": lat_share, "cpu_thread_pool_share": cpu_share,
                  "top_functions": inp.top_functions("thread_pool")},
        try_="make the middleware async-capable (async_capable = True with an async __acall__) or drop "
             "sync-only middleware; avoid sync signal receivers and sync ORM calls in async views; "
             "or serve sync views under WSGI",
    )


def _db_connect(inp: FindingInputs) -> Finding | None:
    if not inp.attribution_ms:
        return None
    opening = _ms(inp, "db_connect") - (inp.pool_wait_ms or 0.0)
    share = opening / inp.latency_ms if inp.latency_ms else 0.0
    if share < DB_CONNECT_SHARE:
        return None
    return Finding(
        title="A new database connection per request",
        detail=f"opening database connections takes {opening:.1f} ms of the {inp.latency_ms or 0:.1f} ms mean "
               f"client latency ({share:.0%} of latency); connections: {inp.connections or 'not recorded'}",
        share=share, share_of="latency",
        evidence={"connect_ms": round(opening, 3), "connections": inp.connections,
                  "queries_per_request": inp.queries_per_request},
        try_="keep connections open (CONN_MAX_AGE under WSGI, a connection pool such as Django 5.1's "
             "psycopg pool or asyncpg's under ASGI)",
    )


def _pool_wait(inp: FindingInputs) -> Finding | None:
    lat = inp.latency_ms
    if inp.pool_wait_ms is None or not lat or inp.pool_wait_ms / lat < LATENCY_SHARE:
        return None
    share = inp.pool_wait_ms / lat
    return Finding(
        title="Waiting for a free pooled connection",
        detail=f"requests waited {inp.pool_wait_ms:.1f} ms of the {lat:.1f} ms mean client latency for a pooled "
               f"connection ({share:.0%} of latency); connections: {inp.connections or 'not recorded'}",
        share=share, share_of="latency",
        evidence={"pool_wait_ms": inp.pool_wait_ms, "connections": inp.connections},
        try_="a larger pool (--pool-size), fewer concurrent requests per worker, or shorter transactions",
    )


def _http_server(inp: FindingInputs) -> Finding | None:
    share = inp.cpu_share("http_server")
    if share is None or share < HTTP_SERVER_CPU_SHARE:
        return None
    top = inp.top_functions("http_server")
    h11 = (inp.http_parser or "").lower().startswith("h11") or any("h11" in f for f in top)
    pure = h11 or inp.interface == "wsgi"
    if inp.interface == "asgi":
        tip = ("install httptools and uvloop (uvicorn[standard]) so uvicorn parses HTTP in C and runs the loop in C"
               if h11 or inp.loop != "uvloop" else "the parser is already httptools: look at the top functions")
    else:
        tip = "gunicorn's sync worker parses HTTP in Python; more workers (up to the cores) spread it"
    return Finding(
        title="Pure-Python HTTP parsing" if pure else "HTTP server CPU",
        detail=f"the HTTP server's own code takes {share:.0%} of the workers' CPU (share of cpu); "
               f"parser: {inp.http_parser or ('gunicorn' if inp.interface == 'wsgi' else 'unknown')}, "
               f"loop: {inp.loop or 'n/a'}",
        share=share, share_of="cpu",
        evidence={"cpu_http_server_share": share, "http_parser": inp.http_parser, "loop": inp.loop,
                  "top_functions": top},
        try_=tip,
    )


def _gil(inp: FindingInputs) -> Finding | None:
    share = inp.latency_share("gil_wait")
    if share is None or share < LATENCY_SHARE:
        return None
    return Finding(
        title="GIL contention",
        detail=f"running threads waited off-CPU, outside the database and known blocking calls (mostly for the "
               f"GIL: a hop thread returning while the loop holds it; the switch interval is 5 ms): "
               f"{_of_latency(inp, 'gil_wait')}",
        share=share, share_of="latency",
        evidence={"gil_wait_ms": _ms(inp, "gil_wait"), "hops_per_request": inp.hops_per_request,
                  "interface": inp.interface},
        try_="fewer threads holding the GIL per process: fewer sync<->async hops, no CPU-heavy threads; "
             "more processes instead of threads",
    )


def _run_queue(inp: FindingInputs) -> Finding | None:
    share = inp.latency_share("os_run_queue")
    if share is None or share < LATENCY_SHARE:
        return None
    more = inp.workers is not None and inp.cpus_usable is not None and inp.workers > inp.cpus_usable
    machine = f"; the machine was {inp.machine_busy_share:.0%} busy" if inp.machine_busy_share is not None else ""
    return Finding(
        title="More workers than cores" if more else "Workers wait for a CPU",
        detail=f"runnable worker threads waited in the OS run queue: {_of_latency(inp, 'os_run_queue')}; "
               f"{inp.workers} workers on {inp.cpus_usable} usable cores{machine}",
        share=share, share_of="latency",
        evidence={"os_run_queue_ms": _ms(inp, "os_run_queue"), "workers": inp.workers,
                  "cpus_usable": inp.cpus_usable, "machine_busy_share": inp.machine_busy_share,
                  "locust_cores": inp.locust_cores},
        try_=("at most one worker per usable core (--workers)" if more else
              "the load generator and database share the cores: run them elsewhere or use fewer workers"),
    )


def _blocking(inp: FindingInputs) -> Finding | None:
    share = inp.latency_share("blocking")
    if inp.interface != "asgi" or share is None or share < LATENCY_SHARE:
        return None
    return Finding(
        title="Blocking calls on the event loop",
        detail=f"time.sleep (or another hooked blocking call) ran on the loop thread, stalling every request of "
               f"the worker: {_of_latency(inp, 'blocking')}",
        share=share, share_of="latency",
        evidence={"blocking_ms": _ms(inp, "blocking")},
        try_="await asyncio.sleep / an async client instead, or wrap the call in sync_to_async",
    )


def _server_queue(inp: FindingInputs) -> Finding | None:
    share = inp.latency_share("server_queue")
    if share is None or share < SERVER_QUEUE_SHARE:
        return None
    return Finding(
        title="Requests queue before a worker takes them",
        detail=f"between the client sending and a worker starting: {_of_latency(inp, 'server_queue')} "
               "(accept backlog, connection setup, network)",
        share=share, share_of="latency",
        evidence={"server_queue_ms": _ms(inp, "server_queue"), "workers": inp.workers},
        try_="the workers are all busy: see the capacity line for what limits them",
    )


def _unexplained(inp: FindingInputs) -> Finding | None:
    share = inp.latency_share("other")
    if share is None or abs(share) < LATENCY_SHARE:
        return None
    return Finding(
        title="Time the accounting does not explain",
        detail=f"server time outside every measured category: {_of_latency(inp, 'other')}",
        share=abs(share), share_of="latency",
        evidence={"other_ms": _ms(inp, "other")},
        try_="look for blocking I/O the hooks do not know (files, other network clients) in the pyinstrument profiles",
    )


_CAUSES = (_event_loop, _thread_hops, _db_connect, _pool_wait, _http_server, _gil, _run_queue, _blocking,
           _server_queue, _unexplained)
