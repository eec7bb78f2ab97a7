"""gunicorn settings: production's workers, Prometheus multiprocess mode, and JSON answers to requests
gunicorn refuses itself.

Run `gunicorn -c python:api.gunicorn_conf 'api:create_app()'` (the image's default command, compose's
`api` and `rq-dashboard` services, `make run`). Options given on the command line still win over these
(gunicorn reads the config file first, then GUNICORN_CMD_ARGS, then the command line).

Workers: `WEB_CONCURRENCY` processes (gunicorn reads it itself; 1 when unset), each with 4 threads
(gthread): a slow client holds one thread, not the whole process, so the health check still answers.
A request may take 300 s (an upload from a slow link: the body is read by the view), and on SIGTERM
the requests in flight get 30 s to finish (`stop_grace_period` of compose's api service is longer).

Keep-alive: an idle connection stays open 15 s, not gunicorn's 2 s. Clients keep idle connections for
reuse (httpx, so the openai SDK: 5 s; requests: no limit), and at 2 s one idle longer sent its next
request on a connection gunicorn had closed. Worse, gunicorn 27's gthread worker lingers up to 2 s
(waiting for the client to close) over a connection it closes after an answer to a body it did not
read, a 401 to an upload with a bad key, on the very thread that watches the kept-alive connections:
those whose 2 s ran out meanwhile were closed with a request just sent on them unread, so another
client's request hung 2 s, then was reset, and nothing was logged. The linger now runs off that thread
(api.gunicorn_worker, the worker class), and 15 s covers clients' idle connections. A silent new
connection is also dropped after 5 + 15 s instead of 5 + 2 s. Behind a load balancer give
`--keep-alive` (the command line wins) more than its idle timeout (AWS ALB: 60 s).

With PROMETHEUS_MULTIPROC_DIR set, each gunicorn worker process writes its samples to files there;
when a worker exits its live gauges must be dropped (`mark_process_dead`). The folder must be empty
when gunicorn starts (a fresh tmpfs, or emptied by the entrypoint).

Requests gunicorn itself refuses (a request line or headers it cannot parse or that are over its limits)
are answered in the API's JSON envelope instead of gunicorn's HTML page (api.gunicorn_errors), and
counted in cliptext_api_requests_total{endpoint="gunicorn"}.

gunicorn's own log lines (boot, refused requests, WORKER TIMEOUT) are written in the format of every
other Cliptext line (cliptext.jsonlog: one JSON object per line, or text with CLIPTEXT_LOG_FORMAT=text)
by `JsonLogger`, to wherever gunicorn's error log goes (--error-logfile, stderr by default). The access
log stays off unless asked for (--access-logfile): the app writes its own line per request.
"""

from __future__ import annotations

import logging

from gunicorn.glogging import Logger
from prometheus_client import multiprocess

from api import gunicorn_errors
from cliptext.jsonlog import RequestIdFilter, formatter
from cliptext.settings import Settings, settings_or_exit

worker_class = "api.gunicorn_worker.ThreadWorker"  # gthread, its lingering closes off the event loop
threads = 4
timeout = 300  # seconds a worker may spend on one request (gunicorn's default of 30 cut slow uploads)
graceful_timeout = 30  # seconds requests in flight may run on after SIGTERM
keepalive = 15  # seconds an idle connection stays open: above clients' pool idle (httpx 5 s) + a 2 s stall
# unused here, and its default path (~/.gunicorn/gunicorn.ctl) is one per user that every gunicorn fights over
control_socket_disable = True


def _log_format() -> str:
    try:
        return Settings.from_env().log_format
    except Exception:  # a bad setting is reported by on_starting; log in the default format meanwhile
        return "json"


class JsonLogger(Logger):
    """gunicorn's logger, its error log's handlers in cliptext.jsonlog's format."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        log_format = _log_format()
        for handler in self.error_log.handlers:
            if isinstance(handler, logging.StreamHandler) and getattr(handler, "_gunicorn", False):
                handler.setFormatter(formatter(log_format))
                if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
                    handler.addFilter(RequestIdFilter())


logger_class = JsonLogger


def on_starting(server) -> None:  # gunicorn hook, in the master before any worker boots
    settings_or_exit()  # a bad setting: one line naming it, not a traceback per worker and a restart loop


def post_worker_init(worker) -> None:  # gunicorn hook
    gunicorn_errors.install()


def child_exit(server, worker) -> None:  # gunicorn hook
    directory = Settings.from_env().prometheus_multiproc_dir
    if directory:
        multiprocess.mark_process_dead(worker.pid, directory)
