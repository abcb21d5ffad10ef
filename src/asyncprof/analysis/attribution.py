"""Where each request's time went: client latency split into categories that add up.

For a client request of the measured window whose trace id has an accounting record (see
:mod:`asyncprof.analysis.records`), in milliseconds:

* the server categories of the record (:data:`SERVER_CATEGORIES`: ``cpu``, ``db_wait``,
  ``db_connect``, ``upstream_wait``, ``event_loop``, ``thread_hop``, ``gil_wait``,
  ``os_run_queue``, ``blocking``);
* ``server_queue`` = client latency − the server's ``wall``: accept backlog, connect, network,
  and the client's own overhead;
* ``other`` = client latency − all of the above = ``wall`` − the server categories: the server
  time no hook explained.  Signed (clock jitter can make it slightly negative) and always shown.

So the categories of every request sum to its client latency (:func:`request_breakdown`); the
means do too, since every category is linear in the record.  :func:`attribute` aggregates:
mean per request over all matched requests, per endpoint, and over the slowest 1% by client
latency.  Columns stay in ``array`` form and sums run in C (``sum`` over arrays), so a million
records take about a second on top of reading them.
"""

import heapq
import math
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from operator import sub, truediv
from typing import Any

from asyncprof.analysis.records import JoinedRecords, RecordGroup
from asyncprof.analysis.requests import RequestLog
from asyncprof.worker.record_format import SERVER_CATEGORIES

#: Every category of the breakdown, in report order; they sum to the client latency.
ATTRIBUTION_CATEGORIES: tuple[str, ...] = (*SERVER_CATEGORIES, "server_queue", "other")
#: The tail the p99 breakdown describes: the slowest 1% of matched requests (at least one).
SLOWEST_FRACTION = 0.01
_PLACES = 3  # milliseconds to the microsecond, the records' resolution


def request_breakdown(latency_ms: float, record: Mapping[str, int]) -> dict[str, float]:
    """One request's categories in ms from its client latency and record (``<category>_us`` keys and ``wall_us``).

    The values sum to *latency_ms* (up to float rounding): ``other`` is computed in integer
    microseconds as ``wall_us`` minus the server categories, ``server_queue`` as the latency
    minus ``wall``.
    """
    server_us = {c: record[f"{c}_us"] for c in SERVER_CATEGORIES}
    out = {c: v / 1000 for c, v in server_us.items()}
    out["server_queue"] = latency_ms - record["wall_us"] / 1000
    out["other"] = (record["wall_us"] - sum(server_us.values())) / 1000
    return out


@dataclass
class Totals:
    """Sums over a set of matched requests; ``breakdown()`` turns them into means per request."""

    requests: int = 0
    latency_ms: float = 0.0
    us: dict[str, int] = field(default_factory=lambda: {c: 0 for c in ("wall", *SERVER_CATEGORIES)})
    hops: int = 0
    queries: int = 0
    pool_wait_us: int = 0
    upstream_calls: int = 0

    def add_group(self, group: RecordGroup, latency: array) -> None:
        self.requests += len(group)
        self.latency_ms += math.fsum(latency)
        for c in self.us:
            self.us[c] += sum(group.columns[f"{c}_us"])
        self.hops += sum(group.columns["hops"])
        self.queries += sum(group.columns["queries"])
        self.pool_wait_us += sum(group.columns["pool_wait_us"])
        self.upstream_calls += sum(group.columns["upstream_calls"])

    def add_totals(self, other: "Totals") -> None:
        """Add another set's sums (the same result as adding its groups again: integer sums are exact,
        and each group's latency enters as the one ``fsum`` both would add)."""
        self.requests += other.requests
        self.latency_ms += other.latency_ms
        for c in self.us:
            self.us[c] += other.us[c]
        self.hops += other.hops
        self.queries += other.queries
        self.pool_wait_us += other.pool_wait_us
        self.upstream_calls += other.upstream_calls

    def add_request(self, latency_ms: float, record: Mapping[str, int]) -> None:
        self.requests += 1
        self.latency_ms += latency_ms
        for c in self.us:
            self.us[c] += record[f"{c}_us"]
        self.hops += record["hops"]
        self.queries += record["queries"]
        self.pool_wait_us += record["pool_wait_us"]
        self.upstream_calls += record["upstream_calls"]

    def breakdown(self) -> dict[str, float] | None:
        """Mean ms per request of every :data:`ATTRIBUTION_CATEGORIES` entry; None if no requests."""
        if not self.requests:
            return None
        n = self.requests
        out = {c: round(self.us[c] / 1000 / n, _PLACES) for c in SERVER_CATEGORIES}
        out["server_queue"] = round((self.latency_ms - self.us["wall"] / 1000) / n, _PLACES)
        # other = (wall - server categories) / n, taken as the residual of the rounded values so
        # that the rounded means still add up to the rounded mean latency.
        out["other"] = round(round(self.latency_ms / n, _PLACES) - math.fsum(out.values()), _PLACES)
        return out

    def per_request(self, value: int, scale: float = 1.0) -> float | None:
        return round(value * scale / self.requests, _PLACES) if self.requests else None


