"""The category rules for every worker mode's server, on stacks copied from real recordings.

Each stack below is a py-spy collapsed stack (frames root first, ``;``-separated) recorded with
``asyncprof record --mode <mode> --duration 4 --users 10`` on this project's seed scenario
(hypercorn 0.18, daphne 4.2 on Twisted 26, gevent 26 under gunicorn 27, granian 2.8, uvicorn 0.54
with uvloop 0.23 and httptools 0.9), trimmed in the middle where marked so the lines stay readable.
"""

import pytest

from asyncprof.analysis.categories import build_classifier

# --- hypercorn: asyncio workers started through multiprocessing; h11 parses HTTP/1.1 ---------------

HYPERCORN_LOOP = (
    "<module> (<string>:1);spawn_main (multiprocessing/spawn.py:122);_main (multiprocessing/spawn.py:135);"
    "BaseProcess._bootstrap (multiprocessing/process.py:314);BaseProcess.run (multiprocessing/process.py:108);"
    "asyncio_worker (hypercorn/asyncio/run.py:195);_run (hypercorn/asyncio/run.py:233);"
    "Runner.run (asyncio/runners.py:118);BaseEventLoop.run_until_complete (asyncio/base_events.py:640);"
    "BaseEventLoop.run_forever (asyncio/base_events.py:607);BaseEventLoop._run_once (asyncio/base_events.py:1922)"
)
HYPERCORN_TASK = (f"{HYPERCORN_LOOP};Handle._run (asyncio/events.py:80);"
                  "TimedCoroutine.send (asyncprof/worker/loop_hooks.py:70);"
                  "TimedCoroutine._step (asyncprof/worker/loop_hooks.py:113)")
HYPERCORN_READ = (f"{HYPERCORN_TASK};TCPServer.run (hypercorn/asyncio/tcp_server.py:73);"
                  "TCPServer._read_data (hypercorn/asyncio/tcp_server.py:108);"
                  "ProtocolWrapper.handle (hypercorn/protocol/__init__.py:66);"
                  "H11Protocol.handle (hypercorn/protocol/h11.py:116)")
HYPERCORN_APP = (f"{HYPERCORN_TASK};_handle (hypercorn/asyncio/task_group.py:28);"
                 "ASGIWrapper.__call__ (hypercorn/app_wrappers.py:34);"
                 "serve_standalone_asgi.<locals>.application (asyncprof/worker/hooks.py:302);"
                 "OpenTelemetryMiddleware.__call__ (asgi/__init__.py:779);"
                 "wrap_asgi.<locals>.application (asyncprof/worker/accounting.py:219);"
                 "ASGIHandler.__call__ (django/core/handlers/asgi.py:166)")
HYPERCORN_SEND = (f"{HYPERCORN_TASK};ASGIHandler.handle.<locals>.process_request (django/core/handlers/asgi.py:191);"
                  "ASGIHandler.send_response (django/core/handlers/asgi.py:353);"
                  "wrap_asgi.<locals>.application.<locals>.accounted_send (asyncprof/worker/accounting.py:216);"
                  "OpenTelemetryMiddleware._get_otel_send.<locals>.otel_send (asgi/__init__.py:974);"
                  "HTTPStream.app_send (hypercorn/protocol/http_stream.py:200);"
                  "HTTPStream._send_closed (hypercorn/protocol/http_stream.py:244);"
                  "H11Protocol.stream_send (hypercorn/protocol/h11.py:145)")

# --- daphne: Twisted's reactor on asyncio; twisted.web parses HTTP --------------------------------

