"""Which part of the server a py-spy sample's CPU time belongs to: one ordered rule table.

Categories (:data:`CATEGORIES`):

``app``                 the user's project packages (default ``asyncprof_target``; more via
                        ``app_packages`` or :func:`add_app_packages`)
``django``              Django itself
``db_driver``           psycopg2 / psycopg / asyncpg, psycogreen (Django's own DB layer stays ``django``)
``http_server``         gunicorn, uvicorn, uvicorn_worker, hypercorn, daphne, granian's Python side, gevent's
                        servers (``baseserver``, ``pywsgi``), Twisted's HTTP (``twisted.web``); the parsers
                        h11 and httptools (httptools is C: its callbacks are uvicorn's ``HttpToolsProtocol``)
``event_loop``          asyncio and uvloop machinery, Twisted's reactor (``twisted.internet``, which daphne
                        runs on asyncio), gevent's hub, greenlet switches, timeouts and cooperative sockets.
                        uvloop's loop is Cython: py-spy shows no frame of it, so its own time is billed to
                        the Python frame that started it (``Runner.run``, asyncio's, still ``event_loop``)
``thread_pool``         thread start/join/bootstrap, concurrent.futures executors, queues, asgiref's
                        sync_to_async / async_to_sync machinery
``otel_and_profilers``  OpenTelemetry, pyinstrument and ``asyncprof`` itself (its in-worker hooks):
                        what our own instruments cost, reported rather than hidden
``other``               no frame matched

How a sample is classified (:meth:`Classifier.classify`), frames walked from the leaf to the root:

1. The first frame matched by a rule with a category decides (*leaf-most match wins*).  Frames no
   rule matches (``json``, ``functools``, ``contextlib``, ``<frozen abc>`` …) and frames matched by
   an :data:`INHERIT` rule (``selectors``, ``threading``'s locks and events, ``asgiref.local``) are
   skipped: generic helpers bill whoever called them.
2. **Claims.**  Walking on past frames of that same category, the next frame of a *different*
   category may *claim* it: if its rule lists the first category in ``claims``, the sample is
   billed to the claimer instead.  This is how asyncio code called *by* the thread-hop machinery
   counts as ``thread_pool`` (``SyncToAsync.__call__ → BaseEventLoop.run_in_executor``; a pool
   thread's ``Future.set_result → call_soon_threadsafe → _write_to_self``), and asyncio transport
   writes made by asyncpg count as ``db_driver`` — while the loop's own scheduling
   (``UvicornWorker.run → asyncio.run → … → _run_once``) stays ``event_loop``, because the worker
   entry point claims nothing.
3. A stack with no Python frame at all is a thread being created or torn down (its C bootstrap):
   :data:`EMPTY_STACK_CATEGORY` (``thread_pool``).  Nothing matched at all: ``other``.

A rule matches a frame ``func (path:line)`` by *path* and *function*.  Paths are py-spy's short
forms, which start at the top-level package (``django/core/handlers/base.py``, ``threading.py``):
a rule path ending in ``/`` matches everything under it, any other rule path matches that file
exactly, and ``""`` matches any file.  *function* is an :func:`fnmatch.fnmatchcase` pattern over
py-spy's qualified name (``Thread.*``, ``connect``).

Caveat of short paths: py-spy shortens a path to the part below the outermost directory that has an
``__init__.py``; ``opentelemetry`` is a namespace package, so OTel's modules appear under their
sub-package names (``trace/__init__.py``, ``dbapi/__init__.py``, ``_semconv.py``, and even
``asyncpg/__init__.py`` / ``psycopg2/__init__.py`` for the driver instrumentors, told from the real
drivers by function name).  A project package with one of those names must be declared as an app
package (app rules come before the built-in table) or given its own rule.

Extending (rules are tried in this order; within each group, first match wins):

* ``extra_rules=`` of :func:`build_classifier` / ``cpu_profile``;
* :func:`add_rule` (process-wide, in the order added);
* app packages: ``app_packages=`` plus :data:`DEFAULT_APP_PACKAGES` plus :func:`add_app_packages`;
* the built-in :data:`RULES`.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

CATEGORIES: tuple[str, ...] = (
    "app", "django", "db_driver", "http_server", "event_loop", "thread_pool", "otel_and_profilers", "other",
)  # fmt: skip
INHERIT: None = None  # a rule category meaning "skip this frame, its caller decides"
EMPTY_STACK_CATEGORY = "thread_pool"
NO_FRAMES = "<no Python frames>"
DEFAULT_APP_PACKAGES: tuple[str, ...] = ("asyncprof_target",)


@dataclass(frozen=True)
class Rule:
    """*category* (or :data:`INHERIT`) for frames whose file matches *path* and name *function*.

    ``claims``: categories this frame takes over when they are the leaf-most match below it.
    """

    category: str | None
    path: str
    function: str = "*"
    claims: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for c in (self.category, *self.claims):
            if c is not None and c not in CATEGORIES:
                raise ValueError(f"unknown category {c!r}; use one of {', '.join(CATEGORIES)}")

    def matches(self, func: str, path: str) -> bool:
        """True if a frame's qualified name *func* and short *path* fall under this rule."""
        if self.path.endswith("/"):
            if not path.startswith(self.path):
                return False
        elif self.path and path != self.path:
            return False
        return self.function == "*" or fnmatchcase(func, self.function)


