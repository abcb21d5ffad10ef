"""Settings for the target project, as `startproject` makes them, plus the database.

Everything that varies per run comes from the environment asyncprof sets for
the workers: ``DATABASE_URL``, ``DJANGO_SECRET_KEY`` (random per run, never
written to the run directory) and ``ASYNCPROF_CONNECT``.
"""

import os
import secrets
from pathlib import Path

from asyncprof_target.dburl import django_database

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50)
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "asyncprof_target",
]

# Exactly the stack `django-admin startproject` generates: the seed's author
# measured a stock project, so do we.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "asyncprof_target.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "asyncprof_target.wsgi.application"
ASGI_APPLICATION = "asyncprof_target.asgi.application"

# The ORM scenario's connection policy mirrors the raw-SQL one: "persistent"
# keeps a connection per worker thread (CONN_MAX_AGE=None), "per-request"
# opens one in every request (CONN_MAX_AGE=0, Django's default).  Under ASGI
# Django's connections belong to each request's async context, so a persistent
# one is never reused and never closed: they pile up until PostgreSQL refuses
# clients.  Django's docs say to disable persistent connections under ASGI, so
# there the ORM always opens one connection per request.
_PERSISTENT = os.environ.get("ASYNCPROF_CONNECT", "persistent") == "persistent"
_ASGI = os.environ.get("ASYNCPROF_INTERFACE") == "asgi"
DATABASES = {
    "default": django_database(
        os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        conn_max_age=None if _PERSISTENT and not _ASGI else 0,
    )
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
