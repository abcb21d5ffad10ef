"""``asyncprof record``: database → server → load → samplers → run directory.

The recorder owns every process it starts.  Whatever ends the recording
(completion, an error, Ctrl-C, SIGTERM), the processes are stopped in
reverse order, the server gracefully first so workers flush their spans, and
the manifest is written with status complete, failed or interrupted.
"""

import contextlib
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from asyncprof import __version__
from asyncprof.analysis.stats import percentile
from asyncprof.collectors.loadgen import (TAIL_SECONDS, LoadGenerator, LoadPlan, RequestLogTail,
                                          remote_worker_command, saturation_warnings, start_locust)
from asyncprof.collectors.procstat import CpuSnapshot, cpu_window
from asyncprof.collectors.pyspy import SAMPLING_FLAGS, failure_reason, pyspy_binary, start_pyspy
from asyncprof.collectors.server import start_server, worker_environment
from asyncprof.collectors.upstream import start_upstream
from asyncprof.config import RecordConfig
from asyncprof.database import open_database, redact, seed
from asyncprof.errors import AsyncprofError, Interrupted, LoadError, ServerError
from asyncprof.modes import ServerSpec, get_mode
from asyncprof.processes import ManagedProcess, ProcessGroup, check_port_free, free_port, pin_tree
from asyncprof.renderers.speedscope import write_speedscope
from asyncprof.run import Run
from asyncprof.scenarios import get_scenario
from asyncprof.versions import host_info, package_versions

FIRST_REQUEST_TIMEOUT = 20.0


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn the first SIGINT/SIGTERM into :class:`Interrupted`; ignore further ones while cleaning up."""
    signals = (signal.SIGINT, signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        for s in signals:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(f"stopped by {signal.Signals(signum).name}")

    old = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class _LiveStats:
    """Rolling figures for the live line, from requests as Locust logs them."""

    def __init__(self) -> None:
        self.recent: deque[tuple[float, float, int]] = deque()  # (seen at, latency, status)
        self.total = 0
        self.errors = 0

    def add(self, now: float, rows: list[tuple[float, int, float]]) -> None:
        for _start, status, latency in rows:
            self.recent.append((now, latency, status))
            self.total += 1
            self.errors += status == 0 or status >= 400
        while self.recent and self.recent[0][0] < now - 3.0:
            self.recent.popleft()

    def line(self, label: str, elapsed: float, planned: float, phase: str) -> Text:
        lat = sorted(r[1] for r in self.recent)
        span = 3.0 if self.recent and elapsed > 3.0 else max(elapsed, 0.5)
        rate = len(self.recent) / span
        p50 = percentile(lat, 50) if lat else float("nan")
        p99 = percentile(lat, 99) if lat else float("nan")
        return Text.assemble(
            (f"{label} ", "bold"),
            f"{elapsed:5.1f}/{planned:.0f} s ",
            (f"[{phase}] ", "cyan"),
            f"{rate:7.1f} req/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  ",
            (f"{self.errors} errors", "red" if self.errors else "green"),
        )


def connection_policy(scenario: str, interface: str, view: str, connect: str, pool_size: int) -> str:
    """How the target's views get their database connections in this run, in words (for the manifest)."""
    if connect == "per-request":
        return "a new connection opened and closed in every request"
    if scenario == "orm":
        if interface == "asgi":
            return ("Django ORM, a new connection in every request (CONN_MAX_AGE=0: Django's connections are "
                    "per request context under ASGI, persistent ones would never be reused)")
        return "Django ORM, one persistent connection per worker thread (CONN_MAX_AGE=None)"
    if view == "async" and interface == "wsgi":
        return ("a new asyncpg connection in every request (an async view under WSGI runs in a new event loop "
                "per request, and an asyncpg pool cannot outlive its loop)")
    if view == "async":
        return f"one asyncpg pool per worker, at most {pool_size} connections"
    return "one persistent psycopg2 connection per worker thread"