_LOOP = ("event_loop",)
_OTEL = "otel_and_profilers"
# OpenTelemetry's modules as py-spy names them (see the module docstring): sub-packages of
# opentelemetry/, opentelemetry/sdk/ and opentelemetry/instrumentation/, and the bare file names
# of modules that sit directly in a namespace directory.
_OTEL_DIRS = (
    "opentelemetry/", "trace/", "context/", "attributes/", "baggage/", "propagate/", "propagators/",
    "metrics/", "resources/", "_shared_internal/", "_logs/", "_events/", "_configuration/",
    "environment_variables/", "error_handler/", "semconv/", "exporter/", "proto/", "_labeler/",
    "asgi/", "wsgi/", "dbapi/", "auto_instrumentation/",
)  # fmt: skip
_OTEL_FILES = (
    "_semconv.py", "_decorator.py", "composite.py", "instrumentor.py", "sqlcommenter_utils.py",
    "_once.py", "_providers.py", "_importlib_metadata.py", "cidict.py", "log_utils.py",
)  # fmt: skip
_OTEL_UTILS = (  # opentelemetry/instrumentation/utils.py, seen as a bare "utils.py"
    "_start_internal_or_server_span", "http_status_to_status_code", "is_instrumentation_enabled",
    "is_http_instrumentation_enabled", "extract_attributes_from_object", "unwrap", "_url_quote",
    "_get_opentelemetry_values", "_python_path_without_directory", "*suppress*instrumentation",
)  # fmt: skip
_OTEL_HTTP_UTILS = (  # opentelemetry/util/http/__init__.py, seen as "http/__init__.py" like the stdlib's http
    "ExcludeList.*", "SanitizeValue.*", "get_traced_request_attrs", "get_excluded_urls", "parse_excluded_urls",
    "remove_url_credentials", "normalise_re*_header_name", "sanitize_method", "get_custom_header*",
    "_parse_active_request_count_attrs", "_parse_duration_attrs", "_parse_url_query", "redact_query_parameters",
    "redact_url", "normalize_user_agent", "detect_synthetic_user_agent",
)  # fmt: skip
_DRIVERS = ("psycopg2/", "psycopg/", "psycopg_pool/", "psycopg_c/", "asyncpg/", "aiopg/", "sqlite3/")

