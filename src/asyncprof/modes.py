"""The worker-mode registry: a mode name maps to how its server starts.

Adding a mode is one :func:`register` call with a function that turns a
:class:`ServerSpec` into an argv.  The recorder knows nothing mode-specific.

Every server runs the same application modules (:mod:`asyncprof.worker.wsgi`,
:mod:`asyncprof.worker.asgi`).  Under gunicorn its hooks install the
instruments after fork; every other server gets them when a worker imports the
application, and ``Mode.announce`` says when such a worker writes its
``workers/<pid>.json`` (the recorder waits for one per worker).
"""

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from asyncprof.errors import UsageError
from asyncprof.worker import env as worker_env

Interface = Literal["wsgi", "asgi"]
#: When a worker says it is ready: gunicorn's ``post_worker_init`` hook, the ASGI lifespan
#: startup (the server is about to serve), or the import of the application module.
Announce = Literal["gunicorn", "lifespan", "import"]

WSGI_APP = "asyncprof.worker.wsgi:application"
ASGI_APP = "asyncprof.worker.asgi:application"
GUNICORN_CONF = "python:asyncprof.worker.gunicorn_conf"


@dataclass(frozen=True)
class ServerSpec:
    """Where and how big: what every mode's command builder receives."""

    host: str
    port: int
    workers: int
    threads: int | None = None  # per worker, for the modes that take ``--threads``


@dataclass(frozen=True)
class Mode:
    """One way of serving the target.

    ``interface`` decides which application object is served and which view
    flavour the load hits by default (sync views under WSGI, async under ASGI).
    ``requires`` lists modules that must import; ``extra`` names the pip extra
    that provides them.  ``default_threads`` is set for the modes that take
    ``--threads`` (threads per worker process), None for the others.
    ``worker_env`` is added to the server's environment (see :mod:`asyncprof.worker.env`).
    """

    name: str
    interface: Interface
    description: str
    command: Callable[[ServerSpec], list[str]]
    requires: tuple[str, ...] = field(default=())
    extra: str | None = None
    announce: Announce = "gunicorn"
    default_threads: int | None = None
    worker_env: tuple[tuple[str, str], ...] = ()

    @property
    def default_view(self) -> str:
        return "sync" if self.interface == "wsgi" else "async"

    def check_installed(self) -> None:
        """Raise UsageError naming the extra to install if a required module is missing."""
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            extra = f"pip install 'asyncprof[{self.extra}]'" if self.extra else f"pip install {' '.join(missing)}"
            raise UsageError(f"mode {self.name!r} needs {', '.join(missing)}", f"install it: {extra}")


MODES: dict[str, Mode] = {}


def register(mode: Mode) -> Mode:
    """Add *mode* to the registry (a later registration with the same name replaces it)."""
    MODES[mode.name] = mode
    return mode


def get_mode(name: str) -> Mode:
    """Return the registered mode called *name*, or raise UsageError listing the known ones."""
    try:
        return MODES[name]
    except KeyError:
        raise UsageError(f"unknown mode {name!r}", f"known modes: {', '.join(sorted(MODES))}") from None


def _hostport(spec: ServerSpec) -> str:
    return f"[{spec.host}]:{spec.port}" if ":" in spec.host else f"{spec.host}:{spec.port}"


def _gunicorn(worker_class: str, app: str, *, threads: bool = False) -> Callable[[ServerSpec], list[str]]:
    def command(spec: ServerSpec) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn",
            "-c", GUNICORN_CONF,
            "--bind", _hostport(spec),
            "--workers", str(spec.workers),
            "--worker-class", worker_class,
            *(["--threads", str(spec.threads or 1)] if threads else []),
            "--log-level", "warning",
            app,
        ]  # fmt: skip

    return command


def _uvicorn(spec: ServerSpec) -> list[str]:
    # uvicorn's own process manager; --loop/--http auto: uvloop and httptools when installed
    # (the workers report which ran).  No access log, as under gunicorn.
    return [
        sys.executable, "-m", "uvicorn",
        "--host", spec.host, "--port", str(spec.port),
        "--workers", str(spec.workers),
        "--loop", "auto", "--http", "auto", "--lifespan", "on",
        "--no-access-log", "--log-level", "warning",
        ASGI_APP,
    ]  # fmt: skip


def _hypercorn(spec: ServerSpec) -> list[str]:
    return [
        sys.executable, "-m", "hypercorn",
        "--bind", _hostport(spec),
        "--workers", str(spec.workers),
        "--worker-class", "asyncio",
        "--log-level", "WARNING",
        ASGI_APP,
    ]  # fmt: skip


