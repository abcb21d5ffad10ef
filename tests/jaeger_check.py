"""What the Jaeger UI needs of a JSON trace file to load it through "Upload JSON", as a check.

From the UI's loader (jaeger-ui: ``readJsonFile`` → ``loadJsonDone`` → ``transformTraceData`` and
``getTraceSpanIdsAsTree``): a top-level ``data`` list of traces; each trace a ``traceID`` and
``spans``, and a ``processes`` map in which every span's ``processID`` is found (the UI reads
``serviceName`` from it); each span a ``spanID`` unique in its trace, an ``operationName``, a
non-zero ``startTime`` and a ``duration`` in microseconds, ``tags`` as ``{key, type, value}``, and
``references`` whose first entry (the parent the tree is built from) is ``CHILD_OF`` or
``FOLLOWS_FROM`` (anything else makes the UI throw).
"""

import re
from typing import Any

HEX16 = re.compile(r"^[0-9a-f]{16}$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")
TAG_TYPES = {"string": str, "bool": bool, "int64": int, "float64": (int, float), "binary": str}
#: Microseconds since the epoch between 2001 and 2286: a startTime in ns or ms falls outside.
MIN_US, MAX_US = 10**15, 10**16


def check_jaeger(doc: Any, *, resolve_parents: bool = True) -> list[str]:
    """Problems that would stop the Jaeger UI loading *doc* or mislead it (an empty list: none)."""
    problems: list[str] = []
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        return ["top level: not an object with a 'data' list"]
    for t_index, trace in enumerate(doc["data"]):
        where = f"trace {t_index}"
        if not isinstance(trace, dict):
            problems.append(f"{where}: not an object")
            continue
        trace_id = trace.get("traceID")
        if not isinstance(trace_id, str) or not (HEX32.match(trace_id) or HEX16.match(trace_id)):
            problems.append(f"{where}: traceID {trace_id!r} is not 16 or 32 lowercase hex digits")
        processes = trace.get("processes")
        if not isinstance(processes, dict) or not processes:
            problems.append(f"{where}: no processes map")
            processes = {}
        for pid, process in processes.items():
            if not isinstance(process, dict) or not isinstance(process.get("serviceName"), str) \
                    or not process["serviceName"]:
                problems.append(f"{where}: process {pid} has no serviceName")
            elif not isinstance(process.get("tags", []), list):
                problems.append(f"{where}: process {pid} tags are not a list")
        spans = trace.get("spans")
        if not isinstance(spans, list) or not spans:
            problems.append(f"{where}: no spans")
            continue
        ids = [s.get("spanID") for s in spans if isinstance(s, dict)]
        if len(set(ids)) != len(ids):
            problems.append(f"{where}: duplicate spanIDs")
        id_set = set(ids)
        for s_index, span in enumerate(spans):
            sw = f"{where} span {s_index}"
            if not isinstance(span, dict):
                problems.append(f"{sw}: not an object")
                continue
            if span.get("traceID") != trace_id:
                problems.append(f"{sw}: traceID differs from the trace's")
            if not isinstance(span.get("spanID"), str) or not HEX16.match(span["spanID"]):
                problems.append(f"{sw}: spanID {span.get('spanID')!r} is not 16 lowercase hex digits")
            if not isinstance(span.get("operationName"), str):
                problems.append(f"{sw}: no operationName")
            start, duration = span.get("startTime"), span.get("duration")
            if not isinstance(start, int) or isinstance(start, bool) or not MIN_US <= start < MAX_US:
                problems.append(f"{sw}: startTime {start!r} is not microseconds since the epoch")
            if not isinstance(duration, int) or isinstance(duration, bool) or duration < 0:
                problems.append(f"{sw}: duration {duration!r} is not a non-negative number of microseconds")
            if span.get("processID") not in processes:
                problems.append(f"{sw}: processID {span.get('processID')!r} is not in the trace's processes")
            refs = span.get("references")
            if not isinstance(refs, list):
                problems.append(f"{sw}: references is not a list")
                refs = []
            for ref in refs:
                if not isinstance(ref, dict) or ref.get("refType") not in ("CHILD_OF", "FOLLOWS_FROM"):
                    problems.append(f"{sw}: reference {ref!r} is not CHILD_OF or FOLLOWS_FROM")
                elif ref.get("traceID") != trace_id or not HEX16.match(str(ref.get("spanID"))):
                    problems.append(f"{sw}: reference {ref!r} has a bad traceID or spanID")
                elif resolve_parents and ref["spanID"] not in id_set:
                    problems.append(f"{sw}: parent {ref['spanID']} is not in the trace")
            tags = span.get("tags")
            if not isinstance(tags, list):
                problems.append(f"{sw}: tags is not a list")
                tags = []
            for tag in tags:
                kind = TAG_TYPES.get(tag.get("type")) if isinstance(tag, dict) else None
                if kind is None or not isinstance(tag.get("key"), str) or not isinstance(tag.get("value"), kind) \
                        or (tag.get("type") in ("int64", "float64") and isinstance(tag.get("value"), bool)):
                    problems.append(f"{sw}: tag {tag!r} is not a {{key, type, value}} of a Jaeger type")
            if not isinstance(span.get("logs", []), list):
                problems.append(f"{sw}: logs is not a list")
    return problems