#: The built-in table, tried after user and app rules.  Order matters: first match wins.
RULES: tuple[Rule, ...] = (
    # Our own instruments and the profiler (asyncprof.worker runs inside the measured workers).
    Rule(_OTEL, "asyncprof/"),
    Rule(_OTEL, "pyinstrument/"),
    *(Rule(_OTEL, d) for d in _OTEL_DIRS),
    *(Rule(_OTEL, f) for f in _OTEL_FILES),
    *(Rule(_OTEL, "utils.py", f) for f in _OTEL_UTILS),
    *(Rule(_OTEL, "http/__init__.py", f) for f in _OTEL_HTTP_UTILS),
    Rule(_OTEL, "http/httplib.py"),  # opentelemetry/util/http/httplib.py (the stdlib's is http/client.py)
    Rule(_OTEL, "util/instrumentation.py"),  # opentelemetry/sdk/util/
    Rule(_OTEL, "util/__init__.py", "Bounded*"),
    # OTel's driver instrumentors shorten to the drivers' own __init__.py; the real psycopg2
    # __init__ defines only connect(), asyncpg's and psycopg's define no function at all.
    Rule("db_driver", "psycopg2/__init__.py", "connect"),
    Rule("db_driver", "psycopg/__init__.py", "connect"),
    Rule(_OTEL, "psycopg2/__init__.py"),
    Rule(_OTEL, "psycopg/__init__.py"),
    Rule(_OTEL, "asyncpg/__init__.py"),
    *(Rule("db_driver", d, claims=_LOOP) for d in _DRIVERS),
    # psycogreen's wait callbacks make psycopg2 cooperative under gevent/eventlet: the driver's wait.
    Rule("db_driver", "psycogreen/", claims=_LOOP),
    Rule(_OTEL, "django/middleware/otel_middleware.py"),  # opentelemetry-instrumentation-django
    Rule("django", "django/"),
    # The thread hop.  asgiref.local is the context-local storage Django reads everywhere: billed
    # to its caller.  asgiref.sync / current_thread_executor are the sync<->async bridges.
    Rule(INHERIT, "asgiref/local.py"),
    Rule("thread_pool", "asgiref/", claims=_LOOP),
    Rule("thread_pool", "concurrent/futures/", claims=_LOOP),
    Rule("thread_pool", "queue.py"),
    Rule("thread_pool", "threading.py", "Thread.*"),
    Rule("thread_pool", "threading.py", "_newname"),
    Rule("thread_pool", "threading.py", "_maintain_shutdown_locks"),
    Rule("thread_pool", "", "*start_new_thread*"),  # _thread's C entry, if frames ever show it
    Rule(INHERIT, "threading.py"),  # Condition, Event, Semaphore, current_thread …: the caller's
    # HTTP servers.  uvicorn's protocols write through asyncio transports: that I/O is theirs.
    # uvicorn_worker / gunicorn / uvicorn.server start the loop: what runs under it is not theirs.
    Rule("http_server", "uvicorn/protocols/", claims=_LOOP),
    Rule("http_server", "uvicorn/middleware/", claims=_LOOP),
    # gunicorn's request handling (its parser, the gevent worker's per-connection loop and timeouts)
    # reads and writes through gevent's cooperative sockets under --mode gevent: that I/O is its own.
    Rule("http_server", "gunicorn/http/", claims=_LOOP),
    Rule("http_server", "gunicorn/workers/base_async.py", claims=_LOOP),
    Rule("http_server", "gunicorn/util.py", "write*", claims=_LOOP),
    Rule("http_server", "gunicorn/workers/ggevent.py", "GeventWorker.handle*", claims=_LOOP),
    Rule("http_server", "gunicorn/workers/ggevent.py", "GeventWorker.timeout_ctx", claims=_LOOP),
    # hypercorn: the worker entry (asyncio_worker -> asyncio.run) starts the loop and claims nothing;
    # its TCP server, task group and protocol code (h11 / h2 state machines) read and write through
    # asyncio streams and create the request tasks: that loop work is theirs.
    *(Rule("http_server", f) for f in ("hypercorn/asyncio/run.py", "hypercorn/asyncio/__init__.py",
                                        "hypercorn/trio/run.py", "hypercorn/run.py", "hypercorn/__main__.py")),
    Rule("http_server", "hypercorn/", claims=_LOOP),
    # daphne: its CLI and Server.run start Twisted's reactor (on asyncio) and claim nothing; its
    # request handling and twisted.web (daphne's HTTP/1.1 parser, with LineReceiver underneath) write
    # through the reactor's transports.  twisted.python's log/context wrappers bill their caller.
    *(Rule("http_server", f) for f in ("daphne/cli.py", "daphne/__main__.py")),
    Rule("http_server", "daphne/server.py", "Server.run"),
    Rule("http_server", "daphne/", claims=_LOOP),
    Rule("http_server", "twisted/web/", claims=_LOOP),
    Rule("http_server", "twisted/protocols/", claims=_LOOP),
    Rule(INHERIT, "twisted/python/"),
    Rule(INHERIT, "twisted/logger/"),
    # granian parses HTTP in Rust; its Python side is the server/CLI entry (which starts the loop:
    # claims nothing) and the per-request glue: _futures.py schedules each request's task on the
    # loop and watches it, asgi.py / wsgi.py wrap the application callable.
    *(Rule("http_server", f) for f in ("granian/server/", "granian/cli.py", "granian/__main__.py")),
    Rule("http_server", "granian/", claims=_LOOP),
    # gevent: every connection's greenlet starts in baseserver (the root of its stack, like
    # Handle._run for a task: claims nothing); pywsgi is gevent's own HTTP server.
    Rule("http_server", "gevent/baseserver.py"),
    Rule("http_server", "gevent/server.py"),
    Rule("http_server", "gevent/pywsgi.py", claims=_LOOP),
    *(Rule("http_server", d) for d in ("uvicorn/", "uvicorn_worker/", "gunicorn/", "h11/", "httptools/")),
    Rule(INHERIT, "asyncio/coroutines.py"),  # iscoroutinefunction & co: introspection, not the loop
    Rule("event_loop", "asyncio/"),
    Rule("event_loop", "uvloop/"),
    Rule("event_loop", "twisted/internet/"),  # the reactor: asyncioreactor, transports, Deferreds
    # gevent's stand-ins for threading's primitives (monkey-patched in) bill their caller, as
    # threading's own do; the rest of gevent is its loop: the hub, greenlet switches, timeouts,
    # cooperative sockets and select.
    *(Rule(INHERIT, f) for f in ("gevent/thread.py", "gevent/threading.py", "gevent/_threading.py",
                                  "gevent/local.py", "gevent/lock.py", "gevent/_semaphore.py")),
    Rule("event_loop", "gevent/"),
    Rule("event_loop", "greenlet/"),
)

