"""The ``asyncprof`` command line: parse arguments, call the library, print, exit.

Every failure the user can cause ends in one line on stderr and a non-zero
exit code (see :mod:`asyncprof.errors`); tracebacks are only for bugs, and
only with ``ASYNCPROF_DEBUG=1``.
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from asyncprof import __version__
from asyncprof.config import (CONNECT_POLICIES, DEFAULT_PROFILE_EVERY, DEFAULT_PYSPY_RATE, DEFAULT_SAMPLE_TRACES,
                              SAMPLE_TRACES_ENV, RecordConfig)
from asyncprof.errors import AsyncprofError, Interrupted, UsageError
from asyncprof.modes import MODES
from asyncprof.report_cache import cached_report
from asyncprof.run import default_parent, iter_runs, resolve_run
from asyncprof.scenarios import SCENARIOS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"asyncprof: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="asyncprof", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"asyncprof {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    rec = sub.add_parser("record", help="run the target under a worker mode with load and every instrument")
    rec.add_argument("--mode", default="async", help=f"worker mode: {', '.join(MODES)} (default async)")
    rec.add_argument("--scenario", default="seed", help=f"workload: {', '.join(SCENARIOS)} (default seed)")
    rec.add_argument("--view", choices=("sync", "async"), help="force the view flavour (default: the mode's own)")
    rec.add_argument("--workers", type=int, default=4, help="server worker processes (default 4)")
    rec.add_argument("--threads", type=int, default=None,
                     help="threads per worker for the threaded modes (gthread, granian-wsgi; default 4)")
    rec.add_argument("--users", type=int, default=50,
                     help="concurrent Locust users (default 50); with --rate, the most connections per load process")
    rec.add_argument("--rate", type=float, metavar="R",
                     help="open loop: start R requests per second whatever the answers (latency then counts from "
                          "each request's scheduled time, no coordinated omission); default: closed loop")
    rec.add_argument("--spawn-rate", type=float, help="users started per second (default: all in 1 s)")
    _add_load_arguments(rec)
    rec.add_argument("--duration", type=float, default=30.0, help="measured seconds (default 30)")
    rec.add_argument("--warmup", type=float, default=5.0, help="seconds of load excluded before measuring (default 5)")
    rec.add_argument("--db", default=os.environ.get("DATABASE_URL", "embedded"),
                     help="'embedded' (a private PostgreSQL) or a postgresql:// URL (default: $DATABASE_URL or embedded)")
    rec.add_argument("--rows", type=int, default=10_000, help="rows in the item table (default 10000)")
    rec.add_argument("--pool-size", type=int, default=10, help="asyncpg pool size per async worker (default 10)")
    rec.add_argument("--connect", choices=CONNECT_POLICIES, default="persistent",
                     help="database connection policy (default persistent)")
    rec.add_argument("--bind", dest="host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    rec.add_argument("--port", type=int, help="server port (default: a free one)")
    rec.add_argument("--no-pyspy", dest="pyspy", action="store_false", help="no py-spy sampling")
    rec.add_argument("--pyspy-rate", type=int, default=DEFAULT_PYSPY_RATE,
                     help=f"py-spy samples per second per process (default {DEFAULT_PYSPY_RATE})")
    rec.add_argument("--pyspy-blocking", dest="pyspy_nonblocking", action="store_false",
                     help="let py-spy pause the workers for each sample (more exact stacks, much costlier)")
    rec.add_argument("--no-otel", dest="otel", action="store_false", help="no OpenTelemetry spans")
    rec.add_argument("--otlp", metavar="URL",
                     help="also export spans live over OTLP/HTTP to URL (e.g. Jaeger's http://127.0.0.1:4318); "
                          "default: the standard OTEL_EXPORTER_OTLP_* variables, if set")
    rec.add_argument("--sample-traces", type=float, metavar="R",
                     help="trace and account a fraction R of the requests (0 < R <= 1, by trace id; default "
                          f"${SAMPLE_TRACES_ENV} or {DEFAULT_SAMPLE_TRACES:g}); 1 follows every request")
    rec.add_argument("--no-pyinstrument", dest="pyinstrument", action="store_false", help="no pyinstrument profiles")
    rec.add_argument("--no-accounting", dest="accounting", action="store_false",
                     help="no per-request time accounting in the workers (the report then has no breakdown)")
    rec.add_argument("--bare", action="store_true",
                     help="no instrument at all (no py-spy, OTel, pyinstrument or accounting): the baseline "
                          "that scripts/bench-overhead compares the instruments' cost against")
    rec.add_argument("--profile-every", type=int, default=DEFAULT_PROFILE_EVERY,
                     help=f"profile one request in N per worker (default {DEFAULT_PROFILE_EVERY})")
    rec.add_argument("--calibrate", metavar="cpu_ms=A,db_ms=B,block_ms=C,hops=D",
                     help="the calibrate scenario's cost per request: A ms of CPU, B ms in pg_sleep, C ms blocked in "
                          "time.sleep, D sync<->async hops (missing keys are 0; only with --scenario calibrate)")
    rec.add_argument("--upstream-delay-ms", type=float, default=20.0, metavar="MS",
                     help="for scenarios that call an upstream HTTP service (fanout): its delay per call (default 20)")
    rec.add_argument("--out", type=Path, default=None, help="parent directory of run directories (default ./traces)")
    _add_project_arguments(rec)

    rep = sub.add_parser("report", help="summarise a run")
    rep.add_argument("run", nargs="?", help="run directory or run id (default: the latest)")
    rep.add_argument("--json", action="store_true", help="machine-readable JSON")
    rep.add_argument("--out", type=Path, default=None, help="parent directory of runs (default ./traces)")
    _add_html_arguments(rep)

    cmp = sub.add_parser("compare", help="runs side by side, and the gap between the best and worst explained")
    cmp.add_argument("runs", nargs="+", help="two or more run directories or run ids")
    cmp.add_argument("--json", action="store_true", help="machine-readable JSON: {runs: [...], gap: {...}}")
    cmp.add_argument("--out", type=Path, default=None, help="parent directory of runs (default ./traces)")
    _add_html_arguments(cmp)

    swp = sub.add_parser("sweep", help="throughput and p99 against load for several modes, interleaved trials")
    swp.add_argument("--modes", default="sync,async", help="comma-separated worker modes (default sync,async)")
    swp.add_argument("--users", default=None,
                     help="comma-separated users levels (default 10,50,100,200); with --rate, one value: the "
                          "connections per load process (default 100)")
    swp.add_argument("--rate", default=None, metavar="R1,R2,...",
                     help="open loop: sweep these arrival rates (req/s) instead of users")
    swp.add_argument("--trials", type=int, default=3, help="trials per point (default 3)")
    swp.add_argument("--scenario", default="seed", help="workload (default seed)")
    swp.add_argument("--upstream-delay-ms", type=float, default=20.0, metavar="MS",
                     help="for scenarios that call an upstream HTTP service (fanout): its delay per call (default 20)")
    swp.add_argument("--workers", type=int, default=4, help="server worker processes (default 4)")
    swp.add_argument("--duration", type=float, default=15.0, help="measured seconds per point (default 15)")
    swp.add_argument("--warmup", type=float, default=5.0, help="warm-up seconds per point (default 5)")
    swp.add_argument("--db", default=os.environ.get("DATABASE_URL", "embedded"), help="'embedded' or a postgresql:// URL")
    swp.add_argument("--slo-p99-ms", type=float, default=200.0, help="latency target for 'users sustained' (default 200)")
    swp.add_argument("--instruments", default="none", choices=("none", "accounting", "all"),
                     help="instruments during the sweep (default none: curves measure throughput)")
    swp.add_argument("--json", action="store_true", help="print the sweep's JSON")
    _add_load_arguments(swp)
    swp.add_argument("--out", type=Path, default=None, help="parent directory of runs (default ./traces)")

    fg = sub.add_parser("flamegraph", help="interactive SVG flamegraph of a run's py-spy samples (or a diff of two)")
    fg.add_argument("run", nargs="?", help="run directory or run id (default: the latest)")
    fg.add_argument("-o", "--output", type=Path, metavar="FILE",
                    help="where to write (default: flamegraph*.svg / .speedscope.json / .collapsed.txt in the run)")
    fg.add_argument("--format", choices=("svg", "speedscope", "collapsed"), default="svg",
                    help="svg (default), speedscope JSON, or Brendan Gregg's collapsed stacks")
    fg.add_argument("--wall", action="store_true", help="include waiting stacks (coloured apart); default on-CPU only")
    fg.add_argument("--pid", action="append", metavar="PID", help="only these workers (repeat or comma-separate)")
    fg.add_argument("--category", help="only the samples the report bills to this category (e.g. thread_pool)")
    fg.add_argument("--diff", metavar="OTHER_RUN",
                    help="differential flamegraph in CPU ms per request: red where RUN spends more, blue where less")
    fg.add_argument("--open", action="store_true", help="open the result (browser; npx speedscope for speedscope)")
    fg.add_argument("--out", type=Path, default=None, help="parent directory of runs (default ./traces)")

    exp = sub.add_parser("export", help="a run's traces as Jaeger JSON or OTLP JSON lines (or to an OTLP endpoint)")
    exp.add_argument("format", choices=("jaeger", "otlp"),
                     help="jaeger: Jaeger's JSON trace format (Jaeger UI: Upload JSON); otlp: OTLP/JSON lines")
    exp.add_argument("run", nargs="?", help="run directory or run id (default: the latest)")
    exp.add_argument("-o", "--output", type=Path, metavar="FILE", help="where to write ('-': standard output)")
    exp.add_argument("--endpoint", metavar="URL",
                     help="otlp only: send the spans to this OTLP/HTTP endpoint instead (e.g. http://127.0.0.1:4318)")
    exp.add_argument("--sample-traces", type=float, default=1.0, metavar="R",
                     help="keep a fraction R of the traces, by trace id (0 < R <= 1; default 1)")
    exp.add_argument("--out", type=Path, default=None, help="parent directory of runs (default ./traces)")

    _add_attach_parser(sub)

    runs = sub.add_parser("runs", help="list recorded runs")
    runs.add_argument("--out", type=Path, default=None, help="parent directory of runs (default ./traces)")

    sub.add_parser("modes", help="list worker modes and scenarios")

    seed = sub.add_parser("seed", help="create and fill the item table in an existing database (for servers run by hand)")
    seed.add_argument("--db", default=os.environ.get("DATABASE_URL"), help="postgresql:// URL (default $DATABASE_URL)")
    seed.add_argument("--rows", type=int, default=10_000, help="rows in the item table (default 10000)")
    return parser


def _add_html_arguments(parser: argparse.ArgumentParser) -> None:
    """``--html FILE`` and ``--sweep FILE``, shared by report and compare."""
    parser.add_argument("--html", type=Path, metavar="FILE",
                        help="write a self-contained HTML report (charts, findings, flamegraphs; works offline) "
                             "to FILE instead of printing the table")
    parser.add_argument("--sweep", type=Path, metavar="FILE",
                        help="with --html: also draw this sweep's curves (a traces/sweep-*.json from asyncprof sweep)")


def _add_project_arguments(parser: argparse.ArgumentParser) -> None:
    """``record --app``: the user's own Django project instead of the bundled target."""
    group = parser.add_argument_group(
        "your own project", "record your Django project instead of the bundled target; nothing in it is edited")
    group.add_argument("--app", type=Path, metavar="DIR", help="the project directory (the one with manage.py)")
    group.add_argument("--wsgi", metavar="MODULE:ATTR", help="the WSGI application WSGI modes serve "
                                                            "(e.g. mysite.wsgi:application)")
    group.add_argument("--asgi", metavar="MODULE:ATTR", help="the ASGI application ASGI modes serve "
                                                            "(e.g. mysite.asgi:application)")
    group.add_argument("--settings", metavar="MODULE",
                       help="DJANGO_SETTINGS_MODULE (default: what manage.py or the application module sets)")
    group.add_argument("--setup", metavar="CMD",
                       help="shell command run in DIR before the server starts, with DATABASE_URL and PG* set "
                            "(e.g. 'python manage.py migrate --noinput'); a failure stops the run")
    group.add_argument("--locustfile", type=Path, metavar="FILE",
                       help="your locustfile and its user classes (asyncprof adds its request log and traceparent)")
    group.add_argument("--path", dest="paths", action="append", default=[], metavar="URL_PATH[:WEIGHT]",
                       help="without a locustfile: GET this path (repeatable, e.g. --path /items/:3 --path /api/; "
                            "default /)")


