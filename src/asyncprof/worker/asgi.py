"""The ASGI application the ASGI servers load: the user's app, wrapped with the instruments."""

from asyncprof.worker import hooks

hooks.prepare_django()
application = hooks.wrap_asgi(hooks.load_app(hooks.ENV.asgi_app))