def record(config: RecordConfig, console: Console | None = None) -> Run:
    """Record one run as *config* says and return it (status complete).

    Raises AsyncprofError subclasses for failures; :class:`Interrupted` on
    Ctrl-C/SIGTERM.  In every case the run directory and its manifest are
    left behind, consistent, with what was recorded.
    """
    console = console or Console(stderr=True)
    config.validate()
    mode = get_mode(config.mode)
    mode.check_installed()
    otlp = _otlp_target(config)  # before anything starts: a protocol that cannot be served is a usage error
    endpoints = get_scenario(config.scenario).endpoints_for(config.view or mode.default_view)
    if config.port is not None:
        check_port_free(config.host, config.port)
    port = config.port or free_port(config.host)

    run = Run.create(config.out, f"{mode.name}-{config.scenario}")
    instruments: dict[str, dict[str, Any]] = {
        "pyspy": {"enabled": config.pyspy, "rate_hz": config.pyspy_rate,
                  "flags": [*SAMPLING_FLAGS]
                  + (["--nonblocking"] if config.pyspy_nonblocking else [])},
        "otel": {"enabled": config.otel, "otlp_endpoint": otlp is not None,
                 "otlp": otlp.describe() if otlp is not None else None, "sample_traces": config.sample_traces},
        "pyinstrument": {"enabled": config.pyinstrument, "every": config.profile_every},
        "accounting": {"enabled": config.accounting},
    }
    run.update(
        asyncprof_version=__version__,
        command=["asyncprof", *(redact(a) if "://" in a else a for a in sys.argv[1:])],
        config=config.to_manifest(),
        server={"mode": mode.name, "interface": mode.interface, "host": config.host, "port": port,
                "description": mode.description, "threads": config.threads,
                "command": mode.command(ServerSpec(host=config.host, port=port, workers=config.workers,
                                                   threads=config.threads))},
        instruments=instruments,
        load={"model": "open" if config.rate is not None else "closed", "rate_rps": config.rate,
              "users" if config.rate is None else "connections_per_process": config.users,
              "processes": config.load_processes, "remote_workers": config.load_remote_workers,
              "distributed": config.load_processes > 1 or config.load_remote_workers > 0},
        pinning=config.pinning,
        connections=connection_policy(config.scenario, mode.interface, config.view or mode.default_view,
                                      config.connect, config.pool_size),
        versions=package_versions(),
        host=host_info(),
        started_unix=time.time(),
        warnings=[],
    )
    console.print(f"recording [bold]{run.run_id}[/] → {run.path}")
    if otlp is not None:
        from asyncprof.exporters.otlp_env import target_warnings

        for warning in target_warnings(otlp):
            run.manifest["warnings"].append(warning)
            console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    status, error = "failed", None
    with interruptible():
        try:
            _record_into(run, config, mode.name, port, endpoints, instruments, console)
            status = "complete"
            if otlp is not None:
                _export_client_spans(run, otlp, instruments, console)
        except Interrupted as exc:
            status, error = "interrupted", str(exc)
            exc.run_path = run.path
            raise
        except AsyncprofError as exc:
            error = str(exc)
            exc.run_path = run.path
            raise
        finally:
            _finish(run, status, error, instruments)
    return run


def _record_into(run: Run, config: RecordConfig, mode_name: str, port: int, endpoints: Any,
                 instruments: dict[str, dict[str, Any]], console: Console) -> None:
    mode = get_mode(mode_name)
    with open_database(config.db) as db:
        run.update(database={"kind": db.kind, "url": db.display_url, "server_version": db.version})
        with console.status("seeding the item table…"):
            refilled = seed(db.url, config.rows)
        run.manifest["database"]["seeded"] = {"rows": config.rows, "refilled": refilled}
        pinning = config.pinning
        if pinning is not None and db.kind == "embedded" and (postmaster := _postmaster_pid(db.data_dir)):
            # New backends fork from the postmaster and inherit its CPU set.
            run.manifest["pinning"]["database_processes"] = pin_tree(postmaster, pinning["target"])
        run.save()
        with ProcessGroup() as group:
            upstream, upstream_url = None, None
            if get_scenario(config.scenario).needs_upstream:
                # Started first, so the group stops it last: after the server, whose views call it.
                with console.status(f"starting the upstream service ({config.upstream_delay_ms:g} ms a call)…"):
                    upstream, upstream_url = start_upstream(group, run, delay_ms=config.upstream_delay_ms,
                                                            cpus=pinning["load"] if pinning else None)
                run.update(upstream={"url": upstream_url, "delay_ms": config.upstream_delay_ms, "pid": upstream.pid})
            env = worker_environment(
                run, mode, db_url=db.url, connect=config.connect, pool_size=config.pool_size,
                rows=config.rows, otel=config.otel, profile_every=config.profile_every if config.pyinstrument else 0,
                calibrate=config.calibrate, accounting=config.accounting, upstream_url=upstream_url,
            )
            _trace_environment(env, config)
            spec = ServerSpec(host=config.host, port=port, workers=config.workers, threads=config.threads)
            with console.status(f"starting {config.workers} {mode.name} workers on {config.host}:{port}…"):
                server = start_server(group, run, mode, spec, env, cpus=pinning["target"] if pinning else None)
            workers = run.worker_infos()
            run.update(pids={"server": server.pid, "workers": [w["pid"] for w in workers]}, workers=workers)
            if upstream is not None:
                run.manifest["pids"]["upstream"] = upstream.pid
            host = f"[{config.host}]" if ":" in config.host else config.host
            plan = LoadPlan(endpoints=endpoints, users=config.users, spawn_rate=config.effective_spawn_rate,
                            run_time=config.warmup + config.duration + TAIL_SECONDS, rate=config.rate,
                            processes=config.load_processes, cpus=pinning["load"] if pinning else None,
                            remote_workers=config.load_remote_workers, master_bind=config.load_master_bind,
                            master_port=config.load_master_port, sample_traces=config.sample_traces)
            load = start_locust(group, run, url=f"http://{host}:{port}", plan=plan, env=env_without_secrets(env))
            if config.load_remote_workers and load.master_port is not None:
                console.print(f"waiting for {config.load_remote_workers} remote Locust workers; on each machine run:\n"
                              f"  {remote_worker_command(plan, config.load_master_bind, load.master_port)}",
                              highlight=False, soft_wrap=True, markup=False)
            run.manifest["pids"]["locust"] = load.pid
            if load.workers:
                run.manifest["pids"]["locust_workers"] = [w.pid for w in load.workers]
            run.save()
            try:
                _drive(run, config, group, server, load, instruments, console)
            finally:
                # Graceful stop so each worker's exit hook flushes its spans.
                server.stop(grace=15)