def _add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The load generator's options, shared by record and sweep."""
    parser.add_argument("--load-processes", type=int, default=1, metavar="N",
                        help="Locust processes sending load; N > 1 runs Locust's distributed mode, a master and N "
                             "workers (default 1)")
    parser.add_argument("--load-remote-workers", type=int, default=0, metavar="M",
                        help="also wait for M Locust workers you start on other machines (the command is printed); "
                             "needs --load-master-bind")
    parser.add_argument("--load-master-bind", default="127.0.0.1", metavar="HOST",
                        help="where the Locust master listens for workers (default 127.0.0.1)")
    parser.add_argument("--load-master-port", type=int, default=None, metavar="PORT",
                        help="the Locust master's port (default: a free one)")
    parser.add_argument("--pin", nargs="?", const="auto", metavar="LOAD/TARGET",
                        help="put the load generator (Locust, py-spy) and the target (server, embedded PostgreSQL) "
                             "on separate CPUs with taskset: 'auto' (the last quarter of the CPUs for the load) or "
                             "CPU lists such as 1/0")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "bare", False):
        args.pyspy = args.otel = args.pyinstrument = args.accounting = False
    # Runs hold stacks, SQL text and URLs of the user's app: every file asyncprof writes is the
    # owner's only (its children get the same umask from asyncprof.processes).
    os.umask(os.umask(0o077) | 0o077)
    out = Console()
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 120  # piped or in CI: the report's tables need more than rich's 80-column default
    err = Console(stderr=True)
    try:
        return int(COMMANDS[args.command](args, out, err))
    except Interrupted as exc:
        err.print(f"[yellow]interrupted:[/] {exc}; what was recorded is kept")
        return exc.exit_code
    except AsyncprofError as exc:
        kept = f"; the run is kept in {exc.run_path}" if exc.run_path else ""
        err.print(f"[red]error:[/] {escape(str(exc))}{escape(kept)}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: say so in one line unless debugging
        if os.environ.get("ASYNCPROF_DEBUG"):
            raise
        err.print(f"[red]internal error:[/] {type(exc).__name__}: {exc} (set ASYNCPROF_DEBUG=1 for a traceback)")
        return 70


def _record(args: argparse.Namespace, out: Console, err: Console) -> int:
    from asyncprof.recorder import record
    from asyncprof.analysis.report import build_report
    from asyncprof.renderers.terminal import report_table

    config = RecordConfig(
        mode=args.mode, scenario=args.scenario, view=args.view, workers=args.workers, threads=args.threads,
        users=args.users, rate=args.rate, load_processes=args.load_processes, pin=args.pin,
        load_remote_workers=args.load_remote_workers, load_master_bind=args.load_master_bind,
        load_master_port=args.load_master_port,
        spawn_rate=args.spawn_rate, duration=args.duration, warmup=args.warmup, db=args.db, rows=args.rows,
        pool_size=args.pool_size, connect=args.connect, host=args.host, port=args.port, pyspy=args.pyspy,
        pyspy_rate=args.pyspy_rate, pyspy_nonblocking=args.pyspy_nonblocking, otel=args.otel, pyinstrument=args.pyinstrument,
        accounting=args.accounting,
        profile_every=args.profile_every, out=args.out or default_parent(), calibrate=args.calibrate,
        upstream_delay_ms=args.upstream_delay_ms,
        otlp=args.otlp, **({"sample_traces": args.sample_traces} if args.sample_traces is not None else {}),
        app=args.app, wsgi=args.wsgi, asgi=args.asgi, settings=args.settings, setup=args.setup,
        locustfile=args.locustfile, paths=tuple(args.paths),
    )
    try:
        run = record(config, console=err)
    except Interrupted as exc:
        if exc.run_path is not None:
            run = resolve_run(str(exc.run_path))
            out.print(report_table(cached_report(run, build_report)))
            out.print(f"run directory: {run.path}", highlight=False, soft_wrap=True)
        raise
    out.print(report_table(cached_report(run, build_report)))
    out.print(f"run directory: {run.path}", highlight=False, soft_wrap=True)
    return 0


def _report(args: argparse.Namespace, out: Console, err: Console) -> int:
    from asyncprof.analysis.report import build_report
    from asyncprof.renderers import render_report

    sweep = _html_sweep(args)
    run = resolve_run(args.run, args.out or default_parent())
    report = cached_report(run, build_report)
    if args.html:
        _write_html(args, [run], [report], None, sweep, err)
    if args.json:
        sys.stdout.write(render_report("json", report) + "\n")
    elif not args.html:
        from asyncprof.renderers.terminal import report_table

        out.print(report_table(report))
    return 0


def _compare(args: argparse.Namespace, out: Console, err: Console) -> int:
    from asyncprof.analysis.compare import compare_reports
    from asyncprof.analysis.report import build_report
    from asyncprof.renderers import render_report

    if len(args.runs) < 2:
        raise UsageError("compare needs at least two runs", "name two or more run directories or run ids")
    sweep = _html_sweep(args)
    parent = args.out or default_parent()
    runs = [resolve_run(name, parent) for name in args.runs]
    comparison = compare_reports([cached_report(run, build_report) for run in runs])
    if args.html:
        _write_html(args, runs, comparison["runs"], comparison["gap"], sweep, err)
    if args.json:
        sys.stdout.write(render_report("json", comparison) + "\n")
    elif not args.html:
        from asyncprof.renderers.compare_terminal import compare_table

        out.print(compare_table(comparison))
    return 0


def _html_sweep(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``--sweep`` file, read before any report is built (UsageError without ``--html``)."""
    if args.sweep is None:
        return None
    if args.html is None:
        raise UsageError("--sweep draws its curves in the HTML report only", "add --html FILE")
    from asyncprof.renderers.html import read_sweep

    return read_sweep(args.sweep)


def _write_html(args: argparse.Namespace, runs: list[Any], reports: list[dict[str, Any]],
                gap: dict[str, Any] | None, sweep: dict[str, Any] | None, err: Console) -> None:
    """The HTML report of *runs* (with the ``--sweep`` curves) written to ``--html``."""
    from asyncprof.renderers.html import html_report, write_html

    write_html(args.html, html_report(runs, reports, gap=gap, sweep=sweep,
                                      sweep_source=str(args.sweep) if sweep is not None else None))
    err.print(f"HTML report written to {escape(str(args.html))}", highlight=False, soft_wrap=True)


def _number_list(flag: str, text: str, kind: type[int] | type[float]) -> list[Any]:
    """Comma-separated numbers of *kind*, or UsageError naming *flag* with an example."""
    example = f"e.g. {flag} 10,50,100" if kind is int else f"e.g. {flag} 100,200,400"
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        what = "whole numbers" if kind is int else "numbers"
        raise UsageError(f"{flag} takes comma-separated {what}, not {text!r}", example) from None
    if not values:
        raise UsageError(f"{flag} is empty", example)
    return values


def _sweep(args: argparse.Namespace, out: Console, err: Console) -> int:
    from asyncprof.renderers import render_report
    from asyncprof.sweeper import sweep

    base = RecordConfig(scenario=args.scenario, workers=args.workers, duration=args.duration, warmup=args.warmup,
                        db=args.db, load_processes=args.load_processes, pin=args.pin,
                        load_remote_workers=args.load_remote_workers, load_master_bind=args.load_master_bind,
                        load_master_port=args.load_master_port, out=args.out or default_parent(),
                        upstream_delay_ms=args.upstream_delay_ms)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    rates = _number_list("--rate", args.rate, float) if args.rate is not None else None
    users = _number_list("--users", args.users or ("100" if rates is not None else "10,50,100,200"), int)
    summary, path = sweep(base, modes, users, trials=args.trials, slo_p99_ms=args.slo_p99_ms,
                          instruments=args.instruments, rates=rates, console=err)
    if args.json:
        sys.stdout.write(render_report("json", summary) + "\n")
    else:
        from asyncprof.renderers.sweep_terminal import sweep_table

        out.print(sweep_table(summary))
    err.print(f"sweep saved to {path}", highlight=False, soft_wrap=True)
    return 0


def _flamegraph(args: argparse.Namespace, out: Console, err: Console) -> int:
    from asyncprof.analysis.flame import build_flame, diff_flame
    from asyncprof.renderers.flamegraph import open_flame, output_name, write_flame

    pids = [p.strip() for text in args.pid or () for p in text.split(",") if p.strip()]
    if not all(p.isdigit() for p in pids):
        raise UsageError(f"--pid takes process ids, not {','.join(args.pid)!r}", "e.g. --pid 1234 --pid 1235")
    if args.diff and args.format != "svg":
        raise UsageError(f"--diff draws an SVG, not --format {args.format}", "drop --format or --diff")
    if args.diff and pids:
        raise UsageError("--pid cannot be used with --diff (the two runs have different workers)",
                         "compare the whole runs, or one category with --category")
    parent = args.out or default_parent()
    run = resolve_run(args.run, parent)
    flame = build_flame(run, wall=args.wall, pids=[int(p) for p in pids], category=args.category)
    if args.diff:
        flame = diff_flame(flame, build_flame(resolve_run(args.diff, parent), wall=args.wall, category=args.category))
    path = args.output or run.path / output_name(flame, args.format)
    write_flame(flame, args.format, path)
    for note in flame.notes:
        err.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    sys.stdout.write(f"{path}\n")
    if args.open:
        err.print(escape(open_flame(path, args.format)), highlight=False, soft_wrap=True)
    return 0


def _runs(args: argparse.Namespace, out: Console, err: Console) -> int:
    parent = args.out or default_parent()
    table = Table(title=f"runs under {parent}", title_justify="left")
    for col in ("run id", "mode", "scenario", "status", "users", "workers", "duration"):
        table.add_column(col)
    n = 0
    for run in iter_runs(parent):
        c = run.manifest.get("config", {})
        table.add_row(run.run_id, str(c.get("mode") or run.manifest.get("kind")), str(c.get("scenario")), str(run.manifest.get("status")),
                      str(c.get("users")), str(c.get("workers")), f"{c.get('duration')}")
        n += 1
    if n == 0:
        err.print(f"no runs under {parent} (record one with: asyncprof record)")
        return 0
    out.print(table)
    return 0


def _modes(args: argparse.Namespace, out: Console, err: Console) -> int:
    table = Table(title="worker modes", title_justify="left")
    for col in ("mode", "interface", "description"):
        table.add_column(col)
    for m in MODES.values():
        table.add_row(m.name, m.interface, m.description)
    out.print(table)
    scen = Table(title="scenarios", title_justify="left")
    scen.add_column("scenario")
    scen.add_column("description")
    for s in SCENARIOS.values():
        scen.add_row(s.name, s.description)
    out.print(scen)
    return 0


def _seed(args: argparse.Namespace, out: Console, err: Console) -> int:
    from asyncprof.database import open_database, seed

    if not args.db or args.db == "embedded":
        raise UsageError("seed needs --db postgresql://... (or DATABASE_URL)",
                         "asyncprof record seeds its embedded database itself")
    if args.rows < 1:
        raise UsageError(f"--rows must be at least 1, not {args.rows}")
    with open_database(args.db) as db:
        refilled = seed(db.url, args.rows)
        out.print(f"item table at {db.display_url}: {args.rows} rows ({'filled' if refilled else 'already there'})",
                  highlight=False)
    return 0


COMMANDS = {"record": _record, "report": _report, "compare": _compare, "sweep": _sweep, "runs": _runs, "modes": _modes, "seed": _seed}
COMMANDS["flamegraph"] = _flamegraph


def _export(args: argparse.Namespace, out: Console, err: Console) -> int:
    from asyncprof.exporters.run_export import export_run

    run = resolve_run(args.run, args.out or default_parent())
    summary = export_run(run, args.format, output=args.output, endpoint=args.endpoint, rate=args.sample_traces)
    for line in summary.warnings:
        err.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)
    for line in summary.lines:
        err.print(escape(line), highlight=False, soft_wrap=True)
    return 0


COMMANDS["export"] = _export


def _add_attach_parser(sub: Any) -> None:
    """``asyncprof attach``: profile a running server asyncprof did not start (see asyncprof.attacher)."""
    att = sub.add_parser("attach", help="profile a running gunicorn/uvicorn/granian server asyncprof did not start")
    att.add_argument("--pid", type=int, required=True, help="the server's master process id (its workers are found)")
    att.add_argument("--url", help="where the server answers, e.g. http://127.0.0.1:8000 (needed unless --no-load)")
    att.add_argument("--duration", type=float, default=30.0, help="measured seconds (default 30)")
    att.add_argument("--warmup", type=float, default=5.0,
                     help="seconds of load before the window opens (default 5)")
    att.add_argument("--users", type=int, default=None,
                     help="closed-loop Locust users (default 10); with --rate, the most connections (default 50)")
    att.add_argument("--rate", type=float, default=None, help="open loop: requests per second in total")
    att.add_argument("--no-load", dest="load", action="store_false",
                     help="send no request: observe the server's own traffic (no client latency then)")
    att.add_argument("--path", action="append", default=[], metavar="URL_PATH",
                     help="a page to load, repeatable, optionally weighted: --path /items/:3 (default /)")
    att.add_argument("--pyspy-rate", type=int, default=DEFAULT_PYSPY_RATE, help="py-spy samples per second")
    att.add_argument("--out", type=Path, default=None, help="parent directory of runs (default ./traces)")


def _attach(args: argparse.Namespace, out: Console, err: Console) -> int:
    from asyncprof.analysis.report import build_report
    from asyncprof.attacher import AttachConfig, attach
    from asyncprof.renderers.terminal import report_table

    config = AttachConfig(pid=args.pid, url=args.url, duration=args.duration, warmup=args.warmup, users=args.users,
                          rate=args.rate, load=args.load, paths=list(args.path), pyspy_rate=args.pyspy_rate,
                          out=args.out or default_parent())
    try:
        run = attach(config, console=err)
    except Interrupted as exc:
        if exc.run_path is not None:
            out.print(report_table(cached_report(resolve_run(str(exc.run_path)), build_report)))
            out.print(f"run directory: {exc.run_path}", highlight=False, soft_wrap=True)
        raise
    out.print(report_table(cached_report(run, build_report)))
    out.print(f"run directory: {run.path}", highlight=False, soft_wrap=True)
    return 0


COMMANDS["attach"] = _attach
