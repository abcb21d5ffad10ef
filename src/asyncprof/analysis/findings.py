"""Findings: the causes of a run's latency and CPU cost in plain words, ranked, with evidence.

:func:`diagnose` is a pure function of :class:`FindingInputs` (numbers the report has already
computed).  Each :class:`Finding` has a ``share``: the fraction of the mean client latency of the
matched requests (``share_of == "latency"``) or of the workers' on-CPU samples (``"cpu"``) that
the cause accounts for; the ``detail`` says which.  Findings that make the run unfit for
conclusions (a saturated load generator, errors above 1%) have ``share_of == "validity"`` and
``share`` None, come first, and set ``valid`` False.  The rest are sorted by share.

Every threshold is a named constant below with the reason for its value.

Advice depends on the worker mode that ran (``FindingInputs.mode``, the manifest's
``server.mode``): each server has its own parser, loop and concurrency (:data:`MODE_SERVER`,
:func:`asyncprof.analysis.capacity.worker_concurrency`), so "install httptools" is said only where
uvicorn would use it, "more threads" only where there are threads.  Breakdown categories this
module does not know (a newer attribution) still get a finding when they are a large part of the
latency (:func:`_new_categories`).
"""

import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asyncprof.analysis.capacity import worker_concurrency

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

#: The HTTP server behind each worker mode (``asyncprof.modes``).
MODE_SERVER: dict[str, str] = {
    "sync": "gunicorn", "gthread": "gunicorn", "gevent": "gunicorn",
    "async": "uvicorn", "uvicorn": "uvicorn", "hypercorn": "hypercorn", "daphne": "daphne",
    "granian-asgi": "granian", "granian-wsgi": "granian",
}  # fmt: skip
#: Without a recorded mode, the server is told by the paths of the HTTP server's top functions.
_PATH_SERVER = (("(hypercorn/", "hypercorn"), ("(daphne/", "daphne"), ("(twisted/", "daphne"),
                ("(granian/", "granian"), ("(uvicorn", "uvicorn"), ("(gunicorn/", "gunicorn"))
#: Breakdown categories the findings below know; any other one is reported by _new_categories.
KNOWN_CATEGORIES = frozenset({
    "cpu", "db_wait", "db_connect", "event_loop", "thread_hop", "gil_wait", "os_run_queue", "blocking",
    "server_queue", "other", "upstream_wait",
})  # fmt: skip


