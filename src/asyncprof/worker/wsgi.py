"""The WSGI application gunicorn loads: the user's app, wrapped with the instruments."""

from asyncprof.worker import hooks

hooks.prepare_django()
application = hooks.wrap_wsgi(hooks.load_app(hooks.ENV.wsgi_app))
