"""Every client request of the window accounted for: matched to its server trace, or why not.

:func:`account_requests` is a pure function of the request log (the window's), the trace ids of
the server spans, the trace sampling rate and the span counts each worker wrote at exit (see
:mod:`asyncprof.worker.span_counts`).  A request that should have a server span and has none gets
one reason, tried in this order:

``not_sent``
    the load generator dropped it before sending (open loop, too many outstanding): no trace id;
``no_response``
    status 0: the connection failed, so the request may never have reached a worker;
``spans_lost``
    the workers ended spans their exporters never wrote (queue overflow, failed writes): as many
    requests as spans were lost, since any of them may have been a server span;
``worker_unflushed``
    a worker that served load left no span counts (killed, or it never shut down cleanly), so
    the spans it still held in memory were lost with it;
``error_response``
    a 5xx answered without a server span (a server-level error before the application ran);
``unexplained``
    none of the above: a bug in asyncprof's matching, reported rather than hidden.

A run whose match rate is below :data:`COMPLETE_AT` is *incomplete*: its per-request attribution
covers only the matched requests.
"""

from collections.abc import Iterable, Mapping
from itertools import compress
from typing import Any

from asyncprof.analysis.requests import RequestLog

#: The match rate a run needs to be called complete.
COMPLETE_AT = 0.99
REASONS = ("not_sent", "no_response", "spans_lost", "worker_unflushed", "error_response", "unexplained")
#: How the renderers say each reason.
REASON_TEXT = {
    "not_sent": "never sent (dropped by the load generator)",
    "no_response": "no response (connection failed)",
    "spans_lost": "spans lost in the workers",
    "worker_unflushed": "a worker exited without flushing its spans",
    "error_response": "error response without a server span",
    "unexplained": "unexplained",
}


def span_totals(worker_spans: Iterable[Mapping[str, Any] | None]) -> dict[str, int]:
    """Sum the workers' span counts; ``lost`` is what ended but was neither written nor failed.

    *worker_spans* holds each worker's ``"spans"`` entry, or None for a worker that wrote none.
    """
    totals = {"ended": 0, "written": 0, "write_failed": 0, "otlp_sent": 0, "otlp_failed": 0,
              "lost": 0, "workers_counted": 0, "workers_uncounted": 0}
    for counts in worker_spans:
        if not isinstance(counts, Mapping):
            totals["workers_uncounted"] += 1
            continue
        totals["workers_counted"] += 1
        values = {k: _count(counts.get(k)) for k in ("ended", "written", "write_failed", "otlp_sent", "otlp_failed")}
        for key, value in values.items():
            totals[key] += value
        totals["lost"] += max(0, values["ended"] - values["written"] - values["write_failed"])
    return totals


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def account_requests(log: RequestLog, server_trace_ids: set[str], sample_rate: float,
                     worker_spans: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    """Match each request of *log* to a server span, or give the reason it has none.

    Only sampled requests are owed a span when *sample_rate* < 1 (the others are counted in
    ``not_sampled``).  Returns ``expected``, ``matched``, ``match_rate`` (None without requests),
    ``complete``, ``unmatched`` (count per reason, every reason present) and ``spans``
    (:func:`span_totals`).
    """
    spans = span_totals(worker_spans)
    trace_ids = log.trace_id
    n = len(trace_ids)
    sampled = log.sampled if len(log.sampled) == n else [True] * n
    # Which requests are owed a span, and which have one, in C-level passes; only the requests
    # without a span (usually a few) go through the reasons one by one, in log order.
    if sample_rate < 1:
        owed = [not (trace_id and not s) for trace_id, s in zip(trace_ids, sampled)]
    else:
        owed = [True] * n
    found = list(map(server_trace_ids.__contains__, trace_ids))
    if "" in server_trace_ids:  # an empty trace id never matches, whatever a damaged span says
        found = [f and bool(t) for f, t in zip(found, trace_ids)]
    expected = sum(owed)
    not_sampled = n - expected
    matched = sum(compress(found, owed))
    lost_budget = spans["lost"] + spans["write_failed"]
    unmatched = dict.fromkeys(REASONS, 0)
    for i in compress(range(n), [o and not f for o, f in zip(owed, found)]):
        trace_id = trace_ids[i]
        if not trace_id:
            reason = "not_sent"
        elif log.status[i] == 0:
            reason = "no_response"
        elif lost_budget > 0:
            lost_budget -= 1
            reason = "spans_lost"
        elif spans["workers_uncounted"]:
            reason = "worker_unflushed"
        elif log.status[i] >= 500:
            reason = "error_response"
        else:
            reason = "unexplained"
        unmatched[reason] += 1
    rate = round(matched / expected, 4) if expected else None
    return {"expected": expected, "matched": matched, "match_rate": rate,
            "complete": None if rate is None else rate >= COMPLETE_AT,
            "not_sampled": not_sampled, "unmatched": unmatched, "spans": spans}


def describe_unmatched(unmatched: Mapping[str, int]) -> str:
    """``"3 no response (connection failed), 1 unexplained"``; empty when nothing is unmatched."""
    return ", ".join(f"{n} {REASON_TEXT.get(k, k)}" for k, n in unmatched.items() if n)
