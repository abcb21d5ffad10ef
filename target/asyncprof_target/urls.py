"""URL layout: /<flavour>/<scenario>/, so a run's endpoint names say what ran."""

from django.urls import path

from asyncprof_target import calibrate, fanout, views

urlpatterns = [
    path("health/", views.health, name="health"),
    path("sync/seed/", views.seed_sync, name="sync-seed"),
    path("async/seed/", views.seed_async, name="async-seed"),
    path("sync/orm/", views.orm_sync, name="sync-orm"),
    path("async/orm/", views.orm_async, name="async-orm"),
    path("sync/page/", views.page_sync, name="sync-page"),
    path("async/page/", views.page_async, name="async-page"),
    path("sync/cpu/", views.cpu_sync, name="sync-cpu"),
    path("async/cpu/", views.cpu_async, name="async-cpu"),
    path("sync/calibrate/", calibrate.calibrate_sync, name="sync-calibrate"),
    path("async/calibrate/", calibrate.calibrate_async, name="async-calibrate"),
    path("sync/fanout/", fanout.fanout_sync, name="sync-fanout"),
    path("async/fanout/", fanout.fanout_async, name="async-fanout"),
]