def env_without_secrets(env: dict[str, str]) -> dict[str, str]:
    """The load generator needs none of the server's secrets."""
    return {k: v for k, v in env.items() if k not in ("DATABASE_URL", "DJANGO_SECRET_KEY")}


def _drive(run: Run, config: RecordConfig, group: ProcessGroup, server: ManagedProcess, load: LoadGenerator,
           instruments: dict[str, dict[str, Any]], console: Console) -> None:
    """Follow the load until Locust ends; open the measured window after warm-up and start py-spy then."""
    tail = RequestLogTail(run.requests_path)
    stats = _LiveStats()
    started = time.time()
    first: float | None = None
    window: dict[str, float] = {}
    pyspy: ManagedProcess | None = None
    cpu_start: CpuSnapshot | None = None
    planned = config.warmup + config.duration

    def snapshot() -> CpuSnapshot:
        pids: dict[str, int | None] = {f"worker:{pid}": pid for pid in run.manifest["pids"].get("workers", [])}
        pids.update(load.pids())
        pids.update(server=server.pid, pyspy=pyspy.pid if pyspy is not None else None)
        pids.update(upstream=run.manifest["pids"].get("upstream"))  # the fanout scenario's upstream service
        return CpuSnapshot.take(pids)

    label = f"{config.mode}/{config.scenario}"
    try:
        with Live(Text("waiting for the first request…"), console=console, refresh_per_second=4,
                  transient=False) as live:
            while True:
                now = time.time()
                rows = tail.read()
                if rows and first is None:
                    first = min(r[0] for r in rows)
                stats.add(now, rows)
                if first is None:
                    # Remote workers get Locust's own wait for them (--expect-workers-max-wait) first.
                    timeout = FIRST_REQUEST_TIMEOUT + (300 if config.load_remote_workers else 0)
                    if now - started > timeout or not load.running():
                        raise LoadError("Locust sent no request", f"see {run.logs_dir / 'locust.log'}")
                elif not window and now >= first + config.warmup:
                    window = {"start_unix": first + config.warmup, "end_unix": first + planned}
                    run.update(window=dict(window))
                    if config.pyspy:
                        pyspy = _start_pyspy(group, run, server.pid, config, instruments, console)
                    cpu_start = snapshot()
                elif cpu_start is not None and now >= window["end_unix"]:
                    run.update(cpu_window=cpu_window(cpu_start, snapshot()))
                    cpu_start = None
                if not server.running():
                    raise ServerError("the server exited during the run", f"see {run.logs_dir / 'server.log'}")
                elapsed = now - first if first else 0.0
                phase = "warm-up" if not window else ("measuring" if now < window["end_unix"] else "draining")
                live.update(stats.line(label, min(elapsed, planned), planned, phase))
                if not load.running():
                    break
                time.sleep(0.25)
        console.print()
    finally:
        end = time.time()
        if window and end < window["end_unix"]:
            window["end_unix"] = end
        elif not window and first is not None:
            window = {"start_unix": first + config.warmup, "end_unix": max(end, first + config.warmup)}
        if window:
            run.update(window=dict(window))
        if cpu_start is not None:  # the run ended before its window did
            run.update(cpu_window=cpu_window(cpu_start, snapshot()))
        if pyspy is not None:
            # py-spy stops by itself at the end of its duration; on early exit, SIGINT makes it write.
            if pyspy.wait(max(0.0, window.get("end_unix", end) - time.time()) + 10) is None:
                pyspy.stop(grace=10)
            if pyspy.popen.returncode not in (0, None):
                reason = failure_reason(run.logs_dir / "pyspy.log")
                instruments["pyspy"]["error"] = reason
    code = load.wait(10)
    warnings = run.manifest.setdefault("warnings", [])
    if code not in (0, None):
        warnings.append(f"Locust exited with code {code}; see logs/locust.log")
    warnings.extend(w for w in saturation_warnings(run.logs_dir) if w not in warnings)


