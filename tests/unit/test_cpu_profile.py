"""cpu_profile and the category table on small hand-written collapsed stacks with known answers."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncprof.analysis import categories
from asyncprof.analysis.categories import CATEGORIES, Rule, add_app_packages, add_rule, build_classifier
from asyncprof.analysis.cpu_profile import cpu_profile

MASTER = 'process 10:"python -m gunicorn"'
W1 = 'process 11:"python -m gunicorn"'
W2 = 'process 12:"python -m gunicorn"'

# Root parts of real stacks (py-spy's short paths), shortened.
SYNC = ("SyncWorker.handle_request (gunicorn/workers/sync.py:184);"
        "WSGIHandler.__call__ (django/core/handlers/wsgi.py:124)")
LOOP = ("UvicornWorker.run (uvicorn_worker/_workers.py:90);run (asyncio/runners.py:190);"
        "BaseEventLoop.run_forever (asyncio/base_events.py:607);BaseEventLoop._run_once (asyncio/base_events.py:1922)")
TASK = f"{LOOP};Handle._run (asyncio/events.py:80)"
REQUEST = (f"{TASK};RequestResponseCycle.run_asgi (uvicorn/protocols/http/h11_impl.py:411);"
           "ASGIHandler.__call__ (django/core/handlers/asgi.py:165)")
POOL = ("Thread._bootstrap (threading.py:1002);Thread._bootstrap_inner (threading.py:1045);"
        "Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:83)")
S2A = (f"{REQUEST};MiddlewareMixin.__acall__ (django/utils/deprecation.py:138);"
       "SyncToAsync.__call__ (asgiref/sync.py:567)")
OTEL_THREAD = (f"{POOL.rsplit(';', 1)[0]};BatchProcessor.worker (_shared_internal/__init__.py:159);"
               "Event.wait (threading.py:629)")


def line(process: str, stack: str, count: int, thread: int = 1) -> str:
    return f"{MASTER};{process};thread ({thread}): T;{stack} {count}\n"


IDLE_LINES = [
    f"{MASTER};thread (2): MainThread;Arbiter.run (gunicorn/arbiter.py:247);"
    "Arbiter.sleep (gunicorn/arbiter.py:371);Arbiter.wait_for_signals (gunicorn/arbiter.py:425) 40\n",
    line(W2, f"{LOOP};EpollSelector.select (selectors.py:468)", 30),  # the loop waiting for I/O
    line(W2, f"{POOL.rsplit(';', 1)[0]};_worker (concurrent/futures/thread.py:81)", 20, thread=3),  # pool, on its queue
    line(W1, f"{OTEL_THREAD};Condition.wait (threading.py:331)", 10, thread=4),  # BatchSpanProcessor waiting
    line(W2, f"{S2A};Thread.join (threading.py:1119);Thread._wait_for_tstate_lock (threading.py:1139)", 5),
]


@pytest.fixture(autouse=True)
def _no_leftover_user_rules() -> Iterator[None]:
    categories.reset_user_rules()
    yield
    categories.reset_user_rules()


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "samples.txt"
    path.write_text("".join(lines))
    return path


def test_idle_samples_are_excluded_and_categories_have_exact_shares(tmp_path: Path) -> None:
    active = [
        line(W1, f"{SYNC};seed_sync (asyncprof_target/views.py:22)", 10),                                  # app
        line(W1, f"{SYNC};seed_sync (asyncprof_target/views.py:25);"
                 "JsonResponse.__init__ (django/http/response.py:700);"
                 "dumps (json/__init__.py:238);JSONEncoder.encode (json/encoder.py:200)", 10),  # django: json inherits
        line(W1, f"{SYNC};CursorTracer.traced_execution (dbapi/__init__.py:880)", 20),                     # otel
        line(W1, f"{SYNC};connect (psycopg2/__init__.py:122)", 5),                                         # db_driver
        line(W2, f"{REQUEST};seed_async (asyncprof_target/views.py:33);"
                 "Connection.fetch (asyncpg/connection.py:717)", 5),
        line(W1, "SyncWorker.handle_request (gunicorn/workers/sync.py:175)", 10),                          # http_server
        line(W2, f"{TASK}", 10),                                                                           # event_loop
        line(W2, f"{S2A};BaseEventLoop.run_in_executor (asyncio/base_events.py:829);"
                 "ThreadPoolExecutor.submit (concurrent/futures/thread.py:175)", 15),                      # thread_pool
        line(W2, "frame (nowhere.py:1)", 5),                                                               # other
    ]
    profile = cpu_profile(write(tmp_path, IDLE_LINES + active + ["not a stack line\n"]))
    assert profile.samples == 105 + 90
    assert profile.idle_samples == 105
    assert profile.on_cpu_samples == 90
    assert profile.category_samples == {
        "app": 10, "django": 10, "db_driver": 10, "http_server": 10, "event_loop": 10,
        "thread_pool": 15, "otel_and_profilers": 20, "other": 5,
    }
    assert profile.shares["thread_pool"] == 15 / 90
    assert sum(profile.shares.values()) == pytest.approx(1.0)
    assert profile.on_cpu_by_pid == {11: 55, 12: 35}  # the master only waited
    django = profile.top_functions["django"]
    assert [(f.function, f.samples) for f in django] == [("JsonResponse.__init__ (django/http/response.py)", 10)]
    assert django[0].share == 10 / 90


@pytest.mark.parametrize(("leaf", "category"), [
    # asyncio called by the thread-hop machinery is thread_pool machinery.
    (f"{S2A};BaseEventLoop.run_in_executor (asyncio/base_events.py:829)", "thread_pool"),
    (f"{S2A};shield (asyncio/tasks.py:881);BaseEventLoop.create_future (asyncio/base_events.py:427)", "thread_pool"),
    (f"{POOL};_WorkItem.run (concurrent/futures/thread.py:58);"
     "Future.set_result (concurrent/futures/_base.py:549);Future._invoke_callbacks (concurrent/futures/_base.py:340);"
     "_chain_future.<locals>._call_set_state (asyncio/futures.py:381);"
     "BaseEventLoop.call_soon_threadsafe (asyncio/base_events.py:807);"
     "BaseSelectorEventLoop._write_to_self (asyncio/selector_events.py:139)", "thread_pool"),
    # Starting and joining threads, and a thread's C bootstrap (no Python frame yet).
    (f"{S2A};BaseEventLoop.run_in_executor (asyncio/base_events.py:829);"
     "ThreadPoolExecutor.submit (concurrent/futures/thread.py:176);"
     "ThreadPoolExecutor._adjust_thread_count (concurrent/futures/thread.py:199);Thread.start (threading.py:964)",
     "thread_pool"),
    (f"{REQUEST};ThreadSensitiveContext.__aexit__ (asgiref/sync.py:207);Thread.start (threading.py:964)",
     "thread_pool"),
    ("", "thread_pool"),
    # Work done in a pool thread belongs to whoever's code runs there.
    (f"{POOL};_WorkItem.run (concurrent/futures/thread.py:58);SyncToAsync.thread_handler (asgiref/sync.py:522);"
     "SessionMiddleware.process_request (django/contrib/sessions/middleware.py:18)", "django"),
    # The loop's own scheduling stays event_loop; the worker entry point claims nothing.
    (f"{TASK};_SelectorSocketTransport._read_ready__data_received (asyncio/selector_events.py:995)", "event_loop"),
    (f"{REQUEST};seed_async (asyncprof_target/views.py:35);gather (asyncio/tasks.py:826)", "event_loop"),
    # Transport writes are billed to the driver or server that writes.
    (f"{REQUEST};Connection._do_execute (asyncpg/connection.py:2066);"
     "_SelectorSocketTransport.write (asyncio/selector_events.py:1057)", "db_driver"),
    (f"{TASK};RequestResponseCycle.send (uvicorn/protocols/http/h11_impl.py:490);"
     "_SelectorSocketTransport.write (asyncio/selector_events.py:1057)", "http_server"),
    # Generic helpers bill their caller: threading's Condition under OTel, selectors, introspection.
    (f"{OTEL_THREAD.rsplit(';', 1)[0]};BatchProcessor.emit (_shared_internal/__init__.py:203);"
     "Condition.notify (threading.py:382)", "otel_and_profilers"),
    (f"{SYNC};BaseHandler.adapt_method_mode (django/core/handlers/base.py:130);"
     "iscoroutinefunction (asyncio/coroutines.py:24)", "django"),
    (f"{SYNC};_DefaultLocal.__getattr__ (asgiref/local.py:90)", "django"),
    # OTel's namespace-package short names, told from the drivers by function.
    (f"{REQUEST};AsyncPGInstrumentor._do_execute (asyncpg/__init__.py:239)", "otel_and_profilers"),
    (f"{SYNC};_new_cursor_factory.<locals>.TracedCursorFactory.execute (psycopg2/__init__.py:370)",
     "otel_and_profilers"),
    (f"{SYNC};_start_internal_or_server_span (utils.py:120)", "otel_and_profilers"),
    (f"{SYNC};BoundedList.__init__ (util/__init__.py:41)", "otel_and_profilers"),
    (f"{SYNC};helper (utils.py:3)", "django"),  # a bare utils.py is OTel's only for OTel's function names
    (f"{SYNC};profile_middleware.<locals>.sync_middleware (asyncprof/worker/profiling.py:64)", "otel_and_profilers"),
    (f"{SYNC};Profiler.start (pyinstrument/profiler.py:150)", "otel_and_profilers"),
    ("<module> (gunicorn/__main__.py:10);run (gunicorn/app/wsgiapp.py:66)", "http_server"),
    ("_run_module_as_main (<frozen runpy>:198);__doc__ 3", "other"),
])
def test_classification_rules(leaf: str, category: str) -> None:
    frames = tuple(f for f in leaf.split(";") if f)
    assert build_classifier().classify(frames)[0] == category


def test_claiming_frame_is_the_top_function(tmp_path: Path) -> None:
    path = write(tmp_path, [line(W2, f"{S2A};BaseEventLoop.run_in_executor (asyncio/base_events.py:829)", 3)])
    top = cpu_profile(path).top_functions["thread_pool"]
    assert [(f.function, f.samples) for f in top] == [("SyncToAsync.__call__ (asgiref/sync.py)", 3)]


def test_top_functions_are_five_most_sampled_ties_by_name(tmp_path: Path) -> None:
    lines = [line(W1, f"{SYNC};f{i} (django/x.py:{i})", 1 + i // 2) for i in range(8)]  # counts 1,1,2,2,3,3,4,4
    top = cpu_profile(write(tmp_path, lines)).top_functions["django"]
    assert [(f.function, f.samples) for f in top] == [
        ("f6 (django/x.py)", 4), ("f7 (django/x.py)", 4), ("f4 (django/x.py)", 3), ("f5 (django/x.py)", 3),
        ("f2 (django/x.py)", 2),
    ]


def test_user_project_packages_count_as_app(tmp_path: Path) -> None:
    lines = [line(W1, f"{SYNC};checkout (shop/views.py:10)", 4),
             line(W1, f"{SYNC};ping (mysite/health/views.py:3)", 2),
             line(W1, f"{SYNC};seed_sync (asyncprof_target/views.py:22)", 1)]
    path = write(tmp_path, lines)
    assert cpu_profile(path).category_samples["app"] == 1  # only the default package
    extended = cpu_profile(path, app_packages=["shop", "mysite.health"])
    assert extended.category_samples["app"] == 7
    assert extended.app_packages == ("asyncprof_target", "shop", "mysite.health")
    add_app_packages("shop")
    assert cpu_profile(path).category_samples["app"] == 5


def test_user_rules_come_first(tmp_path: Path) -> None:
    lines = [line(W1, f"{SYNC};CursorTracer.traced_execution (dbapi/__init__.py:880)", 3),
             line(W1, f"{SYNC};query (mydriver/core.py:5)", 2)]
    path = write(tmp_path, lines)
    add_rule("db_driver", "mydriver/")
    assert cpu_profile(path).category_samples["db_driver"] == 2
    # Bill the line that calls psycopg2's C execute to the driver instead of OTel's wrapper.
    rule = Rule("db_driver", "dbapi/__init__.py", "CursorTracer.traced_execution")
    assert cpu_profile(path, extra_rules=[rule]).category_samples["db_driver"] == 5


def test_rules_reject_unknown_categories() -> None:
    with pytest.raises(ValueError, match="unknown category"):
        Rule("database", "mydriver/")
    with pytest.raises(ValueError, match="unknown category"):
        add_rule("app", "x/", claims=["loop"])


def test_missing_file_and_json_shape(tmp_path: Path) -> None:
    empty = cpu_profile(tmp_path / "absent.txt")
    assert (empty.samples, empty.on_cpu_samples, empty.idle_samples) == (0, 0, 0)
    assert empty.shares == dict.fromkeys(CATEGORIES, 0.0)

    app_line = line(W1, f"{SYNC};seed_sync (asyncprof_target/views.py:22)", 2)
    profile = cpu_profile(write(tmp_path, [*IDLE_LINES, app_line]))
    data = profile.to_json()
    assert set(data) == {"samples", "on_cpu_samples", "idle_samples", "shares", "category_samples",
                         "top_functions", "on_cpu_by_pid", "app_packages"}
    assert list(data["shares"]) == list(CATEGORIES) == list(data["top_functions"])
    assert data["shares"]["app"] == 1.0
    assert data["on_cpu_by_pid"] == {"11": 2}
    assert data["top_functions"]["app"] == [
        {"function": "seed_sync (asyncprof_target/views.py)", "samples": 2, "share": 1.0}]
    assert data["top_functions"]["django"] == []
