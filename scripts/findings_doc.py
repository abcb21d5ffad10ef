"""``docs/findings.md`` from the figures of ``scripts/seed-experiment`` (a pure function of its JSON).

Kept apart from the experiment so the document can be re-rendered from a saved JSON::

    python scripts/findings_doc.py docs/findings.json docs/findings.md
"""

import json
import sys
from pathlib import Path
from typing import Any

from trialkit import fmt

CATEGORY_WORDS = {
    "cpu": "running Python in the view and the framework",
    "db_wait": "waiting for PostgreSQL",
    "db_connect": "opening database connections",
    "upstream_wait": "waiting for the upstream HTTP service",
    "event_loop": "ready but waiting for the event loop (other requests' steps ran first)",
    "thread_hop": "crossing between the event loop and worker threads (sync_to_async/async_to_sync)",
    "gil_wait": "waiting for the GIL",
    "os_run_queue": "runnable but waiting for a CPU (the OS run queue)",
    "blocking": "blocked in a sleeping call",
    "server_queue": "queued before a worker took the request",
    "other": "not explained by any hook",
}


def render_svg(curves: dict[str, Any], width: int = 900, height: int = 340) -> str:
    """Two panels, throughput and p99 against users, one line per mode, 95% intervals as bars."""
    points = curves["points"]
    modes = sorted({p["mode"] for p in points})
    colours = {"sync": "#1f77b4", "async": "#d62728"}
    levels = sorted({p["users"] for p in points})
    panel_w, top, bottom, left = (width - 120) / 2, 40, height - 50, 60
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="12"><rect width="100%" height="100%" fill="white"/>']
    for i, (key, title) in enumerate((("throughput_rps", "throughput, req/s"), ("p99_ms", "p99 latency, ms"))):
        x0 = left + i * (panel_w + 60)
        ymax = max(p[key]["ci_high"] for p in points) * 1.1 or 1.0

        def xy(level: int, value: float, x0: float = x0, ymax: float = ymax) -> tuple[float, float]:
            x = x0 + (levels.index(level) + 0.5) * panel_w / len(levels)
            return x, bottom - (bottom - top) * value / ymax

        out.append(f'<text x="{x0}" y="{top - 15}" font-weight="bold">{title} against users '
                   f'(median, 95% interval)</text>')
        out.append(f'<line x1="{x0}" y1="{bottom}" x2="{x0 + panel_w}" y2="{bottom}" stroke="black"/>'
                   f'<line x1="{x0}" y1="{top}" x2="{x0}" y2="{bottom}" stroke="black"/>')
        for frac in (0, 0.5, 1):
            y = bottom - (bottom - top) * frac
            out.append(f'<text x="{x0 - 5}" y="{y + 4}" text-anchor="end">{ymax * frac:.0f}</text>')
        for level in levels:
            x, _ = xy(level, 0)
            out.append(f'<text x="{x}" y="{bottom + 18}" text-anchor="middle">{level}</text>')
        for mode in modes:
            curve = sorted((p for p in points if p["mode"] == mode), key=lambda p: p["users"])
            colour = colours.get(mode, "#555")
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(p["users"], p[key]["median"]) for p in curve))
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
            for p in curve:
                x, y = xy(p["users"], p[key]["median"])
                _, lo = xy(p["users"], p[key]["ci_low"])
                _, hi = xy(p["users"], p[key]["ci_high"])
                out.append(f'<line x1="{x:.1f}" y1="{lo:.1f}" x2="{x:.1f}" y2="{hi:.1f}" stroke="{colour}"/>'
                           f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
        out.append(f'<text x="{x0 + panel_w / 2}" y="{height - 12}" text-anchor="middle">users (closed loop)</text>')
    for j, mode in enumerate(modes):
        out.append(f'<text x="{width - 100}" y="{top + 20 * j}" fill="{colours.get(mode, "#555")}" '
                   f'font-weight="bold">— {mode}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _table(rows: dict[str, Any], extra: bool = False) -> list[str]:
    head = "| configuration | trials | req/s | p50 ms | p99 ms | worker CPU ms/req | errors |"
    if extra:
        head += " loop / parser |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for label, r in rows.items():
        line = (f"| {label} | {r['trials']} | {fmt(r['throughput_rps'])} | {fmt(r['p50_ms'], 1)} | "
                f"{fmt(r['p99_ms'], 1)} | {fmt(r['worker_cpu_ms_per_request'], 2)} | {r['errors']} |")
        if extra:
            line += f" {r.get('loop') or '–'} / {r.get('http') or '–'} |"
        lines.append(line)
    return lines


def _median(r: dict[str, Any], key: str) -> float | None:
    return (r.get(key) or {}).get("median")


def render_doc(data: dict[str, Any], svg_name: str, data_name: str) -> str:
    m, v = data["machine"], data["versions"]
    s = data["settings"]
    curves = data["curves"]
    lines = [
        "# Why do async Django views serve fewer users than sync ones? (findings)",
        "",
        "The forum thread (`../shared/seed/forum-thread-async-views.txt`) compared gunicorn sync workers + psycopg2 "
        "with gunicorn + uvicorn workers + asyncpg on a page that makes two small queries, saw the async setup serve "
        "fewer concurrent users, and nobody could say where the time went. This document is written by "
        "`scripts/seed-experiment` from its own measurements; every number below comes from the command at the end.",
        "",
        f"**Machine**: {m.get('cpu_model')}, {m.get('cpus')} CPUs ({m.get('cpus_usable')} usable), "
        f"{m.get('memory_gib')} GiB, {m.get('platform')}, Python {m.get('python')}. Load generator, server and "
        "PostgreSQL share the machine. "
        f"**Versions**: " + ", ".join(f"{k} {val}" for k, val in sorted(v.items()) if val) + ".",
        "",
        f"**Method**: {s['workers']} workers, seed scenario (list 20 items, then one item), "
        f"{s['duration']:g} s measured after {s['warmup']:g} s warm-up per run, {s['trials']} trials per point, "
        "configurations interleaved (A B A B …). Figures are medians with [min–max] over trials (intervals in the "
        "curves are 95% bootstrap intervals of the median). Runs without instruments unless stated. "
        f"Started {data['started']}, took {data.get('elapsed_s', 0) / 60:.0f} min.",
        "",
        "## 1. The seed's observation: throughput and p99 against users",
        "",
        f"![throughput and p99 against users]({svg_name})",
        "",
        "| mode | users | req/s (95% interval) | p99 ms (95% interval) | valid |",
        "|---|---|---|---|---|",
    ]
    for p in curves["points"]:
        t, q = p["throughput_rps"], p["p99_ms"]
        lines.append(f"| {p['mode']} | {p['users']} | {t['median']:.0f} [{t['ci_low']:.0f}–{t['ci_high']:.0f}] | "
                     f"{q['median']:.1f} [{q['ci_low']:.1f}–{q['ci_high']:.1f}] | {'yes' if p['valid'] else 'no'} |")
    best = {mode: max(p["throughput_rps"]["median"] for p in curves["points"] if p["mode"] == mode)
            for mode in ("sync", "async")}
    lines += [
        "",
        f"Best throughput: sync {best['sync']:.0f} req/s, async {best['async']:.0f} req/s "
        f"(async at {best['async'] / best['sync']:.0%} of sync). Users sustained within p99 ≤ "
        f"{curves['slo_p99_ms']:g} ms: " + ", ".join(f"{k} {val if val is not None else 'none of the levels'}"
                                                     for k, val in curves["max_users_within_slo"].items())
        + "; knee (first level reaching 90% of the best throughput): "
        + ", ".join(f"{k} {val}" for k, val in curves["knee"].items()) + ".",
        "",
        "So the seed's observation holds here too: the async setup serves fewer requests per second and its tail "
        "grows faster with users.",
        "",
    ]
    why = data.get("why")
    if why and why.get("gap"):
        gap = why["gap"]
        runs = {r["mode"]: r for r in why["runs"]}
        lines += [
            f"## 2. Where the time goes ({s['explain_users']} users, every instrument on)",
            "",
            "Each request's client latency split into categories by asyncprof's in-worker accounting "
            "(mean ms per request; the categories of a request sum to its latency):",
            "",
            "| category | what it is | sync | async | difference |",
            "|---|---|---|---|---|",
        ]
        for cat, delta in sorted(gap["ms_per_request"].items(), key=lambda kv: -abs(kv[1])):
            a = (runs.get("sync", {}).get("attribution_ms") or {}).get(cat, 0.0) or 0.0
            b = (runs.get("async", {}).get("attribution_ms") or {}).get(cat, 0.0) or 0.0
            if abs(a) < 0.05 and abs(b) < 0.05:
                continue
            lines.append(f"| {cat} | {CATEGORY_WORDS.get(cat, '')} | {a:.1f} | {b:.1f} | {b - a:+.1f} |")
        cpu = gap.get("cpu_ms_per_request") or {}
        lines += [
            "",
            f"Verdict of `asyncprof compare`: {gap['verdict']}",
            "",
            f"Named categories explain **{(gap.get('explained_share') or 0):.0%}** of the per-request gap.",
            "",
        ]
        async_run = runs.get("async") or {}
        top = [f for f in (async_run.get("findings") or []) if f.get("share_of") != "validity"][:3]
        if top:
            lines += ["The async run's top findings:", ""]
            lines += [f"{i}. **{f.get('title')}** — {f.get('detail')} *Try:* {f.get('try')}" for i, f in
                      enumerate(top, 1)]
            lines.append("")
        if cpu.get("ratio"):
            lines += [f"Worker CPU per request: sync {cpu['from']:.2f} ms, async {cpu['to']:.2f} ms "
                      f"({cpu['ratio']:.1f}×).", ""]
    if data.get("variations"):
        lines += [f"## 3. The thread's suggestions ({s['explain_users']} users)", ""]
        lines += _table(data["variations"], extra=True)
        lines += ["", _ranking(data["variations"]), ""]
    if data.get("fanout"):
        lines += [
            f"## 4. A view that waits on another service (fanout: 3 calls × {s['upstream_delay_ms']:g} ms, "
            f"{s['explain_users']} users)",
            "",
            "Sync views make the three calls one after the other; async views make them concurrently. This is the "
            "workload the thread expected async to win.",
            "",
        ]
        lines += _table(data["fanout"])
        lines += ["", _ranking(data["fanout"]), ""]
    if data.get("open_loop"):
        ol = data["open_loop"]
        lines += [
            f"## 5. Equal load, open loop ({ol['rate_rps']:g} req/s offered to both)",
            "",
            "Closed-loop users slow down when the server does, which hides queueing (coordinated omission). Here "
            "requests arrive on a fixed schedule whatever the server does, at half the lower of the two best "
            "throughputs, and latency counts from each request's scheduled time.",
            "",
        ]
        lines += _table(ol["results"])
        lines.append("")
        lines += _disagreements(ol["results"])
    lines += _answer(data, best)
    lines += [
        "## Reproduce",
        "",
        "```",
        " ".join(data["command"]),
        "```",
        "",
        f"Raw figures and run ids: [`{data_name}`]({data_name}); each run directory stays under "
        f"`{s['out']}` and opens with `asyncprof report <run>`. Modes not measured: "
        + ("; ".join(data["skipped"]) if data["skipped"] else "none") + ".",
        "",
    ]
    return "\n".join(lines)


def _ranking(rows: dict[str, Any]) -> str:
    """Which configuration served most and which used the least worker CPU per request, in words."""
    served = [(label, _median(r, "throughput_rps")) for label, r in rows.items() if _median(r, "throughput_rps")]
    frugal = [(label, _median(r, "worker_cpu_ms_per_request")) for label, r in rows.items()
              if _median(r, "worker_cpu_ms_per_request")]
    if not served:
        return ""
    best, rps = max(served, key=lambda lr: lr[1])
    worst, low = min(served, key=lambda lr: lr[1])
    text = f"Most served: {best} ({rps:.0f} req/s, {rps / low:.1f}× the least, {worst})."
    if frugal:
        cheap, ms = min(frugal, key=lambda lm: lm[1])
        text += f" Least worker CPU per request: {cheap} ({ms:.2f} ms)."
    return text


def _disagreements(rows: dict[str, Any]) -> list[str]:
    """Configurations whose trials disagree tenfold on p50: near capacity, the median alone misleads."""
    out = []
    for label, r in rows.items():
        p50 = r.get("p50_ms") or {}
        if p50.get("min") and p50["max"] > 10 * p50["min"]:
            out.append(f"{label}'s trials disagree: p50 from {p50['min']:.1f} to {p50['max']:.1f} ms at the same "
                       "offered rate. In some trials it kept up; in others a backlog formed and never cleared, so "
                       "at this rate it runs at the edge of its capacity (the closed-loop best above overstates "
                       "what it sustains with latency to spare).")
    return [*out, ""] if out else []


def _answer(data: dict[str, Any], best: dict[str, float]) -> list[str]:
    """The answer to the seed's question, worded from the figures."""
    lines = ["## The answer", ""]
    gap = (data.get("why") or {}).get("gap") or {}
    deltas = gap.get("ms_per_request") or {}
    named = sorted(((c, d) for c, d in deltas.items() if c != "other" and d > 0), key=lambda cd: -cd[1])[:3]
    runs = {r["mode"]: r for r in (data.get("why") or {}).get("runs", [])}
    sync_att = (runs.get("sync") or {}).get("attribution_ms") or {}
    cpu = gap.get("cpu_ms_per_request") or {}
    if named:
        lines.append(
            f"On this page a request waits {sync_att.get('db_wait', 0):.1f} ms for PostgreSQL (sync run): the "
            "queries are answered from memory, so there is little I/O for async to overlap. The async requests' "
            "extra time is " + ", ".join(f"{c} {d:+.1f} ms ({CATEGORY_WORDS.get(c, c)})" for c, d in named)
            + (f"; each async request also costs the workers {cpu['ratio']:.1f}× the CPU of a sync one "
               f"({cpu['to']:.2f} against {cpu['from']:.2f} ms)" if cpu.get("ratio") else "")
            + ". With every worker busy, that extra CPU per request turns into requests waiting for their loop "
            "and for a core: the async setup runs out of CPU at a lower request rate.")
        lines.append("")
    fan = data.get("fanout") or {}
    sync_f = next((r for label, r in fan.items() if label.startswith("sync")), None)
    async_f = next((r for label, r in fan.items() if label.startswith("async")), None)
    if sync_f and async_f and _median(sync_f, "throughput_rps") and _median(async_f, "throughput_rps"):
        ratio = _median(async_f, "throughput_rps") / _median(sync_f, "throughput_rps")
        verb = "the picture flips" if ratio > 1.2 else "the picture does not flip here"
        lines.append(f"When the view waits on another service (fanout), {verb}: async serves {ratio:.1f}× the "
                     f"requests of sync with the same {data['settings']['workers']} workers (a waiting async "
                     "request holds no worker; a waiting sync request holds a whole worker process).")
        lines.append("")
    lines += [
        "Async views are a way to wait for many things at once, not a way to make CPU work faster. For pages "
        "that run a couple of fast queries and render, sync workers (or more of them) serve more users per core; "
        "async pays off when requests spend their time waiting on the network.",
        "",
    ]
    return lines


if __name__ == "__main__":
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    payload = json.loads(source.read_text())
    svg = target.with_name(f"{target.stem}-curves.svg")
    svg.write_text(render_svg(payload["curves"]))
    target.write_text(render_doc(payload, svg.name, source.name))
