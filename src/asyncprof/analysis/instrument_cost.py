"""What the run's own instruments cost, as the run measured it: the report's ``instrument_cost``.

Two kinds of cost, both from files the run already has:

* **py-spy** runs beside the workers on the same cores: its process CPU over the measured window
  (``cpu_window.pyspy_cpu_s``), as a share of the machine's usable CPU over the window;
* **in the workers**, per request served (in the sample or not, warm-up included, since the
  counters cover the workers' whole life): the accounting hooks' estimate
  (``hook_cost_us_per_request`` of ``accounting/<pid>.json``), the span exporters' CPU
  (``spans.write_cpu_s``/``otlp_cpu_s`` of ``workers/<pid>.json``), writing the records
  (``record_write_cpu_s``) and saving pyinstrument profiles (``pyinstrument.save_cpu_s``); their sum
  per request against the workers' CPU per request in the window gives their share.

Not in it: creating and ending the spans of sampled requests and pyinstrument's sampling inside a
profiled request (they count in those requests' own CPU).  ``scripts/bench-overhead`` measures
the whole cost from outside, against a bare run.  Pure: reads only its arguments.
"""

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["instrument_cost"]


def instrument_cost(manifest: Mapping[str, Any], worker_infos: Sequence[Mapping[str, Any]],
                    accounting: Sequence[Mapping[str, Any]], window_requests: int) -> dict[str, Any]:
    """The ``instrument_cost`` block; a figure is None when the run lacks what it needs.

    *worker_infos*: the ``workers/<pid>.json`` files; *accounting*: the ``accounting/<pid>.json``
    summaries; *window_requests*: client requests in the measured window.
    """
    window = _dict(manifest.get("cpu_window"))
    seconds, pyspy = _num(window.get("seconds")), _num(window.get("pyspy_cpu_s"))
    cpus = _num(_dict(manifest.get("host")).get("cpus_usable")) or _num(_dict(manifest.get("host")).get("cpu_count"))
    workers_cpu = window.get("workers_cpu_s")
    worker_cpu_s = sum(_num(v) or 0.0 for v in workers_cpu.values()) if isinstance(workers_cpu, Mapping) else None

    served = sum(_num(a.get("requests")) or 0 for a in accounting)
    hooks = sum((_num(a.get("hook_cost_us_per_request")) or 0.0) * (_num(a.get("requests")) or 0)
                for a in accounting) / 1e6
    parts = {
        "hooks_s": hooks if accounting else None,
        "record_write_s": _total(accounting, "record_write_cpu_s"),
        "span_export_s": _sum_opt(_total([_dict(w.get("spans")) for w in worker_infos], "write_cpu_s"),
                                  _total([_dict(w.get("spans")) for w in worker_infos], "otlp_cpu_s")),
        "profile_save_s": _total([_dict(w.get("pyinstrument")) for w in worker_infos], "save_cpu_s"),
    }
    known = [v for v in parts.values() if v is not None]
    in_workers = sum(known) if known else None
    per_request_us = in_workers * 1e6 / served if in_workers is not None and served else None
    worker_us = worker_cpu_s * 1e6 / window_requests if worker_cpu_s and window_requests else None
    return {
        "pyspy_cpu_s": pyspy,
        "pyspy_machine_share": round(pyspy / (seconds * cpus), 4) if pyspy is not None and seconds and cpus else None,
        "workers_cpu_s": {k: _round(v) for k, v in parts.items()},
        "workers_requests_served": served or None,
        "workers_us_per_request": _round(per_request_us, 1),
        "workers_cpu_share": round(per_request_us / worker_us, 4) if per_request_us is not None and worker_us else None,
    }


def _total(items: Sequence[Mapping[str, Any]], key: str) -> float | None:
    values = [v for v in (_num(i.get(key)) for i in items) if v is not None]
    return sum(values) if values else None


def _sum_opt(a: float | None, b: float | None) -> float | None:
    return None if a is None and b is None else (a or 0.0) + (b or 0.0)


def _round(v: float | None, places: int = 6) -> float | None:
    return None if v is None else round(v, places)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else None


def _dict(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}
