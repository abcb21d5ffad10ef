"""Hop-site names (``call_hooks._site``): what the hop finding quotes for each sync<->async crossing.

The objects are the ones asgiref gets in a Django stack: functions, bound methods, partials,
middleware instances, and Django's ``convert_exception_to_response`` wrappers around them.
"""

import functools
import gc
import math
from collections.abc import Callable
from typing import Any

import pytest

from asyncprof.worker import call_hooks
from asyncprof.worker.call_hooks import _site

HERE = __name__  # this module's name: the user's code here, so its names are qualified


class TimingMiddleware:
    """A sync-only middleware, as a user writes it."""

    def __init__(self, get_response: Callable[[Any], Any] | None = None) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        return request

    def process_view(self, request: Any) -> None:
        return None

    @classmethod
    def build(cls) -> "TimingMiddleware":
        return cls()


class OtherMiddleware(TimingMiddleware):
    pass


def plain(request: Any) -> Any:
    return request


def decorated(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


def test_functions_and_methods_are_qualified_with_their_module() -> None:
    assert _site(plain) == f"{HERE}.plain"
    assert _site(TimingMiddleware().process_view) == f"{HERE}.TimingMiddleware.process_view"
    assert _site(TimingMiddleware.build) == f"{HERE}.TimingMiddleware.build"  # a classmethod: its class
    assert _site(OtherMiddleware().process_view) == f"{HERE}.OtherMiddleware.process_view"  # the object's class
    assert _site(lambda: None) == f"{HERE}.test_functions_and_methods_are_qualified_with_their_module.<locals>.<lambda>"


def test_callable_instances_are_named_by_class() -> None:
    assert _site(TimingMiddleware()) == f"{HERE}.TimingMiddleware"
    assert _site(OtherMiddleware()) == f"{HERE}.OtherMiddleware"  # the cache is by class, not shared


def test_partials_and_wraps_chains_are_followed() -> None:
    assert _site(functools.partial(plain, 1)) == f"{HERE}.plain"
    assert _site(functools.partial(functools.partial(TimingMiddleware().process_view), 1)) == \
        f"{HERE}.TimingMiddleware.process_view"
    assert _site(decorated(decorated(plain))) == f"{HERE}.plain"
    method = types_method(decorated(TimingMiddleware.process_view), TimingMiddleware())
    assert _site(method) == f"{HERE}.TimingMiddleware.process_view"


def types_method(func: Callable[..., Any], owner: object) -> Any:
    import types

    return types.MethodType(func, owner)


def test_djangos_middleware_wrapper_names_the_middleware() -> None:
    """Django adapts ``convert_exception_to_response(middleware_instance)``: ``inner``, whose
    ``__wrapped__`` is the instance; the site is the middleware's class, not ``inner``."""
    from django.core.handlers.exception import convert_exception_to_response
    from django.middleware.common import CommonMiddleware

    inner = convert_exception_to_response(TimingMiddleware(plain))
    assert inner.__qualname__ == "convert_exception_to_response.<locals>.inner"  # what _site used to say
    assert _site(inner) == f"{HERE}.TimingMiddleware"
    # Two wrappers made from the same code name their own middleware (the cache is per function).
    assert _site(convert_exception_to_response(OtherMiddleware(plain))) == f"{HERE}.OtherMiddleware"
    stock = CommonMiddleware(plain)
    assert _site(convert_exception_to_response(stock)) == "CommonMiddleware"  # Django's own stay short
    assert _site(stock.process_request) == "CommonMiddleware.process_request"


def test_asgiref_wrappers_and_builtins() -> None:
    from asgiref.sync import sync_to_async

    assert _site(sync_to_async(plain)) == f"{HERE}.plain"  # SyncToAsync wraps its function
    assert _site(math.sqrt) == "math.sqrt"  # (time.sleep may be gevent's: Locust patches test processes)
    assert _site([].append) == "list.append"
    assert _site(len) == "len"


def test_cached_names_do_not_keep_closures_alive() -> None:
    """Code that hops to a new closure per request must not pile them up in the cache."""
    import weakref

    def make() -> Callable[[], None]:
        payload = bytearray(10)

        def closure() -> None:
            payload.append(1)

        return closure

    func = make()
    ref = weakref.ref(func)
    assert _site(func).endswith("make.<locals>.closure")
    del func
    gc.collect()
    assert ref() is None


def test_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(call_hooks, "_SITE_CACHE_MAX", 3)
    monkeypatch.setattr(call_hooks, "_other_sites", {})
    classes = [type(f"M{i}", (TimingMiddleware,), {}) for i in range(10)]
    names = [_site(cls().process_view) for cls in classes]
    assert names == [f"{HERE}.M{i}.process_view" for i in range(10)]
    assert len(call_hooks._other_sites) <= 3


def test_odd_objects_never_raise() -> None:
    looped = functools.wraps(plain)(lambda: None)
    looped.__wrapped__ = looped  # type: ignore[attr-defined]  # a cycle must not hang the loop
    assert isinstance(_site(looped), str)

    class NoModule:
        def __call__(self) -> None:
            pass

    NoModule.__module__ = None  # type: ignore[assignment]
    assert _site(NoModule()) == "test_odd_objects_never_raise.<locals>.NoModule"

    class Hostile:
        def __getattribute__(self, name: str) -> Any:
            raise RuntimeError(name)

        def __call__(self) -> None:
            pass

    assert _site(Hostile()).endswith("Hostile")
