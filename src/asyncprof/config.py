"""What ``asyncprof record`` was asked to do, validated before anything starts."""

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asyncprof.calibration import Calibration, parse_calibration
from asyncprof.errors import UsageError
from asyncprof.modes import MODES, get_mode
from asyncprof.processes import split_cpus, usable_cpus
from asyncprof.scenarios import get_scenario

CONNECT_POLICIES = ("persistent", "per-request")
DEFAULT_PYSPY_RATE = 20
CALIBRATE_SCENARIO = "calibrate"


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
    profile_every: int = 100
    out: Path = field(default_factory=lambda: Path("traces"))
    calibrate: str | None = None  # the calibrate scenario's cost; canonical after validate()
    upstream_delay_ms: float = 20.0  # the upstream service's delay per call, for scenarios that need it (fanout)
    otlp: str | None = None  # --otlp URL: live OTLP/HTTP export (else the OTEL_EXPORTER_OTLP_* variables, if set)
    sample_traces: float = 1.0  # fraction of requests traced, by trace id (the traceparent's sampled flag)

    def validate(self) -> "RecordConfig":
        """Check every knob, fill in defaults (the view; ``calibrate`` in canonical form), return self.

        ``calibrate`` must be None unless the scenario is ``calibrate``; for that
        scenario it defaults to all zeros.
        """
        mode = get_mode(self.mode)
        scenario = get_scenario(self.scenario)
        if self.view is None:
            self.view = mode.default_view
        if self.threads is None:
            self.threads = mode.default_threads
        elif mode.default_threads is None:
            threaded = ", ".join(sorted(m.name for m in MODES.values() if m.default_threads is not None))
            raise UsageError(f"--threads does not apply to mode {mode.name!r}", f"modes with threads: {threaded}")
        else:
            _check_range("--threads", self.threads, 1, 1024)
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
        if not 0 < self.sample_traces <= 1:
            raise UsageError(f"--sample-traces must be above 0 and at most 1, not {self.sample_traces:g}",
                             "e.g. --sample-traces 0.1 traces one request in ten")
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