def _daphne(spec: ServerSpec) -> list[str]:
    # Daphne serves in one process; asyncprof's pre-fork launcher binds the socket and runs one
    # daphne per worker on it (``--fd``), as a process manager in front of daphne would.
    return [
        sys.executable, "-m", "asyncprof.prefork",
        "--bind", _hostport(spec), "--workers", str(spec.workers), "--",
        sys.executable, "-m", "daphne", "--fd", "{fd}", "-v", "0", ASGI_APP,
    ]  # fmt: skip


def _granian(interface: Interface) -> Callable[[ServerSpec], list[str]]:
    def command(spec: ServerSpec) -> list[str]:
        return [
            sys.executable, "-m", "granian",
            "--interface", interface,
            "--host", spec.host, "--port", str(spec.port),
            "--workers", str(spec.workers),
            *(["--blocking-threads", str(spec.threads or 1)] if interface == "wsgi" else []),
            "--log-level", "warning", "--no-ws",
            WSGI_APP if interface == "wsgi" else ASGI_APP,
        ]  # fmt: skip

    return command


register(
    Mode(
        name="sync",
        interface="wsgi",
        description="gunicorn sync workers, WSGI (one request at a time per worker)",
        command=_gunicorn("sync", WSGI_APP),
        requires=("gunicorn",),
        worker_env=((worker_env.ONE_AT_A_TIME, "1"),),
    )
)
register(
    Mode(
        name="async",
        interface="asgi",
        # The seed thread's setup: uvicorn installed without extras runs asyncio's pure-Python loop
        # and the h11 parser.  Pinned (UvicornH11Worker) so that installing uvloop/httptools for
        # --mode uvicorn does not silently change what this mode measures.
        description="gunicorn with uvicorn workers (uvicorn-worker), ASGI; asyncio loop and h11 parser, as in "
                    "the seed thread (--mode uvicorn for uvloop/httptools)",
        command=_gunicorn("uvicorn_worker.UvicornH11Worker", ASGI_APP),
        requires=("gunicorn", "uvicorn", "uvicorn_worker"),
    )
)
register(
    Mode(
        name="gthread",
        interface="wsgi",
        description="gunicorn threaded workers (gthread), WSGI: --threads requests at a time per worker",
        command=_gunicorn("gthread", WSGI_APP, threads=True),
        requires=("gunicorn",),
        default_threads=4,
    )
)
register(
    Mode(
        name="gevent",
        interface="wsgi",
        description="gunicorn gevent workers, WSGI: one greenlet per connection, psycopg2 made cooperative",
        command=_gunicorn("gevent", WSGI_APP),
        requires=("gunicorn", "gevent"),
        extra="gevent",
    )
)
register(
    Mode(
        name="uvicorn",
        interface="asgi",
        description="uvicorn's own process manager (uvicorn --workers), ASGI; uvloop/httptools when installed",
        command=_uvicorn,
        requires=("uvicorn",),  # a core dependency; the uvicorn extra adds uvloop and httptools
        announce="lifespan",
    )
)
register(
    Mode(
        name="hypercorn",
        interface="asgi",
        description="hypercorn --workers, asyncio workers, ASGI",
        command=_hypercorn,
        requires=("hypercorn",),
        extra="hypercorn",
        announce="lifespan",
        # hypercorn's master stops its workers through a shared event and then SIGTERMs the ones
        # still running: without this a worker still flushing its files when another one has
        # exited would die by that signal.  The master waits for them as it exits.
        worker_env=(("ASYNCPROF_IGNORE_SIGTERM", "1"),),
    )
)
register(
    Mode(
        name="daphne",
        interface="asgi",
        description="daphne (Twisted), ASGI: one daphne process per worker on a shared socket",
        command=_daphne,
        requires=("daphne",),
        extra="daphne",
        announce="import",  # daphne has no lifespan; it imports the app just before listening
    )
)
register(
    Mode(
        name="granian-asgi",
        interface="asgi",
        description="granian (Rust HTTP server) --interface asgi",
        command=_granian("asgi"),
        requires=("granian",),
        extra="granian",
        announce="lifespan",
    )
)
register(
    Mode(
        name="granian-wsgi",
        interface="wsgi",
        description="granian (Rust HTTP server) --interface wsgi: --threads blocking threads per worker",
        command=_granian("wsgi"),
        requires=("granian",),
        extra="granian",
        announce="import",
        default_threads=4,
    )
)
