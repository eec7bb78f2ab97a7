"""`python -m jobs.worker [--burst] [--name NAME]`: an RQ worker for transcriptions and webhooks.

RQ's own Worker: each job runs in a forked work horse (so the job makes its own gRPC channel and
database connection), SIGTERM asks for a warm shutdown (the running job finishes; a second SIGTERM
kills it and the job is recovered by another worker). Two things are tuned from settings:
- the heartbeat: the started-job entry of a running job expires `worker_heartbeat_grace` seconds
  after the last heartbeat (RQ hard-codes 60), so a SIGKILLed worker's job is found sooner;
- the maintenance: every `worker_maintenance_seconds` RQ cleans its registries (abandoned jobs go
  to the failed registry) and jobs.recovery requeues the transcriptions among them, and enqueues
  again those whose job Redis lost.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
import uuid

import redis
from rq import Queue, Worker
from rq.job import Job

from api.db import db, init_db
from cliptext.jsonlog import configure_logging
from cliptext.settings import Settings
from jobs.metrics import forget_outcome, record_job, start_exporter
from jobs.recovery import recover_abandoned, requeue_orphans
from jobs.webhooks import QUEUE_NAME as WEBHOOK_QUEUE

TRANSCRIPTION_QUEUE = "transcriptions"

log = logging.getLogger("jobs.worker")


class CliptextWorker(Worker):
    """rq.Worker with a settable heartbeat grace and the transcription recovery sweep."""

    def __init__(self, *args, settings: Settings, **kwargs):
        super().__init__(
            *args,
            job_monitoring_interval=settings.worker_heartbeat_seconds,
            maintenance_interval=settings.worker_maintenance_seconds,
            **kwargs,
        )
        self.settings = settings

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            interval = min(job.timeout - working_time, interval)
        return int(max(1, interval)) + self.settings.worker_heartbeat_grace

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Fork the horse as RQ does, then count what it reported (jobs.metrics)."""
        forget_outcome(job)
        started = time.monotonic()
        try:
            super().execute_job(job, queue)
        finally:
            outcome = record_job(job, queue.name, time.monotonic() - started)
            log.info("job %s on %s ended: %s", job.id, queue.name, outcome)

    @property
    def dequeue_timeout(self) -> int:
        # wake up for maintenance even when idle (RQ waits worker_ttl - 15 s, 405 s by default)
        return max(1, min(self.worker_ttl - 15, self.maintenance_interval))

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        for queue in self.queues:
            if queue.name == WEBHOOK_QUEUE:
                continue
            for sweep in (recover_abandoned, requeue_orphans):
                try:
                    sweep(self.connection, self.settings, queue.name)
                except Exception:  # a sweep must never take the worker down
                    log.exception("%s of %s failed", sweep.__name__, queue.name)


def _preload() -> None:
    """Import the job modules once in the parent, so each forked work horse starts warm."""
    import jobs.transcribe  # noqa: F401
    import jobs.webhooks  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    parser.add_argument("--name", default=None, help="worker name (default: host.pid.random)")
    parser.add_argument(
        "--queues",
        default=f"{TRANSCRIPTION_QUEUE},{WEBHOOK_QUEUE}",
        help="comma list of queues, in priority order",
    )
    parser.add_argument("--log-level", default=os.environ.get("CLIPTEXT_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    configure_logging(settings)  # before RQ sets up its own handler: RQ then keeps ours
    init_db(settings)
    db.close()  # nothing open when the work horses fork
    _preload()
    connection = redis.Redis.from_url(settings.redis_url)
    name = args.name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    worker = CliptextWorker(queues, name=name, connection=connection, settings=settings)
    start_exporter(settings, connection, queues)
    worker.work(burst=args.burst, logging_level=args.log_level, with_scheduler=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