@dataclass(frozen=True)
class FindingInputs:
    """The numbers :func:`diagnose` reads; None (or empty) where the source was missing.

    ``attribution_ms``: mean ms per request by category (summing to the mean client latency of
    the matched requests).  ``hop_sites``: sync functions that caused hops, with counts over
    ``worker_requests`` requests.  ``cpu_shares``/``cpu_top``: the py-spy profile's shares and top
    functions by category.  ``loop_busy``: fraction of a core each loop thread used.
    ``http_parser``: what the workers reported (``httptools``, ``h11``, None for gunicorn sync).
    ``locust_cores``: the load generator's CPU over the window in cores.  ``mode``: the worker
    mode that ran (the manifest's ``server.mode``); ``threads``: its ``server.threads``;
    ``worker_connections``: what gevent workers reported; ``users``: the closed-loop users.
    ``sync_middleware``: the middleware Django adapts under ASGI, as the workers reported them
    (:func:`asyncprof.worker.middleware_check.sync_only_middleware`: ``path``, ``kind``, ``hooks``,
    ``hops``, ``thread_with``), outermost first; ``app_packages``: the user's own top-level
    packages (dotted prefixes), whose middleware the hop finding names first.  ``faults``: the report's
    ``faults`` (workers that died, the database lost: :func:`asyncprof.analysis.summary.faults_and_errors`);
    ``errors_by_class``: its ``errors_by_class``.
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
    mode: str | None = None
    threads: int | None = None
    worker_connections: int | None = None
    users: int | None = None
    sync_middleware: Sequence[Mapping[str, Any]] = ()
    app_packages: Sequence[str] = ()
    faults: Sequence[Mapping[str, Any]] = ()
    errors_by_class: Sequence[Mapping[str, Any]] = ()

    @property
    def latency_ms(self) -> float | None:
        """Mean client latency of the matched requests (the breakdown's total), None if unknown."""
        if not self.attribution_ms:
            return None
        total = sum(self.attribution_ms.values())
        return total if total > 0 else None

    def latency_share(self, category: str) -> float | None:
        """The category's share of the latency; None without a breakdown, 0 for a category it lacks."""
        lat = self.latency_ms
        return self.attribution_ms.get(category, 0.0) / lat if lat and self.attribution_ms else None

    def cpu_share(self, category: str) -> float | None:
        return self.cpu_shares.get(category) if self.cpu_shares else None

    def top_functions(self, category: str) -> list[str]:
        rows = (self.cpu_top or {}).get(category, ())
        return [str(r.get("function")) for r in rows[:TOP]]

    @property
    def server(self) -> str | None:
        """The HTTP server that ran: ``gunicorn``, ``uvicorn``, ``hypercorn``, ``daphne``, ``granian``
        or None (a mode :data:`MODE_SERVER` does not know).  Without a mode (older runs): from the
        HTTP server's top functions, else gunicorn under WSGI and uvicorn under ASGI (the only
        servers before there were modes)."""
        if self.mode:
            return MODE_SERVER.get(self.mode)
        top = " ".join(self.top_functions("http_server"))
        for marker, server in _PATH_SERVER:
            if marker in top:
                return server
        return {"wsgi": "gunicorn", "asgi": "uvicorn"}.get(self.interface or "")

    @property
    def threaded(self) -> bool:
        """Whether a worker runs requests on several threads of its own (gthread, granian-wsgi)."""
        return self.mode in ("gthread", "granian-wsgi")

    def slots(self) -> tuple[int | None, str]:
        """(requests the server runs at once, or None if unbounded or unknown; how, in words)."""
        if self.mode is None:
            return None, "no mode recorded"
        conc = worker_concurrency(self.mode, self.interface, self.threads, self.workers, self.worker_connections)
        if conc.per_worker is None or not self.workers:
            return None, conc.text
        return self.workers * conc.per_worker, conc.text


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
    validity = [f for f in (*_faults(inp), _load_generator(inp), _errors(inp)) if f is not None]
    causes = [f for check in _CAUSES if (f := check(inp)) is not None]
    causes += _new_categories(inp)
    causes.sort(key=lambda f: -(f.share or 0.0))
    return Diagnosis(
        findings=validity + causes,
        valid=not validity,
        invalid_reasons=[f.detail for f in validity],
        load_generator_saturated=any(f.evidence.get("kind") == "load_generator" for f in validity),
    )


def _ms(inp: FindingInputs, category: str) -> float:
    return round(inp.attribution_ms.get(category, 0.0), 3) if inp.attribution_ms else 0.0


def _join(parts: Iterable[str]) -> str:
    return "; ".join(p for p in parts if p)


def _workers_vs_cores(inp: FindingInputs) -> str:
    """Advice on the worker count against the usable cores ("" when they are equal)."""
    w, c = inp.workers, inp.cpus_usable
    if w is None or c is None:
        return "add workers up to the core count (--workers)"
    if w < c:
        return f"add workers up to the core count (--workers: {w} on {c} usable cores)"
    if w > c:
        return f"no more workers than usable cores ({w} on {c}): more processes only share the same cores"
    return ""


def _uvloop(inp: FindingInputs) -> str:
    """How to run the mode's loop on uvloop, when it ran on asyncio's own loop; "" otherwise."""
    if inp.loop != "asyncio":
        return ""
    return {
        "uvicorn": "install uvloop (pip install 'asyncprof[uvicorn]'): uvicorn's --loop auto picks it",
        "granian": "install uvloop (pip install 'asyncprof[uvicorn]'): granian's --loop auto picks it",
        "hypercorn": "hypercorn runs on uvloop with --worker-class uvloop (pip install 'hypercorn[uvloop]'; "
                     "asyncprof's hypercorn mode records the asyncio worker class)",
    }.get(inp.server or "", "")


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
        try_="fewer users or a lower --rate, or more load processes (--load-processes N, or Locust workers "
             "on other machines with --load-remote-workers)",
    )


