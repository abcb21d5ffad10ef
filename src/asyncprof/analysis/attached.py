"""What the report says about a run of ``asyncprof attach`` (manifest ``kind: "attach"``).

An attached server ran none of asyncprof's in-worker instruments, so its report has a CPU profile
(py-spy), the workers' kernel CPU, the client latency (unless ``--no-load``) and the findings that
need nothing else, and says plainly what it lacks.  :func:`apply_run_kind` adjusts the summary of
any run in place, before the findings read it; for recorded runs it only adds ``kind: "record"``
and an empty ``missing``.

Report keys it sets (every run): ``kind`` (``record`` or ``attach``), ``missing`` (list of
sentences, empty for recorded runs).  Attach runs also get ``attached`` = ``{"pid", "server",
"description", "url", "workers"}``, ``mode`` ``"attach"``, the ``missing`` sentences as the
first warning (instead of the generic "X was off" ones), and, with ``--no-load``,
``throughput_rps``/``error_rate`` null and ``load.model`` ``"none"``.
"""

from collections.abc import MutableMapping
from typing import Any

#: The instruments an attached server cannot have (kept in step with ``asyncprof.attacher.IN_WORKER``).
_IN_WORKER = ("otel", "pyinstrument", "accounting")


def apply_run_kind(manifest: MutableMapping[str, Any], report: MutableMapping[str, Any]) -> None:
    """Set ``kind`` and ``missing`` on *report* (a :func:`~asyncprof.analysis.summary.summarize` result).

    Defensive: a manifest with odd types gives an attach report with what could be read.
    """
    kind = manifest.get("kind") if manifest.get("kind") == "attach" else "record"
    report["kind"] = kind
    if kind != "attach":
        report.setdefault("missing", [])
        return
    raw = manifest.get("missing")
    missing = [str(m) for m in raw] if isinstance(raw, list) else []
    report["missing"] = missing
    target = manifest.get("target") if isinstance(manifest.get("target"), dict) else {}
    server = manifest.get("server") if isinstance(manifest.get("server"), dict) else {}
    pid = target.get("pid")
    report["mode"] = "attach"
    report["attached"] = {"pid": pid, "server": server.get("server"), "description": server.get("description"),
                          "url": target.get("url"), "workers": target.get("workers")}
    warnings = [w for w in report.get("warnings", [])
                if not any(isinstance(w, str) and w.startswith(f"{name} was off for this run") for name in _IN_WORKER)]
    if missing:
        warnings.insert(0, f"attached to pid {pid}, a server asyncprof did not start: " + "; ".join(missing))
    report["warnings"] = warnings
    load = manifest.get("load") if isinstance(manifest.get("load"), dict) else {}
    if load.get("model") == "none":
        report["throughput_rps"] = None
        report["error_rate"] = None
        report["load"] = {"model": "none", "processes": 0, "pinning": None}
