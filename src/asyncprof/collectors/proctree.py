"""Processes asyncprof did not start, read from ``/proc``: a server's tree, command line and sockets.

Used by ``asyncprof attach`` (:mod:`asyncprof.attacher`).  Everything here only *reads*
``/proc``; nothing signals, traces or changes the processes it looks at.  Every function
tolerates processes that vanish while it reads (a worker restarted by its master): they are
skipped, never an exception.
"""

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

#: Helper processes a Python server's master may fork that serve no request.
_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.semaphore_tracker", "multiprocessing.forkserver")
#: ``module.path:attribute`` as gunicorn, uvicorn, granian, hypercorn and daphne take their app.
_APP_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.()]*$")
#: Packages that are never "the user's app" even when named as the app module.
_NOT_APP = frozenset({"django", "asyncprof", "asyncprof_target"})


def process_state(pid: int) -> str | None:
    """The one-letter state of *pid* from ``/proc/<pid>/stat`` (``R``, ``S``, ``Z`` …), None if there is none."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def process_alive(pid: int) -> bool:
    """Whether *pid* exists and is not a zombie."""
    state = process_state(pid)
    return state is not None and state not in ("Z", "X")


def parent_pid(pid: int) -> int | None:
    """The parent of *pid* from ``/proc/<pid>/stat``, None if there is none."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def process_uid(pid: int) -> int | None:
    """The real uid owning *pid*, None if unreadable."""
    with contextlib.suppress(OSError):
        return os.stat(f"/proc/{pid}").st_uid
    return None


def cmdline(pid: int) -> list[str]:
    """The argv of *pid* (empty for a kernel thread, a vanished or an unreadable process).

    A process that rewrote its title (gunicorn with ``setproctitle``: ``gunicorn: master [app]``)
    shows that title as one element.
    """
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def children(pid: int) -> list[int]:
    """Direct children of *pid*, from ``/proc/<pid>/task/*/children`` (every thread's children)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(c) for c in f.read().split())
    return sorted(set(out))


def descendants(pid: int) -> list[int]:
    """Every live process below *pid* (children, grandchildren …), in tree order, helpers excluded.

    Helpers are ``multiprocessing``'s resource tracker and the like (they serve no request).
    """
    out: list[int] = []
    todo = children(pid)
    while todo:
        child = todo.pop(0)
        if child in out or not process_alive(child):
            continue
        if not any(h in " ".join(cmdline(child)) for h in _HELPERS):
            out.append(child)
        todo.extend(children(child))
    return out


def listening_ports(pids: list[int]) -> set[int]:
    """TCP ports on which any of *pids* holds a listening socket (IPv4 and IPv6).

    Matches the socket inodes in ``/proc/<pid>/fd`` against the LISTEN entries of
    ``/proc/net/tcp{,6}``; processes whose fds cannot be read contribute nothing.
    """
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f, None)
            for line in f:
                cols = line.split()
                if len(cols) > 9 and cols[3] == "0A" and cols[9] in inodes:  # 0A: TCP_LISTEN
                    with contextlib.suppress(ValueError):
                        ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def project_packages(pid: int, limit: int = 20) -> tuple[str, ...]:
    """Top-level Python packages in *pid*'s working directory (a server usually runs from its project).

    Directories with an ``__init__.py`` whose names are identifiers; test and tooling directories
    left out; at most *limit*, sorted.  Empty when the directory cannot be read.
    """
    skip = {"tests", "test", "docs", "build", "dist", "node_modules", "venv", "env", "site-packages"}
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        names = sorted(p.name for p in cwd.iterdir()
                       if p.name.isidentifier() and p.name not in skip and (p / "__init__.py").is_file())
    except OSError:
        return ()
    return tuple(n for n in names if n not in _NOT_APP)[:limit]


@dataclass(frozen=True)
class ServerGuess:
    """What a server's command line says about it; None/empty where it does not say.

    ``server``: ``gunicorn``, ``uvicorn``, ``granian``, ``hypercorn``, ``daphne`` or ``unknown``.
    ``interface``: ``wsgi``/``asgi``.  ``mode``: the asyncprof worker mode that runs the same server
    the same way (``sync``, ``gthread``, ``gevent``, ``async`` for gunicorn with uvicorn workers,
    ``uvicorn``, ``granian-asgi`` …): the findings and the capacity check read it for the server's
    concurrency and advice.  ``app``: the ``module:attr`` served; ``app_packages``: its top-level
    package, as the CPU profile's ``app`` category.
    """

    server: str
    interface: str | None = None
    mode: str | None = None
    threads: int | None = None
    app: str | None = None
    app_packages: tuple[str, ...] = field(default=())
    description: str = ""


def _option(argv: list[str], *names: str) -> str | None:
    """The value of the last ``--name value`` / ``--name=value`` / ``-kvalue`` among *names*."""
    value = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif name.startswith("--") and arg.startswith(name + "="):
                value = arg[len(name) + 1:]
            elif not name.startswith("--") and arg.startswith(name) and len(arg) > len(name):
                value = arg[len(name):]
    return value


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def guess_server(argv: list[str]) -> ServerGuess:
    """Read the server, its interface and the equivalent worker mode from a master's *argv*."""
    words = " ".join(argv)
    title = re.match(r"^(\w+): master \[(.+)\]", words)  # gunicorn's setproctitle title
    app = title.group(2) if title else next((a for a in reversed(argv) if _APP_RE.match(a)), None)
    packages = tuple(p for p in [app.split(".")[0].split(":")[0]] if p not in _NOT_APP) if app else ()
    base = " ".join(os.path.basename(a) for a in argv[:3])
    server = next((s for s in ("gunicorn", "uvicorn", "granian", "hypercorn", "daphne")
                   if s in base or (title and title.group(1) == s)), "unknown")
    interface: str | None = None
    mode: str | None = None
    threads: int | None = None
    if server == "gunicorn" and not title:
        worker = (_option(argv, "-k", "--worker-class") or "").lower()
        threads = _int(_option(argv, "--threads"))
        if "uvicorn" in worker:
            interface, mode = "asgi", "async"
        elif "gevent" in worker:
            interface, mode = "wsgi", "gevent"
        elif worker == "gthread" or (worker in ("", "sync") and (threads or 1) > 1):
            interface, mode = "wsgi", "gthread"
        elif worker in ("", "sync") and not _option(argv, "-c", "--config"):
            interface, mode = "wsgi", "sync"
        elif worker == "sync":
            interface, mode = "wsgi", "sync"
    elif server == "uvicorn":
        interface, mode = "asgi", "uvicorn"
    elif server == "granian":
        interface = _option(argv, "--interface")
        if interface in ("asgi", "wsgi"):
            mode = f"granian-{interface}"
            threads = _int(_option(argv, "--blocking-threads")) if interface == "wsgi" else None
        else:
            interface = "asgi" if interface == "asginl" else None
    elif server in ("hypercorn", "daphne"):
        interface, mode = "asgi", server
    known = f"{server}" + (f" ({mode} workers)" if mode and server == "gunicorn" else "")
    description = f"{known} serving {app}" if app else known
    return ServerGuess(server=server, interface=interface, mode=mode, threads=threads, app=app,
                       app_packages=packages, description=description)
