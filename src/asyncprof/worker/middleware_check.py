"""Which of the user's Django middleware make Django cross between async and sync under ASGI.

Django builds its middleware chain once per handler (``BaseHandler.load_middleware``), from
the innermost entry of ``settings.MIDDLEWARE`` outwards, and adapts each link to the mode of
the one below it (``adapt_method_mode``: ``sync_to_async`` or ``async_to_sync``):

* a middleware runs async when its ``async_capable`` flag is set (default False), unless the
  handler below it is sync and it is ``sync_capable`` (default True): then it runs sync, so a
  sync-only middleware drags every sync-capable one outside it into its thread.  Each
  contiguous run of middleware that runs sync costs two hops per request under ASGI: one into
  the thread at its outer edge (the ASGI handler above is async) and one back out at its inner
  edge (the view dispatcher ``_get_response_async`` below is async).
* ``MiddlewareMixin`` subclasses are async capable, but when they run async their
  ``__acall__`` calls ``process_request`` and ``process_response`` through ``sync_to_async``:
  one hop per sync hook and request.
* ``process_view`` and ``process_template_response`` are adapted to the handler's own mode
  (async under ASGI) whatever the middleware's mode: a sync one hops on every view call
  (``process_template_response`` only for template responses).  ``process_exception`` runs
  only for exceptions and is not reported.

:func:`sync_only_middleware` repeats that rule on the configured settings, without building
the chain (middleware factories are never called: their ``__init__`` may have side effects,
and ``MiddlewareNotUsed`` is therefore not seen).  The worker writes its result into
``workers/<pid>.json`` (key ``middleware``); the hop finding names the user's entries.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass, field
from typing import Any

#: Per-request hooks Django adapts to the handler's mode under ASGI, and each hop on every request.
LOADER_HOOKS = ("process_view", "process_template_response")
#: Hooks ``MiddlewareMixin.__acall__`` runs through ``sync_to_async`` when the middleware runs async.
MIXIN_HOOKS = ("process_request", "process_response")
#: Hooks that cross on every request (a template response is not every response).
_EVERY_REQUEST = frozenset({"process_request", "process_response", "process_view"})
#: Hook order in reports: the order Django calls them in.
_HOOK_ORDER = ("process_request", "process_view", "process_template_response", "process_response")


@dataclass
class _Entry:
    """One ``settings.MIDDLEWARE`` entry while the chain is simulated."""

    path: str
    factory: Any = None  # None: it could not be imported
    error: str | None = None
    runs_async: bool | None = None  # None: Django would refuse it, or it was not importable
    hooks: list[str] = field(default_factory=list)


def sync_only_middleware() -> list[dict[str, Any]]:
    """The configured middleware that Django adapts under ASGI, outermost first; never raises.

    Each entry is a JSON-ready dict:

    * ``path``: the ``settings.MIDDLEWARE`` string;
    * ``kind``: ``"sync_only"`` (not ``async_capable``: Django runs it in a thread),
      ``"sync_hooks"`` (async capable, but sync hook methods hop), or ``"unimportable"``
      (importing it failed here; ``error`` says how);
    * ``hooks``: its sync hook methods that cross separately, in Django's call order
      (for a sync-only middleware only ``process_view``/``process_template_response``: its
      ``process_request``/``process_response`` already run in its thread);
    * ``hops``: sync<->async crossings per request it causes where it stands in the chain: for
      a sync-only middleware the two of the thread run it is in (shared with any other
      sync-only middleware of that run) plus a sync ``process_view``; for the others their
      hooks that cross on every request (``process_request``/``process_response`` only while
      it runs async: inside another middleware's thread they do not cross); None if unimportable;
    * ``thread_with`` (sync-only only): the other entries Django runs in the same thread.

    Middleware that runs async without sync hooks (``sync_and_async_middleware``, async-only)
    is not listed.  Empty when Django is not in use or its settings cannot be read.
    """
    try:
        paths = _configured_middleware()
        if not paths:
            return []
        entries = [_load(path) for path in paths]
        _simulate_asgi_chain(entries)
        return _report(entries)
    except Exception:  # an insight, never a reason for a worker to fail
        return []


def _configured_middleware() -> list[str]:
    """``settings.MIDDLEWARE`` as strings; empty without Django or readable settings.

    Django is not imported here: a worker serving another framework has no settings to read.
    """
    conf = sys.modules.get("django.conf")
    if conf is None:
        return []
    registry = sys.modules.get("django.apps")
    if registry is not None and not getattr(registry.apps, "ready", True):
        # Before django.setup() a middleware module importing models would fail here with
        # AppRegistryNotReady and be reported unimportable: better to say nothing.  The ASGI
        # handler is built (and the workers announce themselves) after setup.
        return []
    try:
        middleware = conf.settings.MIDDLEWARE  # loads DJANGO_SETTINGS_MODULE if not loaded yet
    except Exception:  # ImproperlyConfigured: no settings module, or a broken one
        return []
    if isinstance(middleware, str) or not hasattr(middleware, "__iter__"):
        return []
    return [m for m in middleware if isinstance(m, str)]


def _load(path: str) -> _Entry:
    """Import the entry the way ``load_middleware`` does (``import_string``)."""
    try:
        from django.utils.module_loading import import_string

        return _Entry(path, factory=import_string(path))
    except BaseException as exc:  # a module may even call sys.exit at import
        if isinstance(exc, (KeyboardInterrupt, GeneratorExit)):
            raise
        return _Entry(path, error=f"{type(exc).__name__}: {exc}"[:300])


def _simulate_asgi_chain(entries: list[_Entry]) -> None:
    """Set each entry's ``runs_async`` and ``hooks`` as ``load_middleware(is_async=True)`` would.

    Entries that could not be imported, or that Django would refuse (neither sync nor async
    capable), leave the mode of the chain unchanged: Django itself would not start with them,
    so where the chain changes mode there is a guess either way.
    """
    handler_is_async = True  # ASGIHandler loads the chain with is_async=True
    for entry in reversed(entries):
        if entry.factory is None:
            continue
        can_sync = bool(getattr(entry.factory, "sync_capable", True))
        can_async = bool(getattr(entry.factory, "async_capable", False))
        if not can_sync and not can_async:
            continue
        entry.runs_async = False if (not handler_is_async and can_sync) else can_async
        entry.hooks = _sync_hooks(entry.factory, can_async)
        handler_is_async = entry.runs_async


def _sync_hooks(factory: Any, can_async: bool) -> list[str]:
    """The sync hook methods of *factory* (a class; a factory function exposes none) that cross."""
    if not isinstance(factory, type):
        return []
    names = list(LOADER_HOOKS)
    if can_async and _uses_mixin_acall(factory):
        names += MIXIN_HOOKS
    found = []
    for name in names:
        method = inspect.getattr_static(factory, name, None)  # no descriptor code runs
        if method is None:
            continue
        func = getattr(method, "__func__", method)  # staticmethod/classmethod objects
        if callable(func) and not _is_async(func):
            found.append(name)
    return sorted(found, key=_HOOK_ORDER.index)


def _uses_mixin_acall(cls: type) -> bool:
    """Whether *cls* runs its hooks through ``MiddlewareMixin.__acall__`` (not overridden)."""
    try:
        from django.utils.deprecation import MiddlewareMixin
    except ImportError:
        return False
    return inspect.getattr_static(cls, "__acall__", None) is MiddlewareMixin.__dict__.get("__acall__")


def _is_async(func: Any) -> bool:
    try:
        from asgiref.sync import iscoroutinefunction

        return bool(iscoroutinefunction(func))
    except ImportError:
        return inspect.iscoroutinefunction(func)


def _report(entries: list[_Entry]) -> list[dict[str, Any]]:
    """The listed entries, outermost first (see :func:`sync_only_middleware`)."""
    runs = _thread_runs(entries)
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        if entry.factory is None:
            out.append({"path": entry.path, "kind": "unimportable", "hooks": [], "hops": None,
                        "error": entry.error})
            continue
        if entry.runs_async is None:
            continue
        every = sum(1 for h in entry.hooks if h in _EVERY_REQUEST)
        if not getattr(entry.factory, "async_capable", False):
            run = runs.get(i, [i])
            out.append({"path": entry.path, "kind": "sync_only", "hooks": entry.hooks, "hops": 2 + every,
                        "thread_with": [entries[j].path for j in run if j != i]})
            continue
        if not entry.runs_async:  # inside a sync-only one's thread: its mixin hooks do not cross
            every = sum(1 for h in entry.hooks if h in _EVERY_REQUEST and h not in MIXIN_HOOKS)
        if entry.hooks:
            out.append({"path": entry.path, "kind": "sync_hooks", "hooks": entry.hooks, "hops": every})
    return out


def _thread_runs(entries: list[_Entry]) -> dict[int, list[int]]:
    """Index of each entry that runs sync -> the indexes of its contiguous run (one thread).

    Entries that leave the mode unchanged (unimportable, refused) do not break a run.
    """
    runs: dict[int, list[int]] = {}
    current: list[int] = []
    for i, entry in enumerate(entries):
        if entry.runs_async is None:
            continue
        if entry.runs_async:
            current = []
            continue
        current.append(i)  # the same list object for the whole run
        runs[i] = current
    return runs