DAPHNE_LOOP = (
    "_run_module_as_main (<frozen runpy>:198);_run_code (<frozen runpy>:88);<module> (daphne/__main__.py:3);"
    "CommandLineInterface.entrypoint (daphne/cli.py:187);CommandLineInterface.run (daphne/cli.py:309);"
    "Server.run (daphne/server.py:155);AsyncioSelectorReactor.run (twisted/internet/asyncioreactor.py:257);"
    "BaseEventLoop.run_forever (asyncio/base_events.py:607);BaseEventLoop._run_once (asyncio/base_events.py:1922)"
)
DAPHNE_REPLY = (
    f"{DAPHNE_LOOP};Handle._run (asyncio/events.py:80);TimedCoroutine.send (asyncprof/worker/loop_hooks.py:70);"
    "TimedCoroutine._step (asyncprof/worker/loop_hooks.py:113);"
    "ASGIHandler.handle.<locals>.process_request (django/core/handlers/asgi.py:191);"
    "ASGIHandler.send_response (django/core/handlers/asgi.py:353);"
    "wrap_asgi.<locals>.application.<locals>.accounted_send (asyncprof/worker/accounting.py:216);"
    "OpenTelemetryMiddleware._get_otel_send.<locals>.otel_send (asgi/__init__.py:974);"
    "Server.handle_reply (daphne/server.py:246);WebRequest.handle_reply (daphne/http_protocol.py:270);"
    "Request.write (twisted/web/http.py:1302);HTTPChannel.writeHeaders (twisted/web/http.py:2777)"
)
DAPHNE_WRITE = (f"{DAPHNE_REPLY};ConnectionMixin.writeSequence (twisted/internet/_newtls.py:192);"
                "FileDescriptor.writeSequence (twisted/internet/abstract.py:435);"
                "FileDescriptor.startWriting (twisted/internet/abstract.py:492);"
                "AsyncioSelectorReactor.addWriter (twisted/internet/asyncioreactor.py:175);"
                "BaseSelectorEventLoop.add_writer (asyncio/selector_events.py:350);"
                "BaseSelectorEventLoop._add_writer (asyncio/selector_events.py:308);"
                "_PollLikeSelector.modify (selectors.py:398);"
                "namedtuple.<locals>._replace (collections/__init__.py:453)")
DAPHNE_READ = (f"{DAPHNE_LOOP};Handle._run (asyncio/events.py:80);"
               "AsyncioSelectorReactor._readOrWrite (twisted/internet/asyncioreactor.py:141);"
               "callWithLogger (twisted/python/log.py:96);callWithContext (twisted/python/log.py:80);"
               "ThreadedContextTracker.callWithContext (twisted/python/context.py:117);"
               "Connection.doRead (twisted/internet/tcp.py:248);Connection._dataReceived (twisted/internet/tcp.py:254)")

# --- gevent: gunicorn's gevent worker, a greenlet per connection; the hub is the loop -------------

GEVENT_GREENLET = ("_handle_and_close_when_done (gevent/baseserver.py:34);"
                   "GeventWorker.handle (gunicorn/workers/ggevent.py:120)")
GEVENT_REQUEST = (f"{GEVENT_GREENLET};AsyncWorker.handle (gunicorn/workers/base_async.py:98);"
                  "GeventWorker.handle_request (gunicorn/workers/ggevent.py:124)")
GEVENT_VIEW = (f"{GEVENT_REQUEST};AsyncWorker.handle_request (gunicorn/workers/base_async.py:329);"
               "OpenTelemetryMiddleware.__call__ (wsgi/__init__.py:694);"
               "wrap_wsgi.<locals>.application (asyncprof/worker/accounting.py:154);"
               "WSGIHandler.__call__ (django/core/handlers/wsgi.py:124)")

# --- granian: HTTP in Rust; its Python side starts the loop and wraps each request ----------------

GRANIAN_LOOP = (
    "_run_module_as_main (<frozen runpy>:198);_run_code (<frozen runpy>:88);<module> (granian/__main__.py:4);"
    "entrypoint (granian/cli.py:606);Command.__call__ (click/core.py:1653);Command.main (click/core.py:1560);"
    "Command.invoke (click/core.py:1414);Context.invoke (click/core.py:911);cli (granian/cli.py:600);"
    "MPServer.serve (granian/server/mp.py:513);AbstractServer.serve (granian/server/common.py:767);"
    "AbstractServer._serve (granian/server/common.py:595);AbstractServer.startup (granian/server/common.py:500);"
    "AbstractServer._spawn_workers (granian/server/common.py:352);AbstractWorker.start (granian/server/common.py:72);"
    "BaseProcess.start (multiprocessing/process.py:121);ForkProcess._Popen (multiprocessing/context.py:281);"
    "Popen.__init__ (multiprocessing/popen_fork.py:19);Popen._launch (multiprocessing/popen_fork.py:71);"
    "BaseProcess._bootstrap (multiprocessing/process.py:314);BaseProcess.run (multiprocessing/process.py:108);"
    "WorkerProcess.wrap_target.<locals>.wrapped (granian/server/mp.py:93);"
    "MPServer._spawn_asgi_lifespan_worker (granian/server/mp.py:249);"
    "BaseEventLoop.run_until_complete (asyncio/base_events.py:640);"
    "BaseEventLoop.run_forever (asyncio/base_events.py:607);BaseEventLoop._run_once (asyncio/base_events.py:1922)"
)
GRANIAN_TASK = (f"{GRANIAN_LOOP};Handle._run (asyncio/events.py:80);"
                "TimedCoroutine.send (asyncprof/worker/loop_hooks.py:70);"
                "TimedCoroutine._step (asyncprof/worker/loop_hooks.py:113);"
                "_future_watcher_wrapper.<locals>.future_watcher (granian/_futures.py:15)")
