"""`python -m jobs.worker [--burst] [--name NAME]`: an RQ worker for transcriptions and webhooks.

RQ's own Worker: each job runs in a forked work horse (so the job makes its own gRPC channel and
database connection), SIGTERM asks for a warm shutdown (the running job finishes; a second SIGTERM
kills it and the job is recovered by another worker). Two things are tuned from settings:
- the heartbeat: the started-job entry of a running job expires `worker_heartbeat_grace` seconds
  after the last heartbeat (RQ hard-codes 60), so a SIGKILLed worker's job is found sooner;
- the maintenance: every `worker_maintenance_seconds` RQ cleans its registries (abandoned jobs go
  to the failed registry) and jobs.recovery requeues the transcriptions among them, and enqueues
  again those whose job Redis lost.
Each job's temporary files (the audio S3Storage.local_copy downloads) go to a folder of its own under
scratch_root(), removed by the worker once the horse has ended, even SIGKILLed (a stopped job, a
timeout, out of memory); folders left when the worker itself was killed go when a worker starts.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from rq import Queue, Worker
from rq.exceptions import StopRequested
from rq.job import Job

from api.db import db, init_db
from api.queue import REQUEST_ID_META
from api.storage import use_scratch_dir
from cliptext import file_locks
from cliptext.jsonlog import configure_logging, request_id_var
from cliptext.settings import Settings, settings_or_exit
from jobs.metrics import forget_outcome, record_job, start_exporter
from jobs.recovery import enqueue_missed_webhooks, recover_abandoned, requeue_orphans
from jobs.webhooks import QUEUE_NAME as WEBHOOK_QUEUE

TRANSCRIPTION_QUEUE = "transcriptions"

log = logging.getLogger("jobs.worker")


_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)

SCRATCH_FOLDER = "cliptext-worker"


def scratch_root() -> Path:
    """Where the work horses' job folders go: under the system's temp folder (TMPDIR)."""
    return Path(tempfile.gettempdir()) / SCRATCH_FOLDER


def open_scratch(root: Path) -> tuple[Path, int]:
    """A new job folder and the fd that holds its lock. Opened in the worker before the fork, the fd is
    shared with the horse: the folder is in use until both have ended (the kernel lets go when the last
    process sharing the fd dies, SIGKILLed or not)."""
    root.mkdir(parents=True, exist_ok=True)
    while True:
        path = Path(tempfile.mkdtemp(prefix="job-", dir=root))
        with contextlib.suppress(FileNotFoundError):  # swept by a worker starting at that instant
            fd = file_locks.hold(path, wait=True, folder=True)
            if path.is_dir():
                return path, fd
            os.close(fd)


def close_scratch(path: Path, fd: int) -> None:
    """Remove a job folder, then let go of its lock (its horse has ended)."""
    shutil.rmtree(path, ignore_errors=True)
    os.close(fd)


def sweep_scratch(root: Path) -> int:
    """Remove the job folders that no live worker or work horse holds: left when both were killed."""
    removed = 0
    for path in sorted(root.glob("job-*")) if root.is_dir() else []:
        try:
            fd = file_locks.hold(path, wait=False, folder=True)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if fd is not None:
            close_scratch(path, fd)
            removed += 1
    return removed


def job_request_id(job: Job) -> str | None:
    """The request id a job's log lines carry: the X-Request-Id the API stored in its meta, else its
    transcription's id (its first argument), as the job itself does (jobs.transcribe, jobs.webhooks)."""
    found = job.meta.get(REQUEST_ID_META)
    if not found:
        with contextlib.suppress(Exception):  # a job whose data cannot be read: no id
            found = job.args[0] if job.args and isinstance(job.args[0], str) else None
    return str(found)[:128] if found else None


class RequestIdQueue(Queue):
    """rq.Queue whose dequeue sets the dequeued job's request id (cliptext.jsonlog.request_id_var), so
    that the worker's lines about it (RQ's pick-up line, a killed horse, `ended: …`) carry it;
    CliptextWorker.execute_job clears it once the job has ended."""

    @classmethod
    def dequeue_any(cls, *args, **kwargs):
        result = super().dequeue_any(*args, **kwargs)
        if result is not None:
            request_id_var.set(job_request_id(result[0]))
        return result


