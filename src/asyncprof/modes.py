"""The worker-mode registry: a mode name maps to how its server starts.

Adding a mode is one :func:`register` call with a function that turns a
:class:`ServerSpec` into an argv.  The recorder knows nothing mode-specific.
"""

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from asyncprof.errors import UsageError

Interface = Literal["wsgi", "asgi"]

WSGI_APP = "asyncprof.worker.wsgi:application"
ASGI_APP = "asyncprof.worker.asgi:application"
GUNICORN_CONF = "python:asyncprof.worker.gunicorn_conf"


@dataclass(frozen=True)
class ServerSpec:
    """Where and how big: what every mode's command builder receives."""

    host: str
    port: int
    workers: int


@dataclass(frozen=True)
class Mode:
    """One way of serving the target.

    ``interface`` decides which application object is served and which view
    flavour the load hits by default (sync views under WSGI, async under ASGI).
    ``requires`` lists modules that must import; ``extra`` names the pip extra
    that provides them.
    """

    name: str
    interface: Interface
    description: str
    command: Callable[[ServerSpec], list[str]]
    requires: tuple[str, ...] = field(default=())
    extra: str | None = None

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


def _gunicorn(worker_class: str, app: str) -> Callable[[ServerSpec], list[str]]:
    def command(spec: ServerSpec) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn",
            "-c", GUNICORN_CONF,
            "--bind", f"{spec.host}:{spec.port}",
            "--workers", str(spec.workers),
            "--worker-class", worker_class,
            "--log-level", "warning",
            app,
        ]  # fmt: skip

    return command


register(
    Mode(
        name="sync",
        interface="wsgi",
        description="gunicorn sync workers, WSGI (one request at a time per worker)",
        command=_gunicorn("sync", WSGI_APP),
        requires=("gunicorn",),
    )
)
register(
    Mode(
        name="async",
        interface="asgi",
        description="gunicorn with uvicorn workers (uvicorn-worker), ASGI",
        command=_gunicorn("uvicorn_worker.UvicornWorker", ASGI_APP),
        requires=("gunicorn", "uvicorn", "uvicorn_worker"),
    )
)