def _errors(inp: FindingInputs) -> Finding | None:
    if inp.error_rate is None or inp.error_rate <= ERROR_RATE:
        return None
    classes = ", ".join(f"{c.get('requests')} {c.get('class')}" for c in inp.errors_by_class[:TOP])
    return Finding(
        title="Errors above 1%",
        detail=f"{inp.error_rate:.1%} of requests failed{f' ({classes})' if classes else ''}: their latency is "
               "that of failures (share: not applicable)",
        share=None, share_of="validity",
        evidence={"kind": "errors", "error_rate": inp.error_rate, "errors_by_class": list(inp.errors_by_class)},
        try_="read logs/server.log and logs/locust.log; lower the load until errors stop",
    )


#: What a worker's end says, by signal, for the advice.
_SIGNAL_ADVICE = {
    "SIGKILL": "SIGKILL with nothing else in the log is usually the kernel's out-of-memory killer (dmesg or "
               "journalctl -k: 'Out of memory'; watch the workers' memory) or someone's kill -9",
    "SIGABRT": "gunicorn sends SIGABRT to a worker silent for longer than its --timeout (30 s): look for a request "
               "that blocks, or raise the timeout",
    "SIGSEGV": "a crash in C code (a driver or an extension module): run the worker under faulthandler "
               "(PYTHONFAULTHANDLER=1) to see where",
}


def _signal_number(name: str) -> str:
    """``signal 9, SIGKILL`` for ``SIGKILL``; *name* alone when it is not a signal here (``signal 34``)."""
    try:
        return f"signal {signal.Signals[name].value}, {name}"
    except KeyError:
        return name


def _faults(inp: FindingInputs) -> list[Finding]:
    """A validity finding per fault during the run: a worker that died, the database gone."""
    out = []
    for f in inp.faults:
        if f.get("kind") == "worker_died":
            out.append(_worker_died(f))
        elif f.get("kind") == "database_lost":
            out.append(_database_lost(f))
    return out


def _at(f: Mapping[str, Any]) -> str:
    t = f.get("t_s")
    if not isinstance(t, (int, float)):
        return "during the run"
    return f"{t:.1f} s into the measured window" if t >= 0 else f"{-t:.1f} s before the measured window"


def _worker_died(f: Mapping[str, Any]) -> Finding:
    pid, new, sig, code = f.get("pid"), f.get("replaced_by"), f.get("signal"), f.get("exit_code")
    how = _signal_number(sig) if sig else f"exit code {code}" if code is not None else \
        "cause not in the server log"
    parts = [f"worker PID {pid} died mid-run ({how}) {_at(f)}"]
    if new is not None:
        after = f.get("replacement_after_s")
        parts[0] += f" and was replaced by PID {new}" + (f", ready {after:.1f} s later" if after is not None else "")
    elif f.get("t_s") is not None:  # seen by the recorder, which would have seen a replacement
        parts[0] += " and was not replaced while the run went on"
    failed = f.get("failed_requests")
    if failed is not None:
        t = f.get("t_s")
        parts.append(f"{failed} request{'s' if failed != 1 else ''} failed around "
                     f"{t:.1f} s" if isinstance(t, (int, float)) else f"{failed} requests failed")
        if not failed:
            parts[-1] += (" (Locust's HTTP client, geventhttpclient, sends a GET again on a new connection when "
                          "one closes before the answer: the requests the worker held were answered late, not lost)")
    if f.get("gap_throughput_rps") is not None and f.get("other_throughput_rps") is not None:
        parts.append(f"throughput while it was missing: {f['gap_throughput_rps']:.0f} req/s against "
                     f"{f['other_throughput_rps']:.0f} the rest of the window")
    advice = _SIGNAL_ADVICE.get(str(sig), "read logs/server.log around that time for why it ended")
    return Finding(
        title=f"Worker {pid} died mid-run",
        detail="; ".join(parts) + ": the window's throughput and latency include the gap (share: not applicable)",
        share=None, share_of="validity",
        evidence={"kind": "worker_died", **{k: f.get(k) for k in (
            "pid", "signal", "exit_code", "replaced_by", "t_s", "replacement_after_s", "failed_requests", "gap_s",
            "gap_throughput_rps", "other_throughput_rps")}},
        try_=f"{advice}; then record again for numbers without the gap",
    )


