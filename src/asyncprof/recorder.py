"""``asyncprof record``: database → server → load → samplers → run directory.

The recorder owns every process it starts.  Whatever ends the recording
(completion, an error, Ctrl-C, SIGTERM), the processes are stopped in
reverse order, the server gracefully first so workers flush their spans, and
the manifest is written with status complete, failed or interrupted.
"""

import contextlib
import os
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
from asyncprof.collectors.loadgen import (TAIL_SECONDS, LoadGenerator, LoadPlan, RequestLogTail, check_locustfile,
                                          remote_worker_command, saturation_warnings, start_locust)
from asyncprof.collectors.procstat import CpuSnapshot, cpu_window
from asyncprof.collectors.pyspy import PROCESS_FLAGS, PySpies, failure_reason, pyspy_binary
from asyncprof.collectors.server import ServerWatch, start_server, worker_environment
from asyncprof.collectors.upstream import start_upstream
from asyncprof.config import RecordConfig
from asyncprof.database import open_database, redact, seed
from asyncprof.errors import AsyncprofError, DiskFullError, Interrupted, LoadError, disk_full_error
from asyncprof.modes import ServerSpec, get_mode
from asyncprof.project import run_setup
from asyncprof.processes import ManagedProcess, ProcessGroup, check_port_free, free_port, pin_tree
from asyncprof.renderers.speedscope import write_speedscope
from asyncprof.run import Run
from asyncprof.scenarios import get_scenario
from asyncprof.versions import host_info, package_versions

FIRST_REQUEST_TIMEOUT = 20.0
#: py-spy attaches this long before the measured window starts, so that attaching (reading each
#: process's maps and symbols: about 0.1 s of CPU for five processes) is not the window's work.
PYSPY_LEAD_S = 1.0
#: Below this much free space on the run directory's filesystem the run stops: its writers are failing.
DISK_FREE_MIN = 64 * 1024


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
    endpoints = config.endpoints
    project = config.project
    if config.port is not None:
        check_port_free(config.host, config.port)
    port = config.port or free_port(config.host)

    user_classes = None
    if project is not None and config.locustfile is not None:
        # Before anything starts: a locustfile that does not import is a usage error, not a run.
        with console.status(f"checking {config.locustfile}…"):
            user_classes = check_locustfile(config.locustfile, {
                **env_without_secrets(dict(os.environ)),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(project.dir), os.environ.get("PYTHONPATH")]))})

    run = Run.create(config.out, f"{mode.name}-{_run_label(project.dir.name) if project else config.scenario}")
    run.reserve_space()  # released for the final manifest, so a full disk still ends with one
    instruments: dict[str, dict[str, Any]] = {
        "pyspy": {"enabled": config.pyspy, "rate_hz": config.pyspy_rate,
                  "flags": [*PROCESS_FLAGS] + (["--nonblocking"] if config.pyspy_nonblocking else []),
                  "per_process": True, "lead_s": PYSPY_LEAD_S},
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
              "distributed": config.load_processes > 1 or config.load_remote_workers > 0,
              **({"locustfile": str(config.locustfile), "user_classes": user_classes} if user_classes else {})},
        pinning=config.pinning,
        connections=connection_policy(config.scenario, mode.interface, config.view or mode.default_view,
                                      config.connect, config.pool_size) if project is None else
                    "the project's own DATABASES (DATABASE_URL and PG* name the run's database)",
        app={**project.to_manifest(), "served": project.application(mode.interface, mode.name)}
        if project is not None else None,
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
    status, error, disk_full = "failed", None, False
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
            exc = _first_disk_full(exc)  # a full disk fails the saves made while stopping too: say the first
            error, disk_full = str(exc), isinstance(exc, DiskFullError)
            exc.run_path = run.path
            raise exc  # noqa: B904 - the same failure, or the disk-full error behind it
        except OSError as exc:
            full = disk_full_error(exc, _relative(run, exc.filename) if exc.filename else "the run directory")
            if full is None:
                raise
            error, disk_full = str(full), True
            full.run_path = run.path
            raise full from None
        finally:
            _finish(run, status, error, instruments, disk_full=disk_full)
    return run


def _first_disk_full(exc: AsyncprofError) -> AsyncprofError:
    """The earliest DiskFullError among *exc* and the exceptions it was raised while handling, else *exc*."""
    found: BaseException | None = exc if isinstance(exc, DiskFullError) else None
    seen, cause = {id(exc)}, exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, DiskFullError):
            found = cause
        cause = cause.__context__
    return found if isinstance(found, AsyncprofError) else exc


