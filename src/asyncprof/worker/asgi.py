"""The ASGI application the ASGI servers load: the user's app, wrapped with the instruments.

Under gunicorn its hooks have installed the instruments already; in any other server's worker
they are installed here, before the user's app is imported, and an outer layer handles the
lifespan protocol (see :func:`asyncprof.worker.hooks.serve_standalone_asgi`).
"""

from asyncprof.worker import hooks

_standalone = hooks.install_standalone()
hooks.prepare_django()
application = hooks.wrap_asgi(hooks.load_app(hooks.ENV.asgi_app))
if _standalone:
    application = hooks.serve_standalone_asgi(application)
    if hooks.announce_at_import():
        hooks.announce_ready()
