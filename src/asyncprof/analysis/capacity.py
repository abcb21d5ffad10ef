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
  ``workers`` (WSGI) = workers × 1000 / mean server wall ms, since a sync worker serves one
  request at a time.
* ``predicted_max_rps`` = the smaller of the CPU-cost limits (``cpu``, ``event_loop``): what the
  CPU cost alone allows.  ``utilisation`` = measured / predicted.
* ``bottleneck``: the first of these that holds — the load generator was saturated (then nothing
  else can be concluded); a limit is ≥ :data:`SATURATED` used (the most used one wins); the
  machine's CPUs were busy; pooled-connection waits are a large part of the latency; thread
  hops are the largest server-side part under ASGI; else ``none/unknown``, with the closed-loop
  bound users × 1000 / mean latency in the reason.
* ``cpu_check``: ``cpu_ms_per_request`` × measured rps against the workers' measured cores
  (the issue's 15% check; equal by construction up to the client window vs the kernel window and
  requests that never reached a worker), and the same for the CPU the in-worker accounting
  attributed to requests (the stricter check: how much of the workers' CPU the records explain).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class CapacityInputs:
    """What the check needs; None where a source was missing.

    ``workers_cpu_s``: per-worker CPU seconds over ``cpu_seconds`` (values may be None for a
    worker gone before the window ended).  ``attribution_ms``: the mean breakdown per request
    (``analysis.attribution``), ``pool_wait_ms`` and ``wall_ms`` its companions.
    ``loop_thread_cpu_s``/``worker_requests``: the worker summaries' loop-thread CPU and the
    requests they served over the same (whole-life) period.
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


def assess_capacity(inp: CapacityInputs) -> dict[str, Any]:
    """The ``capacity`` block of the report (see the module docstring); never raises on missing data.

    Keys: ``cpu_ms_per_request``, ``accounted_cpu_ms_per_request``, ``loop_cpu_ms_per_request``,
    ``cpus_usable``, ``workers``, ``limits_rps`` {``cpu``, ``event_loop``, ``workers``},
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

    limits: dict[str, float | None] = {"cpu": None, "event_loop": None, "workers": None}
    if cpu_ms and inp.cpus_usable:
        limits["cpu"] = inp.cpus_usable * 1000 / cpu_ms
    if loop_ms and workers:
        limits["event_loop"] = workers * 1000 / loop_ms
    if inp.interface == "wsgi" and inp.wall_ms and workers:
        limits["workers"] = workers * 1000 / inp.wall_ms
    cpu_limits = [v for k, v in limits.items() if k in ("cpu", "event_loop") and v]
    predicted = min(cpu_limits) if cpu_limits else None
    measured = inp.measured_rps
    utilisation = measured / predicted if measured is not None and predicted else None

    bottleneck, reason = _bottleneck(inp, limits, loop_ms)
    return {
        "cpu_ms_per_request": _r(cpu_ms),
        "accounted_cpu_ms_per_request": _r(accounted),
        "loop_cpu_ms_per_request": _r(loop_ms),
        "cpus_usable": inp.cpus_usable,
        "workers": workers,
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


def _bottleneck(inp: CapacityInputs, limits: Mapping[str, float | None], loop_ms: float | None) -> tuple[str, str]:
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
                    f"so {inp.workers} loops allow {limit:.0f} req/s")
        else:
            text = (f"{inp.workers} sync workers, each busy {inp.wall_ms or 0:.1f} ms per request, "
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
        if hop / lat >= THREAD_HOP_SHARE and max(server, key=lambda k: server[k]) == "thread_hop":
            return "thread_sensitive_thread", (f"thread hops take {hop:.1f} ms of {lat:.1f} ms, the largest server "
                                               "part: requests wait on the sync<->async bridge's threads")
    best = max(used.values(), default=None)
    reason = "no limit is near saturation" if best is not None else "not enough data to compute a limit"
    if best is not None:
        reason += f" (the most used is at {best:.0%})"
    if inp.users and lat:
        bound = inp.users * 1000 / lat
        reason += f"; {inp.users} closed-loop users at {lat:.1f} ms mean latency can send at most {bound:.0f} req/s"
    return "none/unknown", reason


def _r(v: float | None, places: int = 3) -> float | None:
    return None if v is None else round(v, places)
