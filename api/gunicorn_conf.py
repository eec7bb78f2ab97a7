"""gunicorn settings: Prometheus multiprocess mode, and JSON answers to requests gunicorn refuses itself.

Run `gunicorn -c python:api.gunicorn_conf 'api:create_app()'`.

With PROMETHEUS_MULTIPROC_DIR set, each gunicorn worker process writes its samples to files there;
when a worker exits its live gauges must be dropped (`mark_process_dead`). The folder must be empty
when gunicorn starts (a fresh tmpfs, or emptied by the entrypoint).

Requests gunicorn itself refuses (a request line or headers it cannot parse or that are over its limits)
are answered in the API's JSON envelope instead of gunicorn's HTML page (api.gunicorn_errors).
"""

from __future__ import annotations

from prometheus_client import multiprocess

from api import gunicorn_errors
from cliptext.settings import Settings, settings_or_exit


def on_starting(server) -> None:  # gunicorn hook, in the master before any worker boots
    settings_or_exit()  # a bad setting: one line naming it, not a traceback per worker and a restart loop


def post_worker_init(worker) -> None:  # gunicorn hook
    gunicorn_errors.install()


def child_exit(server, worker) -> None:  # gunicorn hook
    directory = Settings.from_env().prometheus_multiproc_dir
    if directory:
        multiprocess.mark_process_dead(worker.pid, directory)
