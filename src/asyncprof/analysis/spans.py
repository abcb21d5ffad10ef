"""Read the workers' OTLP/JSON span files."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

SPAN_KIND_SERVER = 2


@dataclass
class SpanIndex:
    """What the report needs from the spans: counts and the trace ids that reached a server."""

    spans: int = 0
    server_trace_ids: set[str] = field(default_factory=set)
    by_pid: dict[int, int] = field(default_factory=dict)
    skipped_lines: int = 0


def iter_spans(spans_dir: Path) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Yield ``(resource attributes, span)`` for every span in every file; damaged lines are skipped."""
    for path in sorted(spans_dir.glob("*.jsonl")):
        with open(path, "rb") as f:
            for line in f:
                try:
                    request = orjson.loads(line)
                    for rs in request["resourceSpans"]:
                        attrs = {a["key"]: next(iter(a["value"].values())) for a in rs["resource"]["attributes"]}
                        for ss in rs["scopeSpans"]:
                            for span in ss["spans"]:
                                yield attrs, span
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, StopIteration):
                    continue


def index_spans(spans_dir: Path) -> SpanIndex:
    """Count spans per worker and collect the trace ids of server spans."""
    index = SpanIndex()
    for attrs, span in iter_spans(spans_dir):
        index.spans += 1
        try:
            pid = int(attrs.get("process.pid", 0))
        except (TypeError, ValueError):
            pid = 0
        index.by_pid[pid] = index.by_pid.get(pid, 0) + 1
        if span.get("kind") == SPAN_KIND_SERVER and isinstance(span.get("traceId"), str):
            index.server_trace_ids.add(span["traceId"])
    return index