class CliptextWorker(Worker):
    """rq.Worker with a settable heartbeat grace, the transcription recovery sweeps, and no exit on a
    Redis outage: RQ quits on a connection error met anywhere but in its dequeue loop (a heartbeat
    while a job runs, the bookkeeping after it, maintenance); here the job goes on, the error is
    logged, and the dequeue loop waits for Redis with RQ's own backoff."""

    queue_class = RequestIdQueue

    def __init__(self, *args, settings: Settings, **kwargs):
        super().__init__(
            *args,
            job_monitoring_interval=settings.worker_heartbeat_seconds,
            maintenance_interval=settings.worker_maintenance_seconds,
            **kwargs,
        )
        self.settings = settings
        self._scratch: tuple[Path, int] | None = None  # the running job's folder and its lock

    def request_stop(self, signum, frame) -> None:
        # RQ sets `_stop_requested` only when the worker is busy; set it when idle too, so that `main`
        # does not take the loop's return for an error and start again, and so that RQ's loop still
        # ends should its StopRequested be caught on the way up
        self._stop_requested = True
        super().request_stop(signum, frame)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            interval = min(job.timeout - working_time, interval)
        return int(max(1, interval)) + self.settings.worker_heartbeat_grace

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Fork the horse as RQ does, in a job folder removed once it has ended however it ended; then
        count what it reported (jobs.metrics). The job's request id is on every line meanwhile."""
        request_id_var.set(job_request_id(job))  # set at dequeue already; a job run otherwise too
        forget_outcome(job)
        started = time.monotonic()
        try:
            self._scratch = open_scratch(scratch_root())
        except OSError as error:  # the horse's temporary files go to the system's temp folder
            log.warning("job %s: no job folder under %s: %s", job.id, scratch_root(), error)
        try:
            super().execute_job(job, queue)
        except _REDIS_DOWN as error:  # the transcription's outcome is in the database already
            log.warning("job %s: Redis unreachable while its end was recorded: %s", job.id, error)
        finally:
            if self._scratch is not None:
                close_scratch(*self._scratch)
                self._scratch = None
            outcome = record_job(job, queue.name, time.monotonic() - started)
            log.info("job %s on %s ended: %s", job.id, queue.name, outcome)
            request_id_var.set(None)  # the worker's own lines that follow are about no request

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        """In the forked horse: its downloads go to the job folder."""
        if self._scratch is not None:
            use_scratch_dir(self._scratch[0])
        super().main_work_horse(job, queue)

    @property
    def dequeue_timeout(self) -> int:
        # wake up for maintenance even when idle (RQ waits worker_ttl - 15 s, 405 s by default)
        return max(1, min(self.worker_ttl - 15, self.maintenance_interval))

    def maintain_heartbeats(self, job: Job, execution) -> None:
        try:
            super().maintain_heartbeats(job, execution)
        except _REDIS_DOWN as error:  # the horse keeps working; the next heartbeat may get through
            log.warning("job %s: heartbeat not sent, Redis unreachable: %s", job.id, error)

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        if pipeline is not None:  # only queued on the caller's pipeline
            return super().heartbeat(timeout, pipeline=pipeline)
        try:
            super().heartbeat(timeout)
        except _REDIS_DOWN as error:
            log.warning("worker heartbeat not sent, Redis unreachable: %s", error)

    def set_state(self, state: str, pipeline=None) -> None:
        if pipeline is not None:
            return super().set_state(state, pipeline=pipeline)
        try:
            super().set_state(state)
        except _REDIS_DOWN:  # shown on the dashboard only; the next state change writes it again
            self._state = state

    def check_for_suspension(self, burst: bool) -> None:
        with contextlib.suppress(*_REDIS_DOWN):  # the dequeue that follows waits for Redis
            super().check_for_suspension(burst)

    def run_maintenance_tasks(self) -> None:
        try:
            super().run_maintenance_tasks()
        except _REDIS_DOWN as error:
            log.warning("maintenance skipped, Redis unreachable: %s", error)
            return
        for queue in self.queues:
            if queue.name == WEBHOOK_QUEUE:
                continue
            for sweep in (recover_abandoned, requeue_orphans, enqueue_missed_webhooks):
                try:
                    sweep(self.connection, self.settings, queue.name)
                except StopRequested:  # SIGTERM arrived during the sweep: RQ's way of ending the loop
                    raise
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

    settings = settings_or_exit()
    configure_logging(settings)  # before RQ sets up its own handler: RQ then keeps ours
    init_db(settings)
    db.close()  # nothing open when the work horses fork
    _preload()
    connection = redis.Redis.from_url(settings.redis_url)
    name = args.name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    start_exporter(settings, connection, queues)
    try:
        swept = sweep_scratch(scratch_root())
    except OSError as error:
        log.warning("job folders under %s not swept: %s", scratch_root(), error)
    else:
        if swept:
            log.info("removed %d job folder(s) left by killed workers under %s", swept, scratch_root())
    for attempt in itertools.count():
        worker_name = name if attempt == 0 else f"{name}.{attempt}"
        worker = CliptextWorker(queues, name=worker_name, connection=connection, settings=settings)
        try:
            try:
                worker.work(burst=args.burst, logging_level=args.log_level, with_scheduler=True)
            except _REDIS_DOWN as error:  # Redis went away while the worker registered itself
                log.warning("Redis unreachable while the worker started (%s); starting again in 2 s", error)
                time.sleep(2.0)
                continue
            if args.burst or worker._stop_requested:
                return 0
            # RQ's loop quits on any error it meets outside a job (a Redis outage at the wrong moment)
            log.warning("the worker loop stopped on an error; starting again in 2 s")
            time.sleep(2.0)
        except StopRequested:  # SIGTERM between two loops, while the last worker's handler is installed
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
