"""What ``asyncprof record`` was asked to do, validated before anything starts."""

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asyncprof.calibration import Calibration, parse_calibration
from asyncprof.errors import UsageError
from asyncprof.modes import MODES, get_mode
from asyncprof.processes import split_cpus, usable_cpus
from asyncprof.scenarios import get_scenario

CONNECT_POLICIES = ("persistent", "per-request")
#: py-spy's samples per second per process: its own CPU, on the same cores as the workers, is
#: ≈ 0.2% of a core per process and sample rate unit here (20 Hz on 5 processes: 3.5–5.8% of a core;
#: 10 Hz: 2–5%).  5 Hz still gives a default 30 s run about 150 samples per worker.
DEFAULT_PYSPY_RATE = 5
#: The fraction of requests the per-request instruments follow (spans, breakdown records) when
#: neither ``--sample-traces`` nor ``ASYNCPROF_SAMPLE_TRACES`` says: what keeps their cost within
#: the budget scripts/bench-overhead checks (README, *What the instruments cost*).  A request in
#: the sample costs about twice its own work under WSGI (OTel's spans) and +65 % under ASGI, where
#: while it is in flight the loop's hooks are on for the requests beside it too
#: (scripts/count-instructions --concurrency), so each 1 % of sample adds ≈ 1.3 % under WSGI and
#: 2 % under ASGI at 12 requests per worker.  A default 30 s run still follows about 100 async and
#: 150 sync requests at this machine's throughput, enough for the breakdown's medians.
DEFAULT_SAMPLE_TRACES = 0.005
#: pyinstrument profiles one request in this many per worker: a profiled request costs several
#: times its own CPU (the profiler, then saving the session), so one in 100 cost ≈ 4% of the
#: workers' CPU in the seed scenario; one in 1000 keeps it near 0.4%.
DEFAULT_PROFILE_EVERY = 1000
#: The variable that sets ``--sample-traces``'s default (also how the rate reaches Locust).
SAMPLE_TRACES_ENV = "ASYNCPROF_SAMPLE_TRACES"
CALIBRATE_SCENARIO = "calibrate"
#: The scenario name a run of the user's own project (``--app``) records.
APP_SCENARIO = "app"


