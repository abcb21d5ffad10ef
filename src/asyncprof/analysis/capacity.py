"""The capacity check: how much throughput the measured CPU cost allows, and what saturates first.

Inputs are plain values (see :class:`CapacityInputs`), so the arithmetic is testable without a
run directory:

* ``cpu_ms_per_request`` = the workers' CPU over the window (kernel accounting: the manifest's
  ``cpu_window.workers_cpu_s``, all threads of every worker, summed) / requests in the window ×
  1000.  Everything a worker burns counts: the request's own code, the HTTP server, the loop,
  thread creation, our instruments.
* Limits, in requests per second, each an upper bound on what this configuration can serve:
  ``cpu`` = usable cores × 1000 / ``cpu_ms_per_request``;
  ``event_loop`` (ASGI) = workers × 1000 / loop-thread CPU ms per request, since each worker's
  loop runs on one thread and a thread uses at most one core;
  ``workers`` = request slots × 1000 / mean server wall ms (Little's law: a slot holds a request
  for its wall time), where request slots = workers × the mode's requests in flight per worker
  (:func:`worker_concurrency`): 1 for gunicorn sync workers, ``--threads`` for gthread and
  granian-wsgi, ``worker_connections`` (gunicorn's default 1000) greenlets for gevent, granian's
  backpressure (backlog 1024 / workers) for granian-asgi; none for the other ASGI servers, whose
  loops accept every connection (no ``workers`` limit then).  A run without a recorded mode is
  taken as gunicorn sync workers under WSGI.  Little's law checks the assumption: when the
  measured requests in flight per worker (req/s × wall ms / 1000 / workers) exceed it by more
  than :data:`IN_FLIGHT_TOLERANCE`, the workers served more at once than assumed, and the limit
  is left out with a note.
* ``predicted_max_rps`` = the smaller of the CPU-cost limits (``cpu``, ``event_loop``): what the
  CPU cost alone allows.  ``utilisation`` = measured / predicted.
* ``bottleneck``: the first of these that holds — the load generator was saturated (then nothing
  else can be concluded); a limit is ≥ :data:`SATURATED` used (the most used one wins); the
  machine's CPUs were busy; pooled-connection waits are a large part of the latency; thread
  hops are the largest server-side part under ASGI; else ``none/unknown``, with the closed-loop
  bound users × 1000 / mean latency in the reason, and, when the users outnumber the request
  slots, how many of them wait for a slot at any time.
* ``cpu_check``: ``cpu_ms_per_request`` × measured rps against the workers' measured cores
  (the issue's 15% check; equal by construction up to the client window vs the kernel window and
  requests that never reached a worker), and the same for the CPU the in-worker accounting
  attributed to requests (the stricter check: how much of the workers' CPU the records explain).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asyncprof.modes import MODES

#: A limit is called saturated at 85% use: closed-loop load with queueing rarely gets nearer to
#: an ideal limit, because the other processes on the machine (Locust, PostgreSQL, py-spy) and
#: scheduling take their part.
SATURATED = 0.85
#: The machine's CPUs count as saturated at 90% busy (all CPUs, every process, from /proc/stat).
MACHINE_BUSY = 0.90
#: Waiting for a pooled connection above 10% of the mean latency means the pool is too small
#: for the concurrency (below that it is within run-to-run noise of the trials).
POOL_WAIT_SHARE = 0.10
#: Thread hops above 10% of the mean latency, and the largest server part: the sync<->async
#: bridge (asgiref's thread-sensitive executor) limits the request rate.
THREAD_HOP_SHARE = 0.10
#: The measured-vs-predicted CPU agreement the issue asks for.
CPU_CHECK_TOLERANCE = 0.15
#: Little's law check of the assumed requests in flight per worker: the measured mean (req/s ×
#: server wall time / workers) may exceed it by this much before the assumption counts as wrong
#: (the client's window and the workers' wall time differ by the requests at the window's edges).
IN_FLIGHT_TOLERANCE = 0.15
#: gunicorn's default ``worker_connections``: the most connections, so requests, one gevent worker
#: serves at once (a greenlet each).
GEVENT_WORKER_CONNECTIONS = 1000
#: granian's default ``--backlog``; its default ``--backpressure`` (requests one worker serves at
#: once) is backlog // workers.
GRANIAN_BACKLOG = 1024
#: Modes whose ASGI workers accept every connection and serve all of them at once.
_UNBOUNDED_ASGI = {"async": "uvicorn", "uvicorn": "uvicorn", "hypercorn": "hypercorn", "daphne": "daphne"}


@dataclass(frozen=True)
class Concurrency:
    """Requests one worker process serves at once under a mode: ``per_worker`` (None: no bound)
    and, in words, ``text``."""

    per_worker: int | None
    text: str


def worker_concurrency(mode: str | None, interface: str | None, threads: int | None = None,
                       workers: int | None = None, worker_connections: int | None = None) -> Concurrency:
    """How many requests one worker of *mode* has in flight at most (see the module docstring).

    *threads* is the manifest's ``server.threads`` (the mode's default when None),
    *worker_connections* what a gevent worker reported (gunicorn's default when None).  A run
    without a mode (recorded before there were modes other than sync and async) is read by its
    interface: WSGI was gunicorn's sync worker.
    """
    default_threads = MODES[mode].default_threads if mode in MODES else None
    t = threads or default_threads
    if mode == "sync":
        return Concurrency(1, "gunicorn sync worker: one request at a time")
    if mode is None and interface == "wsgi":
        return Concurrency(1, "one request at a time: no mode recorded, taken as gunicorn sync workers")
    if mode == "gthread" and t:
        return Concurrency(t, f"{t} threads per gunicorn gthread worker")
    if mode == "granian-wsgi" and t:
        backpressure = max(1, GRANIAN_BACKLOG // workers) if workers else None
        per = min(t, backpressure) if backpressure else t
        return Concurrency(per, f"{t} blocking threads per granian WSGI worker")
    if mode == "gevent":
        wc = worker_connections or GEVENT_WORKER_CONNECTIONS
        return Concurrency(wc, f"up to {wc} greenlets per gunicorn gevent worker (worker_connections)")
    if mode == "granian-asgi":
        if not workers:
            return Concurrency(None, "granian's backpressure (backlog / workers) per ASGI worker")
        bp = max(1, GRANIAN_BACKLOG // workers)
        return Concurrency(bp, f"up to {bp} requests per granian ASGI worker (backpressure = backlog "
                               f"{GRANIAN_BACKLOG} / {workers} workers)")
    if mode in _UNBOUNDED_ASGI or (mode is None and interface == "asgi"):
        server = _UNBOUNDED_ASGI.get(mode or "async")
        return Concurrency(None, f"no bound: each {server} worker's event loop accepts every connection")
    if interface == "wsgi" and t:
        return Concurrency(t, f"{t} threads per worker")
    return Concurrency(None, f"unknown for mode {mode!r}" if mode else "unknown (no mode or interface recorded)")


@dataclass(frozen=True)
class CapacityInputs:
    """What the check needs; None where a source was missing.

    ``workers_cpu_s``: per-worker CPU seconds over ``cpu_seconds`` (values may be None for a
    worker gone before the window ended).  ``attribution_ms``: the mean breakdown per request
    (``analysis.attribution``), ``pool_wait_ms`` and ``wall_ms`` its companions.
    ``loop_thread_cpu_s``/``worker_requests``: the worker summaries' loop-thread CPU and the
    requests they served over the same (whole-life) period.  ``mode``/``threads``: the
    manifest's ``server.mode`` and ``server.threads``; ``worker_connections``: what gevent workers
    reported (they set how many requests a worker serves at once, :func:`worker_concurrency`).
    """

    interface: str | None
    workers: int | None
    users: int | None
    cpus_usable: int | None
    requests: int
    measured_rps: float | None
    workers_cpu_s: Mapping[str, float | None] | None
    cpu_seconds: float | None
    machine_busy_share: float | None
    attribution_ms: Mapping[str, float] | None
    pool_wait_ms: float | None
    wall_ms: float | None
    loop_thread_cpu_s: float | None
    worker_requests: int
    latency_mean_ms: float | None
    load_generator_saturated: bool
    mode: str | None = None
    threads: int | None = None
    worker_connections: int | None = None


def assess_capacity(inp: CapacityInputs) -> dict[str, Any]:
    """The ``capacity`` block of the report (see the module docstring); never raises on missing data.

    Keys: ``cpu_ms_per_request``, ``accounted_cpu_ms_per_request``, ``loop_cpu_ms_per_request``,
    ``cpus_usable``, ``workers``, ``concurrency_per_worker`` (None: no bound), ``request_slots``
    (workers × that), ``concurrency`` (in words), ``in_flight_per_worker`` (measured: req/s × server
    wall time / workers), ``limits_rps`` {``cpu``, ``event_loop``, ``workers``},
    ``predicted_max_rps``, ``measured_rps``, ``utilisation``, ``machine_busy_share``,
    ``cpu_check`` {...}, ``bottleneck``, ``reason``, ``notes`` [str].
    """
    notes: list[str] = []
    workers_cpu = _workers_cpu(inp.workers_cpu_s, notes)
    cpu_ms = workers_cpu * 1000 / inp.requests if workers_cpu is not None and inp.requests else None
    accounted = inp.attribution_ms.get("cpu") if inp.attribution_ms else None
    loop_ms = None
    if inp.interface == "asgi" and inp.loop_thread_cpu_s is not None and inp.worker_requests:
        loop_ms = inp.loop_thread_cpu_s * 1000 / inp.worker_requests
    workers = inp.workers or (len(inp.workers_cpu_s) if inp.workers_cpu_s else None)
    conc = worker_concurrency(inp.mode, inp.interface, inp.threads, workers, inp.worker_connections)
    in_flight = None
    if inp.measured_rps is not None and inp.wall_ms and workers:
        in_flight = inp.measured_rps * inp.wall_ms / 1000 / workers  # Little's law, per worker
    if conc.per_worker is not None and in_flight is not None \
            and in_flight > conc.per_worker * (1 + IN_FLIGHT_TOLERANCE):
        notes.append(f"the workers held {in_flight:.2f} requests at once each (req/s × server wall time / workers), "
                     f"more than the {conc.per_worker} assumed ({conc.text}): no request-slot limit")
        conc = Concurrency(None, f"more than {conc.per_worker} (measured {in_flight:.2f} in flight per worker)")
    slots = workers * conc.per_worker if workers and conc.per_worker else None
    if conc.per_worker is None and conc.text.startswith("unknown"):
        notes.append(f"requests in flight per worker are {conc.text}: no request-slot limit")

    limits: dict[str, float | None] = {"cpu": None, "event_loop": None, "workers": None}
    if cpu_ms and inp.cpus_usable:
        limits["cpu"] = inp.cpus_usable * 1000 / cpu_ms
    if loop_ms and workers:
        limits["event_loop"] = workers * 1000 / loop_ms
    if slots and inp.wall_ms:
        limits["workers"] = slots * 1000 / inp.wall_ms
    cpu_limits = [v for k, v in limits.items() if k in ("cpu", "event_loop") and v]
    predicted = min(cpu_limits) if cpu_limits else None
    measured = inp.measured_rps
    utilisation = measured / predicted if measured is not None and predicted else None

    bottleneck, reason = _bottleneck(inp, limits, loop_ms, workers, conc, slots)
    return {
        "cpu_ms_per_request": _r(cpu_ms),
        "accounted_cpu_ms_per_request": _r(accounted),
        "loop_cpu_ms_per_request": _r(loop_ms),
        "cpus_usable": inp.cpus_usable,
        "workers": workers,
        "concurrency_per_worker": conc.per_worker,
        "request_slots": slots,
        "concurrency": conc.text,
        "in_flight_per_worker": _r(in_flight),
        "limits_rps": {k: _r(v, 1) for k, v in limits.items()},
        "predicted_max_rps": _r(predicted, 1),
        "measured_rps": _r(measured, 2),
        "utilisation": _r(utilisation, 4),
        "machine_busy_share": inp.machine_busy_share,
        "cpu_check": _cpu_check(workers_cpu, inp.cpu_seconds, cpu_ms, accounted, measured),
        "bottleneck": bottleneck,
        "reason": reason,
        "notes": notes,
    }


def _workers_cpu(per_worker: Mapping[str, float | None] | None, notes: list[str]) -> float | None:
    """Sum of the workers' CPU seconds; None when no worker has a number."""
    if not per_worker:
        notes.append("no cpu_window.workers_cpu_s in the manifest: CPU per request is unknown")
        return None
    values = [v for v in per_worker.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(values) < len(per_worker):
        notes.append(f"{len(per_worker) - len(values)} of {len(per_worker)} workers have no CPU time for the "
                     "window (restarted or gone): CPU per request is understated")
    return sum(values) if values else None


def _cpu_check(workers_cpu: float | None, seconds: float | None, cpu_ms: float | None,
               accounted_ms: float | None, rps: float | None) -> dict[str, Any]:
    """Predicted cores (ms per request × rps) against the workers' measured cores, twice."""
    measured = workers_cpu / seconds if workers_cpu is not None and seconds else None
    predicted = cpu_ms * rps / 1000 if cpu_ms is not None and rps is not None else None
    accounted = accounted_ms * rps / 1000 if accounted_ms is not None and rps is not None else None

    def ratio(v: float | None) -> float | None:
        return v / measured if v is not None and measured else None

    r, ra = ratio(predicted), ratio(accounted)
    return {
        "measured_worker_cores": _r(measured, 4),
        "predicted_worker_cores": _r(predicted, 4),
        "ratio": _r(r, 4),
        "within_tolerance": None if r is None else abs(r - 1) <= CPU_CHECK_TOLERANCE,
        "accounted_worker_cores": _r(accounted, 4),
        "accounted_ratio": _r(ra, 4),
        "accounted_within_tolerance": None if ra is None else abs(ra - 1) <= CPU_CHECK_TOLERANCE,
        "tolerance": CPU_CHECK_TOLERANCE,
    }


def _bottleneck(inp: CapacityInputs, limits: Mapping[str, float | None], loop_ms: float | None,
                workers: int | None, conc: Concurrency, slots: int | None) -> tuple[str, str]:
    """(bottleneck, reason): the decision order of the module docstring."""
    if inp.load_generator_saturated:
        return "load_generator", "the load generator used about a whole core: it, not the server, set the pace"
    rps = inp.measured_rps
    used = {k: rps / v for k, v in limits.items() if v and rps is not None}
    saturated = {k: u for k, u in used.items() if u >= SATURATED}
    if saturated:
        name = max(saturated, key=lambda k: saturated[k])
        limit = limits[name] or 0.0
        if name == "cpu":
            text = f"the workers' CPU cost allows {limit:.0f} req/s on {inp.cpus_usable} usable cores"
        elif name == "event_loop":
            text = (f"each worker's loop thread needs {loop_ms or 0:.2f} ms of CPU per request, "
                    f"so {workers} loops allow {limit:.0f} req/s")
        else:
            text = (f"{_slots_text(workers, conc, slots)}, each held {inp.wall_ms or 0:.1f} ms per request, "
                    f"allow {limit:.0f} req/s")
        return name, f"measured {rps:.0f} req/s is {saturated[name]:.0%} of the limit: {text}"
    if inp.machine_busy_share is not None and inp.machine_busy_share >= MACHINE_BUSY:
        return "cpu", (f"the machine's CPUs were {inp.machine_busy_share:.0%} busy (workers, load generator, "
                       "database and samplers together)")
    lat = inp.latency_mean_ms
    if inp.pool_wait_ms is not None and lat and inp.pool_wait_ms / lat >= POOL_WAIT_SHARE:
        return "db_pool", (f"requests waited {inp.pool_wait_ms:.1f} ms of {lat:.1f} ms for a pooled connection: "
                           "the pool is smaller than the concurrency")
    att = inp.attribution_ms
    if inp.interface == "asgi" and att and lat:
        server = {k: v for k, v in att.items() if k not in ("server_queue", "other")}
        hop = att.get("thread_hop", 0.0)
        if server and hop / lat >= THREAD_HOP_SHARE and max(server, key=lambda k: server[k]) == "thread_hop":
            return "thread_sensitive_thread", (f"thread hops take {hop:.1f} ms of {lat:.1f} ms, the largest server "
                                               "part: requests wait on the sync<->async bridge's threads")
    best = max(used.values(), default=None)
    reason = "no limit is near saturation" if best is not None else "not enough data to compute a limit"
    if best is not None:
        reason += f" (the most used is at {best:.0%})"
    if inp.users and lat:
        bound = inp.users * 1000 / lat
        reason += f"; {inp.users} closed-loop users at {lat:.1f} ms mean latency can send at most {bound:.0f} req/s"
    if inp.users and slots and inp.users > slots:
        reason += (f"; {inp.users} users for {_slots_text(workers, conc, slots)}: about {inp.users - slots} "
                   "wait for a free slot at any time")
    return "none/unknown", reason


def _slots_text(workers: int | None, conc: Concurrency, slots: int | None) -> str:
    """``4 workers × 4 (4 threads per gunicorn gthread worker) = 16 request slots``."""
    if conc.per_worker == 1:
        return f"{workers} workers ({conc.text}) = {slots} request slots"
    return f"{workers} workers × {conc.per_worker} ({conc.text}) = {slots} request slots"


def _r(v: float | None, places: int = 3) -> float | None:
    return None if v is None else round(v, places)
