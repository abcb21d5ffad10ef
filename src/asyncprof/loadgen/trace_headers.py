"""W3C ``traceparent`` headers on the requests of a user's own ``HttpUser``/``FastHttpUser`` classes.

:func:`install` wraps ``HttpSession.request`` and ``FastHttpSession.request`` (Locust's two HTTP
clients; every ``get``/``post``/... and ``rest`` call goes through them) so that each request:

* carries a ``traceparent`` header with a fresh trace id and span id, its sampled flag set by
  ``ASYNCPROF_SAMPLE_TRACES`` exactly as asyncprof's own users do (see
  :mod:`asyncprof.loadgen.trace_sampling`), unless the request already has one: in its own
  headers, or in the session's default headers (``client.headers`` of an ``HttpUser``,
  ``default_headers`` of a ``FastHttpUser``).  A header the user set is never replaced; its
  ids are logged instead (none when it is malformed: the server ignores it too);
* reports ``trace_id``, ``span_id`` and ``sampled`` in its Locust ``context``, which Locust passes
  to the ``request`` event, so :mod:`asyncprof.loadgen.request_listener` logs them.

Importing this module changes nothing (asyncprof's own locustfile uses :func:`new_trace` without
the patch); :func:`install` patches, once per process however often it is called.
"""

import functools
import inspect
import os
import random
import re
from collections.abc import Callable, Mapping
from typing import Any

from asyncprof.loadgen.trace_sampling import LOW_64_BITS, SAMPLE_ENV, sample_bound

HEADER = "traceparent"
#: What OpenTelemetry's propagator on the server accepts (lowercase hex, version ``ff`` invalid);
#: a header it would reject starts a new trace there, so its ids must not be logged here.
_TRACEPARENT = re.compile(r"^\s*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\s*$")
_MARK = "_asyncprof_traceparent"
_SAMPLE_BOUND = sample_bound(min(1.0, max(0.0, float(os.environ.get(SAMPLE_ENV) or 1))))


def new_trace(bound: int = _SAMPLE_BOUND) -> dict[str, Any]:
    """Fresh ids for one request: ``{"trace_id": 32 hex, "span_id": 16 hex, "sampled": bool}``.

    ``sampled`` follows the trace id alone (the low 64 bits below *bound*), so any side can
    recompute it; the default bound is ``ASYNCPROF_SAMPLE_TRACES`` (1 when unset).
    """
    tid = random.getrandbits(128) or 1
    return {"trace_id": f"{tid:032x}", "span_id": f"{random.getrandbits(64) or 1:016x}",
            "sampled": (tid & LOW_64_BITS) < bound}


def format_traceparent(trace: Mapping[str, Any]) -> str:
    """The ``traceparent`` value for a :func:`new_trace` dict (version 00)."""
    return f"00-{trace['trace_id']}-{trace['span_id']}-{'01' if trace['sampled'] else '00'}"


def parse_traceparent(value: str) -> dict[str, Any]:
    """The ids of a ``traceparent`` value as :func:`new_trace` gives them; ``{}`` when it is invalid."""
    match = _TRACEPARENT.match(value)
    if match is None:
        return {}
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} or set(span_id) == {"0"}:
        return {}
    return {"trace_id": trace_id, "span_id": span_id, "sampled": bool(int(flags, 16) & 1)}


def _find(headers: Any) -> str | None:
    """The ``traceparent`` in *headers* (a mapping of any case, or pairs), or None."""
    if not headers:
        return None
    pairs = headers.items() if hasattr(headers, "items") else headers
    try:
        for key, value in pairs:
            key = key.decode("latin-1") if isinstance(key, bytes) else str(key)
            if key.lower() == HEADER:
                if isinstance(value, (list, tuple)):  # a multi-valued header: the first one counts
                    value = value[0] if value else ""
                return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    except (TypeError, ValueError):  # not headers we understand: leave them to the client
        return None
    return None


def _with_header(headers: Any, value: str) -> Any:
    """A copy of *headers* (None, a mapping or pairs) with ``traceparent: value`` added."""
    if headers is None:
        return {HEADER: value}
    if isinstance(headers, list):
        return [*headers, (HEADER, value)]
    copy = headers.copy() if hasattr(headers, "copy") else dict(headers)  # keeps the user's type
    copy[HEADER] = value
    return copy


def _session_defaults(session: Any) -> Any:
    # HttpSession (a requests.Session) keeps them in .headers; FastHttpSession's user agent
    # merges .client.default_headers into every request.
    return getattr(session, "headers", None) or getattr(getattr(session, "client", None), "default_headers", None)


def _positional_index(function: Callable[..., Any], parameter: str) -> int | None:
    """Where *parameter* sits among the positional arguments after ``self``, if it can be passed so."""
    params = list(inspect.signature(function).parameters.values())[1:]
    for i, p in enumerate(params):
        if p.name == parameter:
            return i if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) else None
    return None


def _wrap(original: Callable[..., Any]) -> Callable[..., Any]:
    headers_at = _positional_index(original, "headers")
    context_at = _positional_index(original, "context")

    @functools.wraps(original)
    def request(self: Any, *args: Any, **kwargs: Any) -> Any:
        in_args = headers_at is not None and len(args) > headers_at
        headers = args[headers_at] if in_args else kwargs.get("headers")  # type: ignore[index]
        given = _find(headers)
        if given is None:
            given = _find(_session_defaults(self))
        if given is not None:
            trace = parse_traceparent(given)
        else:
            trace = new_trace()
            headers = _with_header(headers, format_traceparent(trace))
            if in_args:
                args = (*args[:headers_at], headers, *args[headers_at + 1:])  # type: ignore[misc, operator]
            else:
                kwargs["headers"] = headers
        if trace:
            if context_at is not None and len(args) > context_at:
                args = (*args[:context_at], {**(args[context_at] or {}), **trace}, *args[context_at + 1:])
            else:
                kwargs["context"] = {**(kwargs.get("context") or {}), **trace}
        return original(self, *args, **kwargs)

    setattr(request, _MARK, True)
    return request


def install() -> None:
    """Wrap ``request`` of Locust's ``HttpSession`` and ``FastHttpSession`` (idempotent)."""
    from locust.clients import HttpSession  # here, not at import: importing the module stays free
    from locust.contrib.fasthttp import FastHttpSession

    for cls in (HttpSession, FastHttpSession):
        if not getattr(cls.request, _MARK, False):
            cls.request = _wrap(cls.request)  # type: ignore[method-assign]


def installed() -> bool:
    """Whether :func:`install` has patched both clients in this process."""
    from locust.clients import HttpSession
    from locust.contrib.fasthttp import FastHttpSession

    return all(getattr(cls.request, _MARK, False) for cls in (HttpSession, FastHttpSession))
