"""Collapsed stacks → speedscope's file format (https://www.speedscope.app/file-format-schema.json).

One "sampled" profile per process and thread, identical stacks merged with
their count as the weight, so the file stays small for long runs.
"""

from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from asyncprof.analysis.stacks import iter_stacks


def collapsed_to_speedscope(path: Path, name: str) -> dict[str, Any]:
    """Build a speedscope document from the collapsed-stack file at *path*."""
    frames: list[dict[str, Any]] = []
    frame_index: dict[str, int] = {}
    profiles: dict[tuple[int, str], dict[str, list[Any]]] = defaultdict(lambda: {"samples": [], "weights": []})
    for stack in iter_stacks(path):
        ids = []
        for frame in stack.frames:
            if frame not in frame_index:
                func, _, rest = frame.partition(" (")
                file, _, line = rest.rstrip(")").rpartition(":")
                entry: dict[str, Any] = {"name": func, "file": file or rest.rstrip(")")}
                if line.isdigit():
                    entry["line"] = int(line)
                frame_index[frame] = len(frames)
                frames.append(entry)
            ids.append(frame_index[frame])
        prof = profiles[(stack.pid, stack.thread)]
        prof["samples"].append(ids)
        prof["weights"].append(stack.count)
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "name": name,
        "exporter": "asyncprof",
        "shared": {"frames": frames},
        "profiles": [
            {
                "type": "sampled",
                "name": f"pid {pid} thread {thread}",
                "unit": "none",
                "startValue": 0,
                "endValue": sum(p["weights"]),
                "samples": p["samples"],
                "weights": p["weights"],
            }
            for (pid, thread), p in sorted(profiles.items())
        ],
    }


def write_speedscope(collapsed: Path, out: Path, name: str) -> None:
    out.write_bytes(orjson.dumps(collapsed_to_speedscope(collapsed, name)))
