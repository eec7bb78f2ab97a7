"""gunicorn settings for Prometheus multiprocess mode.

Run `gunicorn -c python:api.gunicorn_conf 'api:create_app()'`.

With PROMETHEUS_MULTIPROC_DIR set, each gunicorn worker process writes its samples to files there;
when a worker exits its live gauges must be dropped (`mark_process_dead`). The folder must be empty
when gunicorn starts (a fresh tmpfs, or emptied by the entrypoint).
"""

from __future__ import annotations

from prometheus_client import multiprocess

from cliptext.settings import Settings


def child_exit(server, worker) -> None:  # gunicorn hook
    directory = Settings.from_env().prometheus_multiproc_dir
    if directory:
        multiprocess.mark_process_dead(worker.pid, directory)
