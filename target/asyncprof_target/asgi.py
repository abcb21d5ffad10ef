"""ASGI entry point, as `startproject` makes it."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asyncprof_target.settings")

application = get_asgi_application()