def _database_lost(f: Mapping[str, Any]) -> Finding:
    failed, after = f.get("failed_requests"), f.get("requests_after")
    of = f" of the {after} requests from then on" if isinstance(after, int) else ""
    return Finding(
        title="Database unavailable mid-run",
        detail=f"the database stopped {_at(f)} ({f.get('detail') or 'no detail'}): {failed}{of} failed as "
               "'database unavailable' (share: not applicable)",
        share=None, share_of="validity",
        evidence={"kind": "database_lost", **{k: f.get(k) for k in ("t_s", "detail", "failed_requests",
                                                                    "requests_after")}},
        try_="find why it stopped (the embedded server's log is the log file in its data directory, "
             "$ASYNCPROF_PGDATA; an external server's own log), then record again: asyncprof stops a run "
             "whose database is gone",
    )


# --- causes -------------------------------------------------------------------------------------


def _event_loop(inp: FindingInputs) -> Finding | None:
    share = inp.latency_share("event_loop")
    if share is None or share < LATENCY_SHARE:
        return None
    gevent = inp.mode == "gevent"
    loop_name = "gevent hub" if gevent else "event loop"
    busy = f"; each loop thread was on a CPU {inp.loop_busy:.0%} of the time" if inp.loop_busy is not None else ""
    saturated = inp.loop_busy is None or inp.loop_busy >= LOOP_BUSY
    cpu = ""
    if inp.cpu_shares:
        cpu = (f"; of the workers' CPU, {inp.cpu_share('event_loop') or 0:.0%} is loop machinery and "
               f"{inp.cpu_share('http_server') or 0:.0%} the HTTP server")
    if gevent:
        first = ("cut the CPU each request spends between cooperative waits (see the CPU profile): a greenlet that "
                 "computes without yielding holds up every other greenlet of its worker; move CPU-heavy work to a "
                 "process")
    else:
        first = ("cut the CPU each request spends on the loop (see the CPU profile), move CPU-heavy work to a "
                 "thread or process")
    return Finding(
        title="Event loop saturated" if saturated else "Requests wait for long event-loop steps",
        detail=f"requests were ready to run but waited for their worker's busy {loop_name}: "
               f"{_of_latency(inp, 'event_loop')}{busy}{cpu}",
        share=share, share_of="latency",
        evidence={"event_loop_ms": _ms(inp, "event_loop"), "loop_busy": inp.loop_busy, "loop": inp.loop,
                  "mode": inp.mode, "cpu_event_loop_share": inp.cpu_share("event_loop"),
                  "cpu_http_server_share": inp.cpu_share("http_server"),
                  "top_functions": inp.top_functions("event_loop") + inp.top_functions("http_server")},
        try_=_join((first, _workers_vs_cores(inp), _uvloop(inp))),
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
    culprits = _hop_middleware(inp)
    parts = [_middleware_sentence(m) for m in culprits]
    parts.append(hops + (f", caused by {named}" if named else ""))
    if lat_share is not None:
        parts.append(f"crossing them costs {_of_latency(inp, 'thread_hop')}, and each one returns through "
                     "the event loop's queue (that wait is in event_loop)")
    if cpu_share is not None:
        parts.append(f"thread creation, executor queues and asgiref take {cpu_share:.0%} of the workers' CPU")
    evidence: dict[str, Any] = {
        "hops_per_request": inp.hops_per_request, "hop_sites": sites, "thread_hop_ms": _ms(inp, "thread_hop"),
        "thread_hop_latency_share": lat_share, "cpu_thread_pool_share": cpu_share,
        "top_functions": inp.top_functions("thread_pool"),
    }
    if culprits:  # absent without the workers' report, so older runs read as before
        evidence["sync_middleware"] = culprits
    generic = ("make the middleware async-capable (async_capable = True with an async __acall__) or drop "
               "sync-only middleware; avoid sync signal receivers and sync ORM calls in async views; "
               "or serve sync views under WSGI (--mode sync, gthread or gevent)")
    return Finding(
        title="Thread hops from sync code under ASGI",
        detail="; ".join(parts) + f" (share of {share_of})",
        share=share, share_of=share_of,
        evidence=evidence,
        try_=_join((*(_middleware_fix(m) for m in culprits if m["yours"]), generic)),
    )


def _in_packages(path: str, packages: Sequence[str]) -> bool:
    """Whether the dotted *path* lies in one of *packages* (``catalog`` holds ``catalog.middleware.X``)."""
    return any(path == p or path.startswith(p + ".") for p in (q.strip().strip(".") for q in packages) if p)


def _short_middleware(path: str) -> str:
    """Django's own middleware by class name (as the hop sites name it), the rest by full path."""
    return path.rsplit(".", 1)[-1] if path.startswith("django.") else path


def _hop_middleware(inp: FindingInputs) -> list[dict[str, Any]]:
    """The reported middleware worth naming, the user's own first, each with ``yours`` set.

    Named: every sync-only middleware (Django runs it in a thread), and the user's own whose sync
    hooks cross on every request.  Django's stock middleware with sync hooks is left to the hop
    sites, which already name it (``CommonMiddleware.process_request``).
    """
    yours: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    seen: set[str] = set()
    for m in inp.sync_middleware:
        path, kind = m.get("path"), m.get("kind")
        if not isinstance(path, str) or path in seen:
            continue
        seen.add(path)
        mine = _in_packages(path, inp.app_packages)
        hops = m.get("hops") if isinstance(m.get("hops"), int) else None
        if kind == "sync_only" or (kind == "sync_hooks" and mine and hops):
            entry = {"path": path, "kind": kind, "hooks": [str(h) for h in m.get("hooks") or ()], "hops": hops,
                     "thread_with": [str(p) for p in m.get("thread_with") or ()], "yours": mine}
            (yours if mine else others).append(entry)
    return yours + others


def _middleware_sentence(m: Mapping[str, Any]) -> str:
    """One middleware's part of the detail: what Django does with it, and the hops it costs."""
    owner = "your middleware" if m["yours"] else "middleware"
    hops = f"{m['hops']} hop{'s' if m['hops'] != 1 else ''} per request" if m["hops"] is not None else None
    if m["kind"] == "sync_only":
        along = [_short_middleware(p) for p in m["thread_with"]]
        extra = [x for x in (hops, f"{', '.join(along)} run in that thread too" if along else None) if x]
        return (f"{owner} {m['path']} is sync-only: Django runs it in a thread on every request"
                + (f" ({'; '.join(extra)})" if extra else ""))
    return (f"{owner} {m['path']} runs its sync {', '.join(m['hooks'])} in a thread on every request"
            + (f" ({hops})" if hops else ""))


def _middleware_fix(m: Mapping[str, Any]) -> str:
    """What to change in one of the user's own middleware."""
    if m["kind"] == "sync_only":
        return (f"make {m['path']} async-capable (async_capable = True and an async __call__/__acall__, or "
                "django.utils.decorators.sync_and_async_middleware) or remove it")
    return (f"move the work of {m['path']}'s {', '.join(m['hooks'])} into an async __acall__ (MiddlewareMixin "
            f"runs sync hooks through sync_to_async) or drop {'it' if len(m['hooks']) == 1 else 'them'}")


def _db_connect(inp: FindingInputs) -> Finding | None:
    if not inp.attribution_ms:
        return None
    opening = _ms(inp, "db_connect") - (inp.pool_wait_ms or 0.0)
    share = opening / inp.latency_ms if inp.latency_ms else 0.0
    if share < DB_CONNECT_SHARE:
        return None
    if inp.interface == "asgi":
        tip = ("keep connections open: a connection pool (asyncpg's, or Django 5.1's psycopg pool for the ORM) "
               "instead of a connection per request (asyncprof's target: --connect persistent)")
    elif inp.mode == "gevent":
        tip = ("keep connections open: Django keeps one per greenlet with CONN_MAX_AGE, i.e. one per open client "
               "connection under gevent, so bound them with a pool (PgBouncer, or Django 5.1's psycopg pool) "
               "(asyncprof's target: --connect persistent)")
    elif inp.interface == "wsgi":
        tip = ("keep connections open: CONN_MAX_AGE keeps one per worker thread (asyncprof's target: "
               "--connect persistent)")
    else:
        tip = ("keep connections open (CONN_MAX_AGE under WSGI, a connection pool such as Django 5.1's "
               "psycopg pool or asyncpg's under ASGI)")
    return Finding(
        title="A new database connection per request",
        detail=f"opening database connections takes {opening:.1f} ms of the {inp.latency_ms or 0:.1f} ms mean "
               f"client latency ({share:.0%} of latency); connections: {inp.connections or 'not recorded'}",
        share=share, share_of="latency",
        evidence={"connect_ms": round(opening, 3), "connections": inp.connections,
                  "queries_per_request": inp.queries_per_request},
        try_=tip,
    )


def _pool_wait(inp: FindingInputs) -> Finding | None:
    lat = inp.latency_ms
    if inp.pool_wait_ms is None or not lat or inp.pool_wait_ms / lat < LATENCY_SHARE:
        return None
    share = inp.pool_wait_ms / lat
    size = "a larger pool (--pool-size for asyncprof's asyncpg pool)" if inp.interface == "asgi" else "a larger pool"
    return Finding(
        title="Waiting for a free pooled connection",
        detail=f"requests waited {inp.pool_wait_ms:.1f} ms of the {lat:.1f} ms mean client latency for a pooled "
               f"connection ({share:.0%} of latency); connections: {inp.connections or 'not recorded'}",
        share=share, share_of="latency",
        evidence={"pool_wait_ms": inp.pool_wait_ms, "connections": inp.connections},
        try_=f"{size}, fewer concurrent requests per worker, or shorter transactions",
    )


def _http_server(inp: FindingInputs) -> Finding | None:
    share = inp.cpu_share("http_server")
    if share is None or share < HTTP_SERVER_CPU_SHARE:
        return None
    top = inp.top_functions("http_server")
    server = inp.server
    parser = (inp.http_parser or "").lower()
    h11 = parser.startswith("h11") or any("(h11/" in f or "/h11_impl.py" in f for f in top)
    pure, parser_name, tip = _parser_advice(inp, server, h11)
    return Finding(
        title="Pure-Python HTTP parsing" if pure else "HTTP server CPU",
        detail=f"the HTTP server's own code takes {share:.0%} of the workers' CPU (share of cpu); "
               f"server: {server or 'unknown'}, parser: {inp.http_parser or parser_name}, loop: {inp.loop or 'n/a'}",
        share=share, share_of="cpu",
        evidence={"cpu_http_server_share": share, "server": server, "mode": inp.mode, "http_parser": inp.http_parser,
                  "loop": inp.loop, "top_functions": top},
        try_=tip,
    )


def _parser_advice(inp: FindingInputs, server: str | None, h11: bool) -> tuple[bool, str, str]:
    """(pure-Python parser?, the parser's name when the workers did not say, advice) for *server*."""
    compare = "compare with --mode uvicorn with httptools (pip install 'asyncprof[uvicorn]') or --mode granian-asgi " \
              "(HTTP parsed in Rust)"
    if server == "uvicorn":
        missing = {name: what for name, what, absent in (
            ("httptools", "HTTP is parsed in C", h11), ("uvloop", "the loop runs in C", inp.loop == "asyncio"),
        ) if absent}
        if missing:
            return h11, "unknown", (f"install {' and '.join(missing)} (pip install 'asyncprof[uvicorn]', what "
                                    f"uvicorn[standard] adds): uvicorn's --http auto / --loop auto pick them, so "
                                    f"{' and '.join(missing.values())}")
        return False, "httptools", ("uvicorn already parses with httptools" + (" on uvloop" if inp.loop == "uvloop"
                                                                               else "")
                                    + ": look at the top functions (uvicorn's protocol code), or compare with "
                                    "--mode granian-asgi (HTTP parsed in Rust)")
    if server == "hypercorn":
        return True, "h11", f"h11 is hypercorn's HTTP/1.1 parser (pure Python; hypercorn has no C parser): {compare}"
    if server == "daphne":
        return True, "twisted.web", ("daphne parses HTTP with Twisted's twisted.web (pure Python; no C parser): "
                                     + compare)
    if server == "granian":
        return False, "granian (Rust)", ("granian parses HTTP in Rust: this is its Python side (the per-request "
                                         "callback wrapper and task scheduling): see the top functions")
    if server == "gunicorn":
        kind = {"sync": "sync", "gthread": "gthread", "gevent": "gevent"}.get(inp.mode or "", "")
        worker = f"gunicorn's {kind} workers parse" if kind else "gunicorn parses"
        spread = ""
        if inp.workers is not None and inp.cpus_usable is not None and inp.workers < inp.cpus_usable:
            spread = f"more workers spread it (--workers: {inp.workers} on {inp.cpus_usable} usable cores)"
        return True, "gunicorn (Python)", _join((
            f"{worker} HTTP in Python unless the gunicorn-h1c C parser is installed (pip install "
            "gunicorn-h1c; gunicorn 25+ picks it with --http-parser auto), or compare with --mode granian-wsgi "
            "(HTTP parsed in Rust)",
            spread,
        ))
    if inp.interface == "asgi" and h11:
        return True, "h11", "h11 parses HTTP in pure Python: a server with a C or Rust parser (uvicorn with " \
                            "httptools, granian) spends less"
    return False, "unknown", "look at the top functions of the HTTP server"


def _gil(inp: FindingInputs) -> Finding | None:
    share = inp.latency_share("gil_wait")
    if share is None or share < LATENCY_SHARE:
        return None
    if inp.threaded:
        threads = f"the {inp.threads} threads" if inp.threads else "the threads"
        tip = (f"{threads} of each worker share one GIL: fewer --threads and more --workers (up to the usable "
               "cores); or --mode gevent when requests mostly wait on I/O")
    elif inp.interface == "asgi":
        tip = ("fewer threads holding the GIL per process: fewer sync<->async hops (each puts a second thread on "
               "the GIL), no CPU-heavy threads; more processes instead of threads")
    elif inp.interface == "wsgi":
        tip = ("a worker runs its requests on one thread here, so the other GIL holders are background threads "
               "(the span exporter, the profiler): run with fewer instruments (--no-otel, --no-pyinstrument) "
               "to compare")
    else:
        tip = ("fewer threads holding the GIL per process: fewer sync<->async hops, no CPU-heavy threads; "
               "more processes instead of threads")
    return Finding(
        title="GIL contention",
        detail=f"running threads waited off-CPU, outside the database and known blocking calls (mostly for the "
               f"GIL: a hop thread returning while the loop holds it; the switch interval is 5 ms): "
               f"{_of_latency(inp, 'gil_wait')}",
        share=share, share_of="latency",
        evidence={"gil_wait_ms": _ms(inp, "gil_wait"), "hops_per_request": inp.hops_per_request,
                  "interface": inp.interface, "mode": inp.mode, "threads": inp.threads},
        try_=tip,
    )


def _run_queue(inp: FindingInputs) -> Finding | None:
    share = inp.latency_share("os_run_queue")
    if share is None or share < LATENCY_SHARE:
        return None
    more = inp.workers is not None and inp.cpus_usable is not None and inp.workers > inp.cpus_usable
    machine = f"; the machine was {inp.machine_busy_share:.0%} busy" if inp.machine_busy_share is not None else ""
    threads = f" × {inp.threads} threads" if inp.threaded and inp.threads else ""
    if more:
        tip = "at most one worker per usable core (--workers)"
    else:
        tip = "the load generator and database share the cores: run them elsewhere or use fewer workers"
    if threads:
        tip += "; threads of one worker share its GIL, so more threads add no CPU, only runnable threads"
    return Finding(
        title="More workers than cores" if more else "Workers wait for a CPU",
        detail=f"runnable worker threads waited in the OS run queue: {_of_latency(inp, 'os_run_queue')}; "
               f"{inp.workers} workers{threads} on {inp.cpus_usable} usable cores{machine}",
        share=share, share_of="latency",
        evidence={"os_run_queue_ms": _ms(inp, "os_run_queue"), "workers": inp.workers, "threads": inp.threads,
                  "cpus_usable": inp.cpus_usable, "machine_busy_share": inp.machine_busy_share,
                  "locust_cores": inp.locust_cores},
        try_=tip,
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
    slots, how = inp.slots()
    waiting = ""
    if slots is not None and inp.users:
        waiting = f"; {inp.users} users for {slots} request slots ({inp.workers} workers, {how})"
        if inp.users > slots:
            waiting += f": about {inp.users - slots} wait for a free slot at any time"
    return Finding(
        title="Requests queue before a worker takes them",
        detail=f"between the client sending and a worker starting: {_of_latency(inp, 'server_queue')} "
               f"(accept backlog, connection setup, network){waiting}",
        share=share, share_of="latency",
        evidence={"server_queue_ms": _ms(inp, "server_queue"), "workers": inp.workers, "request_slots": slots,
                  "concurrency": how, "users": inp.users, "mode": inp.mode},
        try_=_server_queue_advice(inp, slots),
    )


def _server_queue_advice(inp: FindingInputs, slots: int | None) -> str:
    see = "see the capacity line for what limits them"
    if inp.mode == "gevent":
        return ("a gevent worker accepts up to worker_connections at once, so requests did not wait for a slot "
                "but for a busy hub to accept and read them (see event_loop and the CPU profile): less CPU per "
                "request, workers up to the usable cores")
    if inp.interface == "asgi" and slots is None:
        return ("ASGI workers accept every connection, so requests did not wait for a slot but for a busy loop to "
                "accept and read them (see event_loop and the CPU profile): less CPU per request, workers up to "
                "the usable cores")
    if slots is not None and inp.users and inp.users <= slots:
        return (f"the {slots} request slots outnumber the {inp.users} users, so requests did not wait for a free "
                "worker but to be accepted and handed to one: a busy machine (see os_run_queue) or a busy accept "
                f"path; {see}")
    if inp.mode == "sync":
        return (f"each sync worker serves one request at a time, so users beyond the workers wait for one: "
                f"--mode gthread (--threads) or gevent serve several at once per worker, more --workers if CPU is "
                f"left; {see}")
    if inp.threaded:
        return (f"every worker thread was busy: more --threads when requests mostly wait on I/O (one GIL per "
                f"worker: CPU-bound work gains nothing), more --workers if CPU is left; {see}")
    return f"the workers are all busy: {see}"


def _upstream_wait(inp: FindingInputs) -> Finding | None:
    share = inp.latency_share("upstream_wait")
    if share is None or share < LATENCY_SHARE:
        return None
    if inp.interface == "asgi":
        tip = ("an async HTTP client (httpx.AsyncClient, aiohttp) shared per worker so connections are reused, "
               "timeouts on every call, independent calls concurrently (asyncio.gather), cached responses")
    else:
        slots, how = inp.slots()
        held = f" ({how})" if slots is not None else ""
        tip = ("reuse connections (one requests.Session / httpx.Client per thread), timeouts on every call, cached "
               f"responses; the request holds its worker slot for the whole wait{held}")
        if inp.mode == "sync":
            tip += ", so --mode gthread or gevent overlap the waits"
    return Finding(
        title="Waiting for other HTTP services",
        detail=f"requests waited for responses from other HTTP services: {_of_latency(inp, 'upstream_wait')}",
        share=share, share_of="latency",
        evidence={"upstream_wait_ms": _ms(inp, "upstream_wait"), "mode": inp.mode},
        try_=tip,
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
        try_="look for blocking I/O the hooks do not know (files, network clients they do not wrap) in the "
             "pyinstrument profiles",
    )


def _new_categories(inp: FindingInputs) -> list[Finding]:
    """A finding for each breakdown category not in :data:`KNOWN_CATEGORIES` above the latency threshold."""
    out = []
    for category in (inp.attribution_ms or {}):
        share = inp.latency_share(category)
        if category in KNOWN_CATEGORIES or share is None or share < LATENCY_SHARE:
            continue
        out.append(Finding(
            title=f"Time in {category}",
            detail=f"requests spent {_of_latency(inp, category)} in {category}",
            share=share, share_of="latency",
            evidence={f"{category}_ms": _ms(inp, category)},
            try_=f"see what {category} measures in asyncprof.analysis.attribution; these findings have no "
                 "specific advice for it yet",
        ))
    return out


_CAUSES: tuple[Callable[[FindingInputs], Finding | None], ...] = (
    _event_loop, _thread_hops, _db_connect, _pool_wait, _http_server, _gil, _run_queue, _blocking, _server_queue,
    _upstream_wait, _unexplained,
)