def _relative(run: Run, path: object) -> str:
    """*path* relative to the run directory when it is inside it."""
    try:
        return str(Path(str(path)).resolve().relative_to(run.path.resolve()))
    except (ValueError, OSError):
        return str(path)


def _check_disk(run: Run) -> None:
    """DiskFullError when the run directory's filesystem has (almost) no room left: its writers are failing."""
    try:
        st = os.statvfs(run.path)
    except OSError:
        return
    free = (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize
    if free >= DISK_FREE_MIN:
        return
    newest, when = None, 0.0
    for path in run.path.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.name.startswith(".") and (mtime := path.stat().st_mtime) > when:
                newest, when = path, mtime
    what = _relative(run, newest) if newest is not None else "the run directory"
    raise DiskFullError(f"disk full while writing {what} ({free // 1024} KiB free)",
                        "free some space; what was written before is kept")


def _record_into(run: Run, config: RecordConfig, mode_name: str, port: int, endpoints: Any,
                 instruments: dict[str, dict[str, Any]], console: Console) -> None:
    mode = get_mode(mode_name)
    project = config.project
    with open_database(config.db) as db:
        run.update(database={"kind": db.kind, "url": db.display_url, "server_version": db.version})
        if project is None:
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
            if project is None and get_scenario(config.scenario).needs_upstream:
                # Started first, so the group stops it last: after the server, whose views call it.
                with console.status(f"starting the upstream service ({config.upstream_delay_ms:g} ms a call)…"):
                    upstream, upstream_url = start_upstream(group, run, delay_ms=config.upstream_delay_ms,
                                                            cpus=pinning["load"] if pinning else None)
                run.update(upstream={"url": upstream_url, "delay_ms": config.upstream_delay_ms, "pid": upstream.pid})
            env = worker_environment(
                run, mode, db_url=db.url, connect=config.connect, pool_size=config.pool_size,
                rows=config.rows, otel=config.otel, profile_every=config.profile_every if config.pyinstrument else 0,
                calibrate=config.calibrate, accounting=config.accounting, upstream_url=upstream_url,
                project=project,
            )
            _trace_environment(env, config)
            if project is not None and config.setup:
                with console.status(f"running the setup command: {config.setup}"):
                    run_setup(config.setup, project, env, run.logs_dir / "setup.log")
                run.update(setup={"command": config.setup, "log": "logs/setup.log"})
            spec = ServerSpec(host=config.host, port=port, workers=config.workers, threads=config.threads)
            with console.status(f"starting {config.workers} {mode.name} workers on {config.host}:{port}…"):
                server = start_server(group, run, mode, spec, env, cpus=pinning["target"] if pinning else None,
                                      cwd=project.dir if project else None,
                                      ready_path=(endpoints[0][1] if endpoints else "/") if project else None)
            workers = run.worker_infos()
            run.update(pids={"server": server.pid, "workers": [w["pid"] for w in workers]}, workers=workers)
            if upstream is not None:
                run.manifest["pids"]["upstream"] = upstream.pid
            host = f"[{config.host}]" if ":" in config.host else config.host
            plan = LoadPlan(endpoints=endpoints, users=config.users, spawn_rate=config.effective_spawn_rate,
                            run_time=config.warmup + config.duration + TAIL_SECONDS, rate=config.rate,
                            processes=config.load_processes, cpus=pinning["load"] if pinning else None,
                            remote_workers=config.load_remote_workers, master_bind=config.load_master_bind,
                            master_port=config.load_master_port, sample_traces=config.sample_traces,
                            locustfile=config.locustfile)
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
                watch = ServerWatch(run, server, db_url=db.url,
                                    postmaster=_postmaster_pid(db.data_dir) if db.kind == "embedded" else None)
                _drive(run, config, group, server, load, instruments, console, watch)
            finally:
                # Graceful stop so each worker's exit hook flushes its spans.
                server.stop(grace=15)


def env_without_secrets(env: dict[str, str]) -> dict[str, str]:
    """The load generator needs none of the server's secrets."""
    return {k: v for k, v in env.items() if k not in ("DATABASE_URL", "DJANGO_SECRET_KEY", "PGPASSWORD")}


def _run_label(name: str) -> str:
    """A project directory's name as it may appear in a run id (letters, digits, ``-`` and ``_``)."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40] or "app"


def _drive(run: Run, config: RecordConfig, group: ProcessGroup, server: ManagedProcess, load: LoadGenerator,
           instruments: dict[str, dict[str, Any]], console: Console, watch: ServerWatch | None = None) -> None:
    """Follow the load until Locust ends; open the measured window after warm-up and start py-spy then."""
    watch = watch or ServerWatch(run, server)
    tail = RequestLogTail(run.requests_path)
    stats = _LiveStats()
    started = time.time()
    first: float | None = None
    window: dict[str, float] = {}
    pyspy: PySpies | None = None
    pyspy_tried = False
    cpu_start: CpuSnapshot | None = None
    planned = config.warmup + config.duration

    def snapshot() -> CpuSnapshot:
        pids: dict[str, int | None] = {f"worker:{pid}": pid for pid in run.manifest["pids"].get("workers", [])}
        pids.update(load.pids())
        pids.update(server=server.pid)
        pids.update(pyspy.process_ids() if pyspy is not None else {})
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
                if first is not None and config.pyspy and not pyspy_tried \
                        and now >= first + config.warmup - PYSPY_LEAD_S:
                    pyspy_tried = True
                    pyspy = _start_pyspy(group, run, server.pid, config, instruments, console, until=first + planned)
                elif pyspy is not None:
                    pyspy.follow(run.manifest["pids"].get("workers", []))  # new workers too, as they fork
                if first is None:
                    # Remote workers get Locust's own wait for them (--expect-workers-max-wait) first.
                    timeout = FIRST_REQUEST_TIMEOUT + (300 if config.load_remote_workers else 0)
                    if now - started > timeout or not load.running():
                        raise LoadError("Locust sent no request", f"see {run.logs_dir / 'locust.log'}")
                elif not window and now >= first + config.warmup:
                    window = {"start_unix": first + config.warmup, "end_unix": first + planned}
                    run.update(window=dict(window))
                    cpu_start = snapshot()
                elif cpu_start is not None and now >= window["end_unix"]:
                    run.update(cpu_window=cpu_window(cpu_start, snapshot()))
                    cpu_start = None
                # The server, its workers (dead, restarted) and the database: see ServerWatch.
                watch.check(now, stats.errors)
                _check_disk(run)
                elapsed = now - first if first else 0.0
                phase = "warm-up" if not window else ("measuring" if now < window["end_unix"] else "draining")
                live.update(stats.line(label, min(elapsed, planned), planned, phase))
                if not load.running():
                    break
                time.sleep(0.25)
    finally:
        console.print()  # end the live line, also when a failure's one line follows it
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
            failed = pyspy.finish(until_unix=window.get("end_unix", end), grace=10)
            instruments["pyspy"]["processes"] = sorted(pyspy.procs)  # every process a py-spy followed
            if failed:
                reason = failure_reason(run.logs_dir / "pyspy.log")
                instruments["pyspy"].update(status="failed", error=reason)
    code = load.wait(10)
    warnings = run.manifest.setdefault("warnings", [])
    if code not in (0, None):
        how = f"code {code}"
        if code < 0:
            with contextlib.suppress(ValueError):
                how = f"signal {signal.Signals(-code).name}"
        if first is not None and end < first + planned:  # it died before the measured window was over
            raise LoadError(f"the load generator exited with {how} {first + planned - end:.1f} s before the end "
                            "of the measured window",
                            f"the requests it logged are kept; see {run.logs_dir / 'locust.log'}")
        warnings.append(f"Locust exited with {how}; see logs/locust.log")
    warnings.extend(w for w in saturation_warnings(run.logs_dir) if w not in warnings)


def _start_pyspy(group: ProcessGroup, run: Run, pid: int, config: RecordConfig,
                 instruments: dict[str, dict[str, Any]], console: Console, *, until: float) -> PySpies | None:
    """A py-spy on the server's master and on each worker known so far (see :class:`PySpies`)."""
    if pyspy_binary() is None:
        instruments["pyspy"].update(status="failed", error="py-spy is not installed")
        console.print("[yellow]warning:[/] py-spy is not installed; recording without CPU samples")
        return None
    pinning = config.pinning
    spies = PySpies(group, run, root=pid, rate=config.pyspy_rate, until_unix=until,
                    nonblocking=config.pyspy_nonblocking, cpus=pinning["load"] if pinning else None)
    spies.follow(run.manifest["pids"].get("workers", []))
    if not spies.attached(0.5):
        spies.finish(until_unix=time.time(), grace=0)
        reason = failure_reason(run.logs_dir / "pyspy.log")
        instruments["pyspy"].update(status="failed", error=f"py-spy could not attach: {reason}")
        console.print(f"warning: py-spy could not attach: {reason}; going on without the CPU profile",
                      style="yellow", highlight=False, soft_wrap=True, markup=False)
        return None
    return spies


def _finish(run: Run, status: str, error: str | None, instruments: dict[str, dict[str, Any]],
            disk_full: bool = False) -> None:
    """Write the final manifest (and the derived speedscope file); never raises for a missing piece.

    The run's processes are stopped by now, so the space reserved at the start is this manifest's.
    On a full disk the speedscope file is not written (it would take that space).
    """
    run.release_space()
    samples = run.pyspy_dir / "samples.txt"
    produced: dict[str, Any] = {
        "pyspy": {"samples_file": samples.exists()},
        "otel": {"span_files": len(list(run.spans_dir.glob("*.jsonl")))},
        "pyinstrument": {"profiles": len(list(run.profiles_dir.glob("*.pyisession")))},
        "accounting": {"record_files": len(list((run.path / "accounting").glob("*.tsv")))},
    }
    if samples.exists() and not disk_full:
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
    try:
        run.update(**fields)
    except DiskFullError:
        if status == "complete":  # the only failure there is: say it
            raise


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
        # Requests follow the generator's flag; a root span (a request without a traceparent, a
        # query outside any request) is kept by the same trace-id rule.
        env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        env["OTEL_TRACES_SAMPLER_ARG"] = repr(config.sample_traces)


def _export_client_spans(run: Run, target: Any, instruments: dict[str, dict[str, Any]], console: Console) -> None:
    """Send the load generator's client spans (made from requests.tsv) to the live OTLP endpoint, and
    say in one line (and in ``instruments.otel.otlp_export``) what did not reach it.

    The workers sent their spans during the run (``spans`` in ``workers/<pid>.json`` counts what they
    sent and dropped); the generator runs no tracing SDK, so its spans go once it is done.  A failure
    is a warning: the run itself is complete, and its ``spans/`` files do not depend on the endpoint.
    """
    from asyncprof.analysis.traces import TraceSource
    from asyncprof.exporters.otlp_env import make_exporter, probe_target
    from asyncprof.exporters.push import push

    counts = [w["spans"] for w in run.worker_infos() if isinstance(w.get("spans"), dict)]
    sent = sum(int(c.get("otlp_sent") or 0) for c in counts)
    dropped = sum(int(c.get("otlp_failed") or 0) for c in counts)
    export: dict[str, Any] = {"endpoint": target.describe(), "status": "ok", "worker_spans_sent": sent,
                              "worker_spans_dropped": dropped, "workers_counted": len(counts)}
    instruments["otel"]["otlp_export"] = export
    failure = None
    try:
        with console.status(f"sending the client spans to {target.describe()}…"):
            result = push(TraceSource(run).client_batches(), make_exporter(target), target.describe(),
                          url=probe_target(target))
    except AsyncprofError as exc:
        failure = exc.message.split("did not accept spans: ", 1)[-1]
        instruments["otel"]["client_spans_exported"] = export["client_spans_sent"] = 0
    else:
        instruments["otel"]["client_spans_exported"] = export["client_spans_sent"] = result.spans
    if failure is None and not dropped:
        console.print(f"sent {export['client_spans_sent']} client spans to {target.describe()}", highlight=False,
                      soft_wrap=True)
        return
    export.update(status="failed" if failure is not None and not sent else "partial", reason=failure)
    lost = [f"the workers dropped {dropped} of {sent + dropped} spans"] if dropped else []
    if failure is not None:
        lost.append("the load generator's client spans were not sent")
    warning = (f"OTLP export to {target.describe()} failed{f' ({failure})' if failure else ''}: {' and '.join(lost)}; "
               f"the run's spans/ files are written regardless (resend with: asyncprof export otlp {run.run_id} "
               "--endpoint URL)")
    run.manifest.setdefault("warnings", []).append(warning)
    console.print(f"warning: {warning}", style="yellow", highlight=False, soft_wrap=True, markup=False)