_user_rules: list[Rule] = []
_user_app_packages: list[str] = []


def add_rule(category: str | None, path: str, function: str = "*", claims: Iterable[str] = ()) -> Rule:
    """Add a process-wide rule, tried before app packages and the built-in table; returns it."""
    rule = Rule(category, path, function, tuple(claims))
    _user_rules.append(rule)
    return rule


def add_app_packages(*packages: str) -> None:
    """Count these packages (``mysite``, ``mysite.shop``) as ``app`` in every later classifier."""
    _user_app_packages.extend(packages)


def reset_user_rules() -> None:
    """Forget everything :func:`add_rule` and :func:`add_app_packages` added."""
    _user_rules.clear()
    _user_app_packages.clear()


def app_rules(packages: Iterable[str]) -> list[Rule]:
    """``app`` rules for dotted package names (a package directory, or a single-module app)."""
    rules: list[Rule] = []
    for name in dict.fromkeys(p.strip().strip(".") for p in packages if p.strip()):
        path = name.replace(".", "/")
        rules += [Rule("app", path + "/"), Rule("app", path + ".py")]
    return rules


def split_frame(frame: str) -> tuple[str, str]:
    """``func (path:line)`` -> ``(func, path)``; a frame without a location gives ``(frame, "")``."""
    func, sep, rest = frame.partition(" (")
    if not sep:
        return frame, ""
    return func, rest.rstrip(")").rsplit(":", 1)[0]


def function_name(frame: str) -> str:
    """A frame without its line number: ``func (path)``, the key of per-function counts."""
    func, path = split_frame(frame)
    return f"{func} ({path})" if path else func


@dataclass
class Classifier:
    """An ordered rule list with a per-frame cache; build one with :func:`build_classifier`."""

    rules: tuple[Rule, ...]
    app_packages: tuple[str, ...] = ()
    _cache: dict[str, Rule | None] = field(default_factory=dict, repr=False)

    def rule_for(self, frame: str) -> Rule | None:
        """The first rule matching *frame*, or None."""
        try:
            return self._cache[frame]
        except KeyError:
            func, path = split_frame(frame)
            found = next((r for r in self.rules if r.matches(func, path)), None)
            self._cache[frame] = found
            return found

    def classify(self, frames: Sequence[str]) -> tuple[str, int]:
        """(category, index of the deciding frame) of a root-first stack; index -1 if none decided."""
        if not frames:
            return EMPTY_STACK_CATEGORY, -1
        first: tuple[str, int] | None = None
        for i in range(len(frames) - 1, -1, -1):
            rule = self.rule_for(frames[i])
            if rule is None or rule.category is None:
                continue
            if first is None:
                first = (rule.category, i)
            elif rule.category != first[0]:
                return (rule.category, i) if first[0] in rule.claims else first
        return first if first is not None else ("other", -1)


def build_classifier(app_packages: Sequence[str] = (), extra_rules: Sequence[Rule] = ()) -> Classifier:
    """A classifier for *extra_rules*, :func:`add_rule`'s rules, the app packages, then :data:`RULES`.

    App packages are :data:`DEFAULT_APP_PACKAGES` plus *app_packages* plus :func:`add_app_packages`'s.
    """
    packages = tuple(dict.fromkeys((*DEFAULT_APP_PACKAGES, *app_packages, *_user_app_packages)))
    rules = (*extra_rules, *_user_rules, *app_rules(packages), *RULES)
    return Classifier(rules=tuple(rules), app_packages=packages)
