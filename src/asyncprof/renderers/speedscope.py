"""Collapsed stacks → speedscope's file format (https://www.speedscope.app/file-format-schema.json).

One "sampled" profile per process and thread, identical stacks merged with
their count as the weight, so the file stays small for long runs.
"""

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from asyncprof.analysis.stacks import iter_stacks

if TYPE_CHECKING:
    from asyncprof.analysis.flame import Flame


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


def _frame_entry(frame: str) -> dict[str, Any]:
    """speedscope's frame object for py-spy's ``func (file:line)``."""
    func, _, rest = frame.partition(" (")
    file, _, line = rest.rstrip(")").rpartition(":")
    entry: dict[str, Any] = {"name": func, "file": file or rest.rstrip(")")}
    if line.isdigit():
        entry["line"] = int(line)
    return entry


def flame_to_speedscope(flame: "Flame", name: str) -> dict[str, Any]:
    """A speedscope document of a (filtered) :class:`~asyncprof.analysis.flame.Flame`.

    One "sampled" profile, the workers merged as in the flamegraph, weights in milliseconds
    (samples x the sampling interval), so speedscope shows the CPU time; the frames under the
    flame's synthetic root ``all``.  Diff flames have no speedscope form: ``ValueError``.
    """
    if flame.is_diff:
        raise ValueError("a differential flame has no speedscope form")
    frames: list[dict[str, Any]] = []
    frame_index: dict[str, int] = {}
    samples: list[list[int]] = []
    weights: list[float] = []
    path: list[int] = []
    for node, depth in flame.root.walk():
        if depth == 0:
            continue
        if node.name not in frame_index:
            frame_index[node.name] = len(frames)
            frames.append(_frame_entry(node.name))
        del path[depth - 1:]
        path.append(frame_index[node.name])
        if node.self_samples:
            samples.append(list(path))
            weights.append(node.self_samples * flame.interval_ms)
    kind = "wall" if flame.wall else "on-CPU"
    filters = "".join([f", pid {','.join(map(str, flame.pids))}" if flame.pids else "",
                       f", category {flame.category}" if flame.category else ""])
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "name": name,
        "exporter": "asyncprof",
        "shared": {"frames": frames},
        "profiles": [
            {
                "type": "sampled",
                "name": f"{flame.run_id}: all workers, {kind}{filters}",
                "unit": "milliseconds",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        ],
    }