GRANIAN_WSGI = "_callback_wrapper.<locals>._runner (granian/wsgi.py:57)"  # a blocking thread's root

# --- uvicorn with uvloop and httptools: both in C, so neither shows a frame of its own -------------

UVLOOP = (
    "<module> (<string>:1);spawn_main (multiprocessing/spawn.py:122);_main (multiprocessing/spawn.py:135);"
    "BaseProcess._bootstrap (multiprocessing/process.py:314);BaseProcess.run (multiprocessing/process.py:108);"
    "subprocess_started (uvicorn/_subprocess.py:80);Process.target (uvicorn/supervisors/multiprocess.py:77);"
    "Server.run (uvicorn/server.py:86);asyncio_run (uvicorn/_compat.py:30);Runner.run (asyncio/runners.py:118)"
)


@pytest.mark.parametrize(("stack", "category"), [
    # hypercorn's worker entry starts the loop and claims nothing: the loop's own time stays event_loop.
    (f"{HYPERCORN_LOOP};Handle._run (asyncio/events.py:80)", "event_loop"),
    (HYPERCORN_LOOP, "event_loop"),
    # Its TCP server, protocol and task group are the server; the asyncio they call is theirs.
    (HYPERCORN_READ, "http_server"),
    (f"{HYPERCORN_READ};H11Protocol._handle_events (hypercorn/protocol/h11.py:163);"
     "Connection.next_event (h11/_connection.py:481);"
     "Connection._extract_next_receive_event (h11/_connection.py:418);"
     "ReceiveBuffer.__bool__ (h11/_receivebuffer.py:58)", "http_server"),
    (f"{HYPERCORN_READ};H11Protocol._handle_events (hypercorn/protocol/h11.py:173);"
     "H11Protocol._create_stream (hypercorn/protocol/h11.py:235);"
     "HTTPStream.handle (hypercorn/protocol/http_stream.py:114);"
     "TaskGroup.spawn_app (hypercorn/asyncio/task_group.py:55);Queue.__init__ (asyncio/queues.py:42)", "http_server"),
    (f"{HYPERCORN_TASK};TCPServer._idle_timeout (hypercorn/asyncio/tcp_server.py:138);"
     "wait_for (asyncio/tasks.py:485);_cancel_and_wait (asyncio/tasks.py:555)", "http_server"),
    (f"{HYPERCORN_SEND};H11Protocol._send_h11_event (hypercorn/protocol/h11.py:250);"
     "Connection.send (h11/_connection.py:538);Connection.send_with_data_passthrough (h11/_connection.py:563);"
     "Connection._process_event (h11/_connection.py:284);ConnectionState.process_event (h11/_state.py:291)",
     "http_server"),
    # What runs under the application wrapper is the application's, not hypercorn's.
    (f"{HYPERCORN_APP};ASGIHandler.handle (django/core/handlers/asgi.py:233);"
     "install_asgiref.<locals>.call (asyncprof/worker/call_hooks.py:84);SyncToAsync.__call__ (asgiref/sync.py:567);"
     "BaseEventLoop.run_in_executor (asyncio/base_events.py:829);"
     "ThreadPoolExecutor.submit (concurrent/futures/thread.py:175)", "thread_pool"),
    (f"{HYPERCORN_APP};ThreadSensitiveContext.__aexit__ (asgiref/sync.py:182);WeakKeyDictionary.pop (weakref.py:505)",
     "thread_pool"),
    # daphne: the reactor (Twisted on asyncio) is the loop; daphne's Server.run claims nothing.
    (f"{DAPHNE_LOOP};Handle._run (asyncio/events.py:80)", "event_loop"),
    (f"{DAPHNE_LOOP};Handle._run (asyncio/events.py:80);"
     "BaseSelectorEventLoop._read_from_self (asyncio/selector_events.py:119)", "event_loop"),
    (DAPHNE_READ, "event_loop"),  # twisted.python's log/context wrappers bill the reactor
    (f"{DAPHNE_READ};HTTPChannel.dataReceived (twisted/web/http.py:2398);"
     "LineReceiver.dataReceived (twisted/protocols/basic.py:549)", "http_server"),
    (f"{DAPHNE_READ};_GenericHTTPChannelProtocol.dataReceived (twisted/web/http.py:3298);"
     "Request.gotLength (twisted/web/http.py:1017);_getContentFile (twisted/web/http.py:1003)", "http_server"),
    # daphne's reply goes through twisted.web to the reactor's transports and asyncio: the server's.
    (DAPHNE_REPLY, "http_server"),
    (f"{DAPHNE_REPLY};ConnectionMixin.writeSequence (twisted/internet/_newtls.py:192);"
     "FileDescriptor.writeSequence (twisted/internet/abstract.py:432)", "http_server"),
    (DAPHNE_WRITE, "http_server"),
    (f"{DAPHNE_LOOP};Handle._run (asyncio/events.py:80);Server.application_checker (daphne/server.py:290)",
     "http_server"),
    # gevent: the hub is the loop; greenlet callbacks and cooperative waits are its machinery.
    ("Hub.run (gevent/hub.py:647)", "event_loop"),
    ("Hub.run (gevent/hub.py:647);SelectResult._make_callback.<locals>.cb (gevent/select.py:91)", "event_loop"),
    ("Hub.run (gevent/hub.py:647);install.<locals>.trace (asyncprof/worker/greenlet_hooks.py:85);"
     "_switch (asyncprof/worker/greenlet_hooks.py:131)", "otel_and_profilers"),
    # A connection's greenlet: gunicorn's parser and timeouts, and the gevent socket I/O they do.
    (f"{GEVENT_GREENLET};AsyncWorker.handle (gunicorn/workers/base_async.py:88);"
     "Parser.__next__ (gunicorn/http/parser.py:119);Request.__init__ (gunicorn/http/message.py:525);"
     "Message.__init__ (gunicorn/http/message.py:324);Request.parse (gunicorn/http/message.py:537);"
     "Request.read_into (gunicorn/http/message.py:701);Unreader.read (gunicorn/http/unreader.py:62);"
     "SocketUnreader.chunk (gunicorn/http/unreader.py:100);SocketMixin.recv (gevent/_socketcommon.py:657)",
     "http_server"),
    (f"{GEVENT_REQUEST};AsyncWorker.handle_request (gunicorn/workers/base_async.py:337);"
     "Response.write (gunicorn/http/wsgi.py:475);Response.send_headers (gunicorn/http/wsgi.py:471);"
     "write (gunicorn/util.py:348);SocketMixin.sendall (gevent/_socketcommon.py:693)", "http_server"),
    (f"{GEVENT_REQUEST};Timeout.close (gevent/timeout.py:317)", "http_server"),
    (f"{GEVENT_GREENLET};AsyncWorker.handle (gunicorn/workers/base_async.py:87);"
     "GeventWorker.timeout_ctx (gunicorn/workers/ggevent.py:54);Timeout.__init__ (gevent/timeout.py:209)",
     "http_server"),
    ("_handle_and_close_when_done (gevent/baseserver.py:34)", "http_server"),
    # gevent's patched thread primitives bill their caller (OTel here, Django there).
    (f"{GEVENT_REQUEST};AsyncWorker.handle_request (gunicorn/workers/base_async.py:329);"
     "OpenTelemetryMiddleware.__call__ (wsgi/__init__.py:663);_start_internal_or_server_span (utils.py:139);"
     "Tracer.start_span (trace/__init__.py:1200);Span.__init__ (trace/__init__.py:810);"
     "BoundedAttributes.__init__ (attributes/__init__.py:155);LockType.__init__ (gevent/thread.py:292)",
     "otel_and_profilers"),
    (f"{GEVENT_VIEW};BaseConnectionHandler.all (django/utils/connection.py:76);"
     "_DefaultLocal.__getattr__ (asgiref/local.py:143);_RLock.acquire (threading.py:164);"
     "get_ident (gevent/thread.py:81)", "django"),
    # psycopg2 made cooperative: psycogreen's wait callback is the driver's; asyncprof's own is ours.
    (f"{GEVENT_VIEW};seed_sync (asyncprof_target/views.py:22);gevent_wait_callback (psycogreen/gevent.py:30);"
     "wait_read (gevent/_hub_primitives.py:317)", "db_driver"),
    (f"{GEVENT_VIEW};CursorTracer.traced_execution (dbapi/__init__.py:880);"
     "install_psycopg2.<locals>.wait (asyncprof/worker/call_hooks.py:234);"
     "_timed_select (asyncprof/worker/call_hooks.py:195);wait (asyncprof/worker/greenlet_hooks.py:188);"
     "select (gevent/select.py:184)", "event_loop"),
    # granian: its server entry starts the loop and claims nothing ...
    (f"{GRANIAN_LOOP};Handle._run (asyncio/events.py:80)", "event_loop"),
    (f"{GRANIAN_LOOP};Handle._run (asyncio/events.py:80);"
     "BaseSelectorEventLoop._read_from_self (asyncio/selector_events.py:119)", "event_loop"),
    # ... its per-request glue schedules the request's task: server work.
    (f"{GRANIAN_LOOP};Handle._run (asyncio/events.py:80);_cbsched_aioschedule.<locals>._run (granian/_futures.py:92);"
     "BaseEventLoop.create_task (asyncio/base_events.py:442)", "http_server"),
    (GRANIAN_TASK, "http_server"),
    (f"{GRANIAN_TASK};serve_standalone_asgi.<locals>.application (asyncprof/worker/hooks.py:302);"
     "OpenTelemetryMiddleware.__call__ (asgi/__init__.py:731);_start_internal_or_server_span (utils.py:139);"
     "Tracer.start_span (trace/__init__.py:1171)", "otel_and_profilers"),
    (GRANIAN_WSGI, "http_server"),  # Rust building the environ / response while holding the GIL
    (f"{GRANIAN_WSGI};OpenTelemetryMiddleware.__call__ (wsgi/__init__.py:657);"
     "collect_request_attributes (wsgi/__init__.py:378);redact_url (http/__init__.py:305);"
     "remove_url_credentials (http/__init__.py:146);urlparse (urllib/parse.py:402)", "otel_and_profilers"),
    (f"{GRANIAN_WSGI};_end_span_after_iterating (wsgi/__init__.py:736);"
     "_ClosingBody.close (asyncprof/worker/accounting.py:124);HttpResponseBase.close (django/http/response.py:336)",
     "django"),
    # uvloop runs the loop in C: Runner.run is the last Python frame of its own time (event_loop),
    # and callbacks sit right under it.  httptools parses in C and calls uvicorn's protocol.
    (UVLOOP, "event_loop"),
    (f"{UVLOOP};HttpToolsProtocol.data_received (uvicorn/protocols/http/httptools_impl.py:174)", "http_server"),
    (f"{UVLOOP};HttpToolsProtocol.data_received (uvicorn/protocols/http/httptools_impl.py:174);"
     "HttpToolsProtocol.on_url (uvicorn/protocols/http/httptools_impl.py:237)", "http_server"),
    (f"{UVLOOP};_chain_future.<locals>._set_state (asyncio/futures.py:383)", "event_loop"),
    (f"{UVLOOP};TimedCoroutine.send (asyncprof/worker/loop_hooks.py:70);"
     "TimedCoroutine._step (asyncprof/worker/loop_hooks.py:113);"
     "RequestResponseCycle.run_asgi (uvicorn/protocols/http/httptools_impl.py:422);"
     "ProxyHeadersMiddleware.__call__ (uvicorn/middleware/proxy_headers.py:56)", "http_server"),
    ("new_event_loop (uvloop/__init__.py:26)", "event_loop"),
    # A stdlib http module function that is not OTel's stays unclassified.
    ("HTTPStatus.__new__ (http/__init__.py:20)", "other"),
])
def test_server_frames(stack: str, category: str) -> None:
    frames = tuple(stack.split(";"))
    assert build_classifier().classify(frames)[0] == category


def test_sync_worker_stacks_are_unchanged_by_the_gevent_claims() -> None:
    """gunicorn's sync worker never runs a loop: its parser stays http_server, Django stays Django."""
    sync = ("Arbiter.run (gunicorn/arbiter.py:227);SyncWorker.run (gunicorn/workers/sync.py:126);"
            "SyncWorker.handle (gunicorn/workers/sync.py:135);Request.__init__ (gunicorn/http/message.py:525)")
    classify = build_classifier().classify
    assert classify(tuple(sync.split(";")))[0] == "http_server"
    view = sync.rsplit(";", 1)[0] + (";SyncWorker.handle_request (gunicorn/workers/sync.py:184);"
                                     "WSGIHandler.__call__ (django/core/handlers/wsgi.py:124)")
    assert classify(tuple(view.split(";")))[0] == "django"