@dataclass
class Attribution:
    """The aggregated breakdown of one run's measured window (see the module docstring).

    ``overall``/``slowest``/``endpoints`` are sums; ``client_requests`` counts the window's
    client requests in the sample (matched or not; all of them when every request was followed);
    ``sum_check`` = mean over matched requests (latency > 0) of |client latency − the measured
    categories without ``other``| / client latency, i.e. the share of the latency the hooks did not explain (``other`` included, the sum is exact).
    """

    overall: Totals
    slowest: Totals
    endpoints: dict[str, Totals]
    client_requests: int
    records: int
    skipped_lines: int
    sum_check: float | None

    @property
    def matched(self) -> int:
        return self.overall.requests

    def endpoint_json(self, name: str) -> dict[str, Any]:
        """``attribution_ms``, ``hops_per_request``, ``queries_per_request``, ``upstream_calls_per_request``,
        ``matched_requests`` of one endpoint."""
        t = self.endpoints.get(name, Totals())
        return {
            "attribution_ms": t.breakdown(),
            "hops_per_request": t.per_request(t.hops),
            "queries_per_request": t.per_request(t.queries),
            "upstream_calls_per_request": t.per_request(t.upstream_calls),
            "matched_requests": t.requests,
        }

    def accounting_json(self) -> dict[str, Any]:
        """The ``accounting`` block: how much of the window the records cover, and their quality."""
        matched = self.matched
        return {
            "matched_requests": matched,
            "unmatched_requests": self.client_requests - matched,
            "match_rate": round(matched / self.client_requests, 4) if self.client_requests else None,
            "records": self.records,
            "skipped_lines": self.skipped_lines,
            "sum_check": None if self.sum_check is None else round(self.sum_check, 6),
            "wall_ms": self.overall.per_request(self.overall.us["wall"], 1 / 1000),
            "pool_wait_ms": self.overall.per_request(self.overall.pool_wait_us, 1 / 1000),
        }


def attribute(log: RequestLog, joined: JoinedRecords) -> Attribution:
    """Aggregate *joined* (records joined to *log*, the window's client requests) into an :class:`Attribution`."""
    latencies = {name: array("d", map(log.latency_ms.__getitem__, g.client_index)) for name, g in joined.groups.items()}
    overall = Totals()
    endpoints: dict[str, Totals] = {}
    unexplained, positive = 0.0, 0
    for name, group in joined.groups.items():
        totals = endpoints[name] = Totals()
        totals.add_group(group, latencies[name])
        overall.add_totals(totals)  # not add_group again: a million records summed once, not twice
        rel, n = _unexplained(group, latencies[name])
        unexplained += rel
        positive += n
    return Attribution(
        overall=overall,
        slowest=_slowest(joined.groups, latencies, overall.requests),
        endpoints=endpoints,
        # Only requests in the sample (the load generator's sampled flag) are owed a record.
        client_requests=sum(log.sampled) if len(log.sampled) == len(log) else len(log),
        records=joined.records,
        skipped_lines=joined.skipped_lines,
        sum_check=unexplained / positive if positive else None,
    )


def _unexplained(group: RecordGroup, latency: array) -> tuple[float, int]:
    """(Σ |other| / latency, count) over the group's requests with a positive latency."""
    # map/zip over arrays keep the per-request work in C; a latency <= 0 gets an infinite
    # denominator (its term is 0) and is left out of the count.
    server = map(sum, zip(*(group.columns[f"{c}_us"] for c in SERVER_CATEGORIES)))
    other_us = map(abs, map(sub, group.columns["wall_us"], server))
    positive = [lat * 1000 if lat > 0 else math.inf for lat in latency]
    n = len(positive) - positive.count(math.inf)
    return math.fsum(map(truediv, other_us, positive)), n


def _slowest(groups: Mapping[str, RecordGroup], latencies: Mapping[str, array], matched: int) -> Totals:
    """Sums over the ``ceil(matched × SLOWEST_FRACTION)`` requests with the highest client latency.

    Ties at the threshold latency are taken in endpoint-name then record order, so the count is exact.
    """
    out = Totals()
    if not matched:
        return out
    k = max(1, math.ceil(matched * SLOWEST_FRACTION))
    threshold = heapq.nlargest(k, chain.from_iterable(latencies.values()))[-1]
    above = {name: [i for i, v in enumerate(lat) if v > threshold] for name, lat in latencies.items()}
    ties = k - sum(len(v) for v in above.values())
    for name in sorted(groups):
        group, lat = groups[name], latencies[name]
        chosen = above[name]
        if ties > 0:
            extra = [i for i, v in enumerate(lat) if v == threshold][:ties]
            ties -= len(extra)
            chosen = chosen + extra
        for i in chosen:
            out.add_request(lat[i], _row(group, i))
    return out


def _row(group: RecordGroup, i: int) -> dict[str, int]:
    return {c: values[i] for c, values in group.columns.items()}


def iter_breakdowns(log: RequestLog, joined: JoinedRecords) -> Iterable[tuple[int, dict[str, float]]]:
    """(client index, :func:`request_breakdown`) of every matched request: slow, for tests and drill-down."""
    for group in joined.groups.values():
        for i, client in enumerate(group.client_index):
            yield client, request_breakdown(log.latency_ms[client], _row(group, i))