@dataclass
class RecordConfig:
    """All knobs of one recording. :meth:`validate` raises UsageError on the first bad one."""

    mode: str = "async"
    scenario: str = "seed"
    view: str | None = None
    workers: int = 4
    threads: int | None = None  # per worker, for modes that take it (gthread, granian-wsgi); None: the mode's default
    users: int = 50  # closed loop: concurrent users; open loop (rate set): most connections per load process
    spawn_rate: float | None = None
    rate: float | None = None  # open loop: requests per second in total, whatever the answers
    load_processes: int = 1  # Locust processes sending load; more than 1 runs Locust's distributed mode
    load_remote_workers: int = 0  # Locust workers the user starts on other machines (distributed mode)
    load_master_bind: str = "127.0.0.1"  # where the Locust master listens for workers
    load_master_port: int | None = None
    pin: str | None = None  # "auto" or "LOAD/TARGET" CPU lists: separate CPUs for the load and the target
    duration: float = 30.0
    warmup: float = 5.0
    db: str = "embedded"
    rows: int = 10_000
    pool_size: int = 10
    connect: str = "persistent"
    host: str = "127.0.0.1"
    port: int | None = None
    pyspy: bool = True
    pyspy_rate: int = DEFAULT_PYSPY_RATE
    pyspy_nonblocking: bool = True
    otel: bool = True
    pyinstrument: bool = True
    accounting: bool = True
    profile_every: int = DEFAULT_PROFILE_EVERY
    out: Path = field(default_factory=lambda: Path("traces"))
    calibrate: str | None = None  # the calibrate scenario's cost; canonical after validate()
    upstream_delay_ms: float = 20.0  # the upstream service's delay per call, for scenarios that need it (fanout)
    otlp: str | None = None  # --otlp URL: live OTLP/HTTP export (else the OTEL_EXPORTER_OTLP_* variables, if set)
    # Fraction of requests in the sample, by trace id (the traceparent's sampled flag): traced and accounted.
    sample_traces: float = field(default_factory=lambda: default_sample_traces())
    # The user's own Django project (--app) instead of the bundled target; see asyncprof.project.
    app: Path | None = None
    wsgi: str | None = None  # MODULE:ATTR served by WSGI modes
    asgi: str | None = None  # MODULE:ATTR served by ASGI modes
    settings: str | None = None  # DJANGO_SETTINGS_MODULE (default: what the project's manage.py sets)
    locustfile: Path | None = None  # the user's own locustfile (their user classes), with --app
    paths: tuple[str, ...] = ()  # --path values: GETs, optionally weighted (/items/:3); with --app
    setup: str | None = None  # shell command run in the project directory before the server starts

    def validate(self) -> "RecordConfig":
        """Check every knob, fill in defaults (the view; ``calibrate`` in canonical form), return self.

        ``calibrate`` must be None unless the scenario is ``calibrate``; for that
        scenario it defaults to all zeros.
        """
        mode = get_mode(self.mode)
        if self.app is not None:
            self._validate_app(mode.interface, mode.name)
        elif self.wsgi or self.asgi or self.settings or self.setup or self.locustfile or self.paths:
            raise UsageError("--wsgi, --asgi, --settings, --setup, --locustfile and --path apply to your own "
                             "project only", "add --app DIR (the directory with manage.py)")
        scenario = get_scenario(self.scenario if self.app is None else "seed")
        if self.view is None and self.app is None:
            self.view = mode.default_view
        if self.threads is None:
            self.threads = mode.default_threads
        elif mode.default_threads is None:
            threaded = ", ".join(sorted(m.name for m in MODES.values() if m.default_threads is not None))
            raise UsageError(f"--threads does not apply to mode {mode.name!r}", f"modes with threads: {threaded}")
        else:
            _check_range("--threads", self.threads, 1, 1024)
        if self.app is None:
            if self.view not in ("sync", "async"):
                raise UsageError(f"--view must be sync or async, not {self.view!r}")
            scenario.endpoints_for(self.view)
        _check_range("--workers", self.workers, 1, 256)
        _check_range("--users", self.users, 1, 100_000)
        _check_range("--duration", self.duration, 0.5, 24 * 3600)
        _check_range("--warmup", self.warmup, 0, 3600)
        _check_range("--rows", self.rows, 1, 100_000_000)
        _check_range("--pool-size", self.pool_size, 1, 1000)
        _check_range("--pyspy-rate", self.pyspy_rate, 1, 1000)
        _check_range("--profile-every", self.profile_every, 1, 10_000_000)
        _check_range("--upstream-delay-ms", self.upstream_delay_ms, 0, 10_000)
        if not 0 < self.sample_traces <= 1:  # NaN too: an unreadable ASYNCPROF_SAMPLE_TRACES
            given = os.environ.get(SAMPLE_TRACES_ENV, "") if math.isnan(self.sample_traces) else f"{self.sample_traces:g}"
            raise UsageError(f"--sample-traces (or {SAMPLE_TRACES_ENV}) must be above 0 and at most 1, not {given!r}",
                             "e.g. --sample-traces 0.1 traces and accounts one request in ten")
        if self.otlp is not None:
            from asyncprof.exporters.otlp_env import check_url

            check_url(self.otlp)
            if not self.otel:
                raise UsageError("--otlp exports OpenTelemetry spans, and --no-otel switches them off",
                                 "drop one of the two")
        if self.spawn_rate is not None:
            _check_range("--spawn-rate", self.spawn_rate, 0.01, 100_000)
        if self.rate is not None:
            _check_range("--rate", self.rate, 0.1, 1_000_000)
        _check_range("--load-processes", self.load_processes, 1, 256)
        _check_range("--load-remote-workers", self.load_remote_workers, 0, 10_000)
        if self.load_master_port is not None:
            _check_range("--load-master-port", self.load_master_port, 1, 65535)
        if self.load_remote_workers and self.load_master_bind in ("127.0.0.1", "localhost", "::1"):
            raise UsageError("--load-remote-workers needs the Locust master reachable from other machines",
                             "add --load-master-bind 0.0.0.0 (or this machine's address)")
        if self.pin is not None:
            split_cpus(self.pin, usable_cpus())
        if self.port is not None:
            _check_range("--port", self.port, 1, 65535)
        if self.connect not in CONNECT_POLICIES:
            raise UsageError(f"--connect must be one of {', '.join(CONNECT_POLICIES)}, not {self.connect!r}")
        if scenario.name == CALIBRATE_SCENARIO:
            # No --calibrate: a request that does nothing but answer (all zeros).
            calibration = parse_calibration(self.calibrate) if self.calibrate is not None else Calibration()
            self.calibrate = calibration.to_env()
        elif self.calibrate is not None:
            raise UsageError(f"--calibrate only applies to --scenario {CALIBRATE_SCENARIO}, not {scenario.name!r}",
                             f"use --scenario {CALIBRATE_SCENARIO} --calibrate {self.calibrate}")
        return self

    def _validate_app(self, interface: str, mode: str) -> None:
        """The ``--app`` knobs: the project must resolve, serve *interface*, and have one source of load."""
        if self.scenario not in (APP_SCENARIO, "seed"):
            raise UsageError(f"--scenario {self.scenario} is the bundled target's; --app records your project",
                             "drop --scenario; choose the load with --path or --locustfile")
        if self.view is not None:
            raise UsageError("--view chooses the bundled target's views; --app serves your project's",
                             "drop --view")
        project = self.project
        assert project is not None
        project.application(interface, mode)
        if self.locustfile is not None:
            if self.paths:
                raise UsageError("--locustfile and --path both say what to request", "give one of them")
            if not Path(self.locustfile).is_file():
                raise UsageError(f"--locustfile {self.locustfile}: no such file")
            if self.rate is not None:
                raise UsageError("--rate drives asyncprof's own open-loop users, not a locustfile's",
                                 "use --path with --rate, or set the pace in your locustfile")
            self.locustfile = Path(self.locustfile).resolve()
        else:
            from asyncprof.project import parse_paths

            parse_paths(self.paths or ("/",))
        self.scenario = APP_SCENARIO

    @property
    def project(self) -> Any:
        """The :class:`asyncprof.project.Project` of ``--app`` (checked; UsageError if wrong), or None."""
        if self.app is None:
            return None
        from asyncprof.project import load_project

        return load_project(self.app, wsgi=self.wsgi, asgi=self.asgi, settings=self.settings)

    @property
    def endpoints(self) -> tuple[tuple[str, str, int], ...]:
        """What asyncprof's own users request: ``--path`` (default ``/``) for a project, else the scenario's
        endpoints for the view (after :meth:`validate`); empty when a locustfile sends the load."""
        if self.app is None:
            return get_scenario(self.scenario).endpoints_for(self.view or get_mode(self.mode).default_view)
        if self.locustfile is not None:
            return ()
        from asyncprof.project import parse_paths

        return parse_paths(self.paths or ("/",))

    @property
    def calibration(self) -> Calibration | None:
        """The parsed ``calibrate`` text, or None when there is none (every scenario but calibrate).

        Raises UsageError if the text is invalid; after :meth:`validate` it never does.
        """
        return parse_calibration(self.calibrate) if self.calibrate is not None else None

    @property
    def pinning(self) -> dict[str, list[int]] | None:
        """The CPU sets of ``--pin`` (``load``: Locust, py-spy and the upstream; ``target``: server and
        embedded database), or None without ``--pin``."""
        if self.pin is None:
            return None
        load, target = split_cpus(self.pin, usable_cpus())
        return {"load": load, "target": target}

    @property
    def effective_spawn_rate(self) -> float:
        """Users start within one second by default, so warm-up covers the ramp."""
        return self.spawn_rate if self.spawn_rate is not None else float(self.users)

    def to_manifest(self) -> dict[str, Any]:
        """The config as recorded; the database is stored by kind only (the recorder adds a redacted URL)."""
        data = asdict(self)
        data["out"] = str(self.out)
        for key in ("app", "locustfile"):
            data[key] = str(data[key]) if data[key] is not None else None
        data["paths"] = list(self.paths)
        if self.app is not None:
            data["app_packages"] = list(self.project.packages)
        data["db"] = "embedded" if self.db == "embedded" else "url"
        if self.otlp is not None:
            from asyncprof.database import redact

            data["otlp"] = redact(self.otlp)
        data["spawn_rate"] = self.effective_spawn_rate
        calibration = self.calibration
        data["calibrate"] = asdict(calibration) if calibration is not None else None
        return data


def _check_range(flag: str, value: float, low: float, high: float) -> None:
    if not (low <= value <= high):
        raise UsageError(f"{flag} must be between {low:g} and {high:g}, not {value:g}")


def default_sample_traces() -> float:
    """``--sample-traces``'s default: ``$ASYNCPROF_SAMPLE_TRACES`` if set (NaN if it is not a number,
    which :meth:`RecordConfig.validate` refuses), else :data:`DEFAULT_SAMPLE_TRACES`."""
    text = os.environ.get(SAMPLE_TRACES_ENV, "").strip()
    if not text:
        return DEFAULT_SAMPLE_TRACES
    try:
        return float(text)
    except ValueError:
        return float("nan")
