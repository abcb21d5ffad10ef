"""WSGI entry point, as `startproject` makes it."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asyncprof_target.settings")

application = get_wsgi_application()