def _start_pyspy(group: ProcessGroup, run: Run, pid: int, config: RecordConfig,
                 instruments: dict[str, dict[str, Any]], console: Console) -> ManagedProcess | None:
    if pyspy_binary() is None:
        instruments["pyspy"]["error"] = "py-spy is not installed"
        console.print("[yellow]warning:[/] py-spy is not installed; recording without CPU samples")
        return None
    pinning = config.pinning
    proc = start_pyspy(group, run, pid=pid, rate=config.pyspy_rate, duration=config.duration,
                       nonblocking=config.pyspy_nonblocking, cpus=pinning["load"] if pinning else None)
    if proc.wait(0.5) not in (None, 0):
        reason = failure_reason(run.logs_dir / "pyspy.log")
        instruments["pyspy"]["error"] = reason
        console.print(f"[yellow]warning:[/] py-spy could not attach: {reason}; going on without it")
        return None
    return proc


def _finish(run: Run, status: str, error: str | None, instruments: dict[str, dict[str, Any]]) -> None:
    """Write the final manifest (and the derived speedscope file); never raises for a missing piece."""
    samples = run.pyspy_dir / "samples.txt"
    produced: dict[str, Any] = {
        "pyspy": {"samples_file": samples.exists()},
        "otel": {"span_files": len(list(run.spans_dir.glob("*.jsonl")))},
        "pyinstrument": {"profiles": len(list(run.profiles_dir.glob("*.pyisession")))},
        "accounting": {"record_files": len(list((run.path / "accounting").glob("*.tsv")))},
    }
    if samples.exists():
        with contextlib.suppress(OSError):
            write_speedscope(samples, run.pyspy_dir / "speedscope.json", run.run_id)
            produced["pyspy"]["speedscope_file"] = True
    for name, info in produced.items():
        instruments.setdefault(name, {}).update(produced=info)
    workers = run.worker_infos()
    fields: dict[str, Any] = {
        "status": status,
        "ended_unix": time.time(),
        "instruments": instruments,
        "workers": workers,
    }
    if error:
        fields["error"] = error
    run.update(**fields)


def _postmaster_pid(data_dir: str | None) -> int | None:
    """The embedded server's postmaster pid, from the first line of ``postmaster.pid``."""
    if data_dir is None:
        return None
    try:
        return int((Path(data_dir) / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _otlp_target(config: RecordConfig) -> Any:
    """Where the spans go live: ``--otlp``, else the standard variables; None without OTel or either."""
    from asyncprof.exporters.otlp_env import check_target, option_target, otlp_target

    if not config.otel:
        return None
    target = option_target(config.otlp) if config.otlp is not None else otlp_target()
    if target is not None:
        check_target(target)
    return target


def _trace_environment(env: dict[str, str], config: RecordConfig) -> None:
    """The workers' tracing variables: ``--otlp`` (over any OTEL_EXPORTER_OTLP_* set), and for
    ``--sample-traces`` a parent-based sampler, so the workers follow the generator's sampled flag."""
    if config.otlp is not None and config.otel:
        from asyncprof.exporters.otlp_env import apply_option, option_target

        apply_option(env, option_target(config.otlp))
    if config.sample_traces < 1:
        env["OTEL_TRACES_SAMPLER"] = "parentbased_always_on"


def _export_client_spans(run: Run, target: Any, instruments: dict[str, dict[str, Any]], console: Console) -> None:
    """Send the load generator's client spans (made from requests.tsv) to the live OTLP endpoint.

    The workers sent their spans during the run; the generator runs no tracing SDK, so its spans go
    once it is done.  A failure is a warning: the run itself is complete.
    """
    from asyncprof.analysis.traces import TraceSource
    from asyncprof.exporters.otlp_env import make_exporter
    from asyncprof.exporters.push import push

    try:
        with console.status(f"sending the client spans to {target.describe()}…"):
            result = push(TraceSource(run).client_batches(), make_exporter(target), target.describe(),
                          url=target.endpoint)
    except AsyncprofError as exc:
        warning = f"the load generator's client spans were not exported: {exc}"
        run.manifest.setdefault("warnings", []).append(warning)
        instruments["otel"]["client_spans_exported"] = 0
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        return
    instruments["otel"]["client_spans_exported"] = result.spans
    console.print(f"sent {result.spans} client spans to {target.describe()}", highlight=False, soft_wrap=True)
