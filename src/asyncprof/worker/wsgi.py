"""The WSGI application the WSGI servers load: the user's app, wrapped with the instruments.

Under gunicorn its hooks have installed the instruments already; in any other server's worker
they are installed here, before the user's app is imported, and the worker announces itself.
"""

from asyncprof.worker import hooks

_standalone = hooks.install_standalone()
hooks.prepare_django()
application = hooks.wrap_wsgi(hooks.load_app(hooks.ENV.wsgi_app))
if _standalone:
    hooks.announce_ready()
