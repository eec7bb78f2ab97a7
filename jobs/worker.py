"""`python -m jobs.worker [--burst] [--name NAME]`: an RQ worker for transcriptions and webhooks.

RQ's own Worker: each job runs in a forked work horse (so the job makes its own gRPC channel and
database connection), SIGTERM asks for a warm shutdown (the running job finishes). A job still
running `worker_stop_grace` seconds after the SIGTERM, or when a second SIGTERM or Ctrl-C comes, is
handed back: its horse is stopped and the job put at the front of its queue at
once, before the container's own stop grace (compose: 60 s) ends in a SIGKILL. Killed with the worker,
it waited for its heartbeat to expire and a maintenance (90-150 s), and counted as one of the job's
`job_max_recoveries`: three deploys during one long transcription failed it. Two things are tuned
from settings:
- the heartbeat: the started-job entry of a running job expires `worker_heartbeat_grace` seconds
  after the last heartbeat (RQ hard-codes 60), so a SIGKILLed worker's job is found sooner;
- the maintenance: every `worker_maintenance_seconds` RQ cleans its registries (abandoned jobs go
  to the failed registry) and jobs.recovery requeues the transcriptions among them, and enqueues
  again those whose job Redis lost.
Fair queueing: each name on `--queues` also stands for its per-organization queues `NAME.<org id>`
(api.queue.org_queue), looked up in RQ's set of queues before every wait (at most
QUEUE_REFRESH_SECONDS apart). The worker takes one job from each non-empty queue of a name in turn
(round robin), and the names keep their order of priority: with the default
`transcriptions,webhooks`, a webhook delivery runs when no transcription waits (so compose and
`make run` add a worker on `--queues webhooks`).
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
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import redis
from rq import Queue, Worker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import DequeueTimeout, InvalidJobOperation, NoSuchJobError, StopRequested
from rq.job import Job, JobStatus
from rq.job_lifecycle import call_exception_handlers
from rq.registry import FailedJobRegistry
from rq.scheduler import RQScheduler
from rq.utils import now
from rq.worker import WorkerStatus

from api.db import db, init_db
from api.queue import JOB_FUNCTION, family_queues, forget_empty_queue, in_family, job_request_id
from api.storage import use_scratch_dir
from cliptext import file_locks
from cliptext.jsonlog import configure_logging, request_id_var
from cliptext.settings import Settings, port_in_use, settings_or_exit
from jobs import transcript_store as store
from jobs.metrics import forget_outcome, record_job, start_exporter
from jobs.recovery import enqueue_missed_webhooks, recover_abandoned, requeue_orphans
from jobs.webhooks import QUEUE_NAME as WEBHOOK_QUEUE
from jobs.webhooks import DeliveryFailed

TRANSCRIPTION_QUEUE = "transcriptions"
SCHEDULER_STOP = 5  # seconds: how long a stopping worker waits for its scheduler process

log = logging.getLogger("jobs.worker")


_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)

SCRATCH_FOLDER = "cliptext-worker"

# the longest a worker waits on the queues it knows before looking for new per-organization queues:
# the most a job of an organization whose queue was idle (taken off RQ's set) waits on an idle worker
QUEUE_REFRESH_SECONDS = 1


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


def _transcription_of(job: Job) -> str | None:
    """The transcription id a job is about: its first argument (transcriptions and webhooks alike)."""
    with contextlib.suppress(Exception):  # a job whose data cannot be read: none
        return job.args[0] if job.args and isinstance(job.args[0], str) else None
    return None


class RequestIdQueue(Queue):
    """rq.Queue whose dequeue sets the dequeued job's request id (cliptext.jsonlog.request_id_var), so
    that the worker's lines about it (RQ's pick-up line, a killed horse, `ended: …`) carry it;
    CliptextWorker.execute_job clears it once the job has ended."""

    @classmethod
    def dequeue_any(cls, *args, **kwargs):
        result = super().dequeue_any(*args, **kwargs)
        if result is not None:
            request_id_var.set(job_request_id(result[0], _transcription_of(result[0])))
        return result


class FamilyScheduler(RQScheduler):
    """RQ's scheduler (retries waiting their interval), whose lock on a queue name covers the
    per-organization queues of that name too, looked up at every pass: RQ's own takes the queue names
    once, when the worker starts, and a retry of an organization's job never came back."""

    def prepare_registries(self, queue_names=None) -> None:
        names = queue_names or self._acquired_locks
        connection = self.connection
        super().prepare_registries(sorted({n for family in names for n in family_queues(connection, family)}))

    def enqueue_scheduled_jobs(self) -> None:
        self._scheduled_job_registries = []  # looked up again: RQ keeps the first list
        super().enqueue_scheduled_jobs()


class CliptextWorker(Worker):
    """rq.Worker with a settable heartbeat grace, the transcription recovery sweeps, and no exit on a
    Redis outage: RQ quits on a connection error met anywhere but in its dequeue loop (a heartbeat
    while a job runs, the bookkeeping after it, maintenance); here the job goes on, the error is
    logged, and the dequeue loop waits for Redis with RQ's own backoff."""

    queue_class = RequestIdQueue

    def __init__(self, families: list[str], *args, settings: Settings, **kwargs):
        super().__init__(
            families,
            *args,
            job_monitoring_interval=settings.worker_heartbeat_seconds,
            maintenance_interval=settings.worker_maintenance_seconds,
            **kwargs,
        )
        self.settings = settings
        self.families = list(dict.fromkeys(families))  # the `--queues` names, in priority order
        # per name, its queues in the order of their next turn (the one served last goes last)
        self._turns: dict[str, list[str]] = {family: [family] for family in self.families}
        self._scratch: tuple[Path, int] | None = None  # the running job's folder and its lock
        self._running: Job | None = None  # the job the horse runs
        self._hand_back_timer: threading.Timer | None = None
        self._handed_back: str | None = None  # the id of the job whose horse the timer stopped

    # fair queueing -------------------------------------------------------------------------------
    def family_of(self, queue_name: str) -> str:
        """The `--queues` name that `queue_name` is listened to for (the first that covers it)."""
        return next((f for f in self.families if in_family(queue_name, f)), queue_name)

    def refresh_queues(self) -> None:
        """Listen to the per-organization queues in RQ's set of queues now: new ones take the next turns
        (they have had none; the queue served last stays last), queues gone from the set are dropped."""
        claimed: set[str] = set()
        for family in self.families:
            found = [n for n in family_queues(self.connection, family) if n not in claimed]
            known = [n for n in self._turns[family] if n in found]
            self._turns[family] = [n for n in found if n not in known] + known
            claimed.update(found)
        self._order_queues()

    def _order_queues(self) -> None:
        """`queues`, and RQ's `_ordered_queues` (what it waits on, first to last), as the turns say."""
        by_name = {queue.name: queue for queue in self.queues}
        order = [name for family in self.families for name in self._turns[family]]
        self.queues = [by_name.get(name) or self._new_queue(name) for name in order]
        self._ordered_queues = self.queues[:]

    def _new_queue(self, name: str) -> Queue:
        return self.queue_class(
            name,
            connection=self.connection,
            job_class=self.job_class,
            serializer=self.serializer,
            death_penalty_class=self.death_penalty_class,
        )

    def reorder_queues(self, reference_queue: Queue) -> None:
        """Round robin within the queue's name: the queue just served goes last among its name's queues;
        the names keep their order (transcriptions before webhooks)."""
        turns = self._turns.get(self.family_of(reference_queue.name))
        if turns is not None and reference_queue.name in turns:
            turns.remove(reference_queue.name)
            turns.append(reference_queue.name)
        self._order_queues()

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
        """RQ's dequeue loop, but waiting at most QUEUE_REFRESH_SECONDS on the queues known, then looking
        for new per-organization queues (RQ waits on one list of queues until a job comes)."""
        self.set_state(WorkerStatus.IDLE)
        self.procline("Listening on " + ",".join(self.families))
        idle_since = time.monotonic()
        connection_wait = 1.0
        while True:
            try:
                self.heartbeat()
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()
                self.refresh_queues()
                wait = None if timeout is None else max(1, min(timeout, QUEUE_REFRESH_SECONDS))
                result = self.queue_class.dequeue_any(
                    self._ordered_queues,
                    wait,
                    connection=self.connection,
                    job_class=self.job_class,
                    serializer=self.serializer,
                    death_penalty_class=self.death_penalty_class,
                )
            except DequeueTimeout:
                if max_idle_time is not None and time.monotonic() - idle_since >= max_idle_time:
                    return None
                continue
            except _REDIS_DOWN as error:
                log.error(
                    "Redis unreachable while waiting for jobs: %s; retrying in %.0f s", error, connection_wait
                )
                time.sleep(connection_wait)
                connection_wait = min(
                    connection_wait * self.exponential_backoff_factor, self.max_connection_wait_time
                )
                continue
            if result is not None:
                job, queue = result
                self.reorder_queues(reference_queue=queue)
                job.redis_server_version = self.get_redis_server_version()
                if self.log_job_description:  # RQ's pick-up line
                    self.log.info("Worker %s: %s: %s (%s)", self.name, queue.name, job.description, job.id)
                else:
                    self.log.info("Worker %s: %s: %s", self.name, queue.name, job.id)
            self.heartbeat()
            return result

    def prepare_execution(self, job: Job):
        """RQ's, then the job's queue registered again: maintenance finds the queues of the running jobs
        even if api.queue.forget_empty_queue took this one off between the pop and the start."""
        execution = super().prepare_execution(job)
        try:
            self.connection.sadd(Queue.redis_queues_keys, Queue(job.origin, connection=self.connection).key)
        except _REDIS_DOWN as error:
            log.warning("job %s: its queue not registered again, Redis unreachable: %s", job.id, error)
        return execution

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        """RQ's, with FamilyScheduler on the `--queues` names."""
        self.scheduler = FamilyScheduler(
            self.families,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            if burst:
                try:
                    self.scheduler.register_birth()
                    self.scheduler.enqueue_scheduled_jobs()
                finally:
                    self.scheduler.release_locks()
                    self.scheduler.register_death()
            else:
                self.scheduler.start()

    def request_stop(self, signum, frame) -> None:
        # RQ sets `_stop_requested` only when the worker is busy; set it when idle too, so that `main`
        # does not take the loop's return for an error and start again, and so that RQ's loop still
        # ends should its StopRequested be caught on the way up
        self._stop_requested = True
        job = self._running
        # the timer first: the grace counts from the signal, and RQ's handler below can be cut short (the
        # job monitor's alarm, every worker_heartbeat_seconds, raises in it while it waits for the
        # scheduler process to end): a timer started after it was, in one test run of six, never started
        if job is not None and self._hand_back_timer is None:
            grace = self.settings.worker_stop_grace
            why = f"still running {grace:g} s after the stop request"
            self._hand_back_timer = threading.Timer(grace, self._hand_back, [job, why])
            self._hand_back_timer.daemon = True
            self._hand_back_timer.start()
        super().request_stop(signum, frame)  # raises StopRequested when idle

    def request_force_stop(self, signum, frame) -> None:
        """A second SIGTERM or Ctrl-C (RQ's cold shutdown) hands the running job back at once, as the timer
        would later: RQ's own killed the horse and left the job to a recovery, counted, 90-150 s later. The
        warm stop already asked for then ends the worker once execute_job has requeued the job."""
        job = self._running
        if job is None or not self.horse_pid:
            super().request_force_stop(signum, frame)  # raises SystemExit
            return
        if (now() - self._shutdown_requested_date) < timedelta(seconds=1):
            return  # RQ's rule: a worker pool's signal and the terminal's, together, are one request
        if self._hand_back_timer is not None:
            self._hand_back_timer.cancel()
        self._hand_back(job, f"stop asked for again ({signal.Signals(signum).name})")

    def _hand_back(self, job: Job, why: str) -> None:
        """In the timer's thread (or the second signal's handler): stop the horse of `job` as RQ's stop
        command does (execute_job then requeues the job). The pid is read once: the main thread resets it
        when the horse has ended."""
        pid = self.horse_pid
        if not pid or self._running is not job or self._handed_back == job.id:
            return
        log.warning("job %s %s: handed back to its queue", job.id, why)
        self._handed_back = job.id
        self._stopped_job_id = job.id  # RQ files the job as stopped, not as crashed
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # the horse leads its own process group (RQ's setpgrp)

    def _requeue_handed_back(self, job: Job) -> bool:
        """Put a handed-back job at the front of its queue, not counted as a recovery; whether done
        (else the recovery sweep of the next maintenance takes it). Only a job RQ filed as stopped: one
        whose horse ended on its own just before the timer fired keeps its own outcome."""
        try:
            if job.get_status(refresh=True) != JobStatus.STOPPED:
                return False
            if job.func_name == JOB_FUNCTION:
                _show_queued(job.id)
            FailedJobRegistry(job.origin, connection=self.connection).requeue(job.id, at_front=True)
        except (InvalidJobOperation, NoSuchJobError, *_REDIS_DOWN) as error:
            log.warning("job %s: not handed back (%s); the recovery sweep requeues it", job.id, error)
            return False
        return True

    def stop_scheduler(self) -> None:
        """RQ's (SIGTERM to the scheduler's process, then wait for it), with the wait bounded: a scheduler
        process that does not end (one stopped with SIGSTOP, in the tests) held the worker's exit for good."""
        process = self.scheduler._process if self.scheduler else None
        if process is None or not process.pid:
            return
        with contextlib.suppress(OSError):
            os.kill(process.pid, signal.SIGTERM)
        process.join(SCHEDULER_STOP)
        if process.is_alive():
            log.warning("scheduler process %d still there after %d s: killed", process.pid, SCHEDULER_STOP)
            process.kill()
            process.join()

    def handle_exception(self, job: Job, *exc_info) -> None:
        """A receiver that did not answer 2xx is routine for a webhook (retried, and each attempt kept in
        the database): one WARNING line, where RQ logged an ERROR with a traceback for every attempt."""
        error = exc_info[1] if len(exc_info) > 1 else None
        if not isinstance(error, DeliveryFailed):
            super().handle_exception(job, *exc_info)
            return
        log.warning("job %s: %s (attempt failed; RQ retries it while retries are left)", job.id, error)
        call_exception_handlers(self._exc_handlers, job, *exc_info)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            interval = min(job.timeout - working_time, interval)
        return int(max(1, interval)) + self.settings.worker_heartbeat_grace

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Fork the horse as RQ does, in a job folder removed once it has ended however it ended; then
        count what it reported (jobs.metrics). The job's request id is on every line meanwhile."""
        request_id_var.set(
            job_request_id(job, _transcription_of(job))
        )  # set at dequeue already; a job run otherwise too
        forget_outcome(job)
        started = time.monotonic()
        self._running = job
        try:
            self._scratch = open_scratch(scratch_root())
        except OSError as error:  # the horse's temporary files go to the system's temp folder
            log.warning("job %s: no job folder under %s: %s", job.id, scratch_root(), error)
        try:
            super().execute_job(job, queue)
        except _REDIS_DOWN as error:  # the transcription's outcome is in the database already
            log.warning("job %s: Redis unreachable while its end was recorded: %s", job.id, error)
        finally:
            self._running = None
            if self._hand_back_timer is not None:
                self._hand_back_timer.cancel()
            if self._scratch is not None:
                close_scratch(*self._scratch)
                self._scratch = None
            given = "handed_back" if self._handed_back == job.id and self._requeue_handed_back(job) else None
            outcome = record_job(job, self.family_of(queue.name), time.monotonic() - started, given)
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
        """RQ's (registries of every queue listened to), then the recovery sweeps: abandoned jobs of every
        transcription queue, orphans and missed webhooks once per name; then the idle per-organization
        queues taken off RQ's set."""
        try:
            self.refresh_queues()
            super().run_maintenance_tasks()
        except _REDIS_DOWN as error:
            log.warning("maintenance skipped, Redis unreachable: %s", error)
            return
        for family in self.families:
            if family == WEBHOOK_QUEUE:
                continue
            sweeps = [(recover_abandoned, name) for name in self._turns[family]]
            sweeps += [(requeue_orphans, family), (enqueue_missed_webhooks, family)]
            sweeps += [(_forget_if_empty, name) for name in self._turns[family] if name != family]
            for sweep, name in sweeps:
                try:
                    sweep(self.connection, self.settings, name)
                except StopRequested:  # SIGTERM arrived during the sweep: RQ's way of ending the loop
                    raise
                except Exception:  # a sweep must never take the worker down
                    log.exception("%s of %s failed", sweep.__name__, name)


def _show_queued(transcription_id: str) -> None:
    """A handed-back transcription back to `queued` in the database (jobs.transcript_store.handed_back);
    a database that does not answer leaves it `processing` until its next run starts."""
    try:
        store.handed_back(transcription_id)
    except Exception as error:  # the requeue matters more than what the API shows meanwhile
        log.warning("transcription %s handed back but still shown processing: %s", transcription_id, error)


def _forget_if_empty(connection: redis.Redis, settings: Settings, queue_name: str) -> None:
    """A sweep: an idle per-organization queue off RQ's set (api.queue.forget_empty_queue)."""
    forget_empty_queue(connection, queue_name)


def redis_or_exit(settings: Settings) -> redis.Redis:
    """The connection to REDIS_URL, once Redis has answered: a Redis that does not answer at start (down,
    a wrong host, port or password) stops the worker with one log line naming REDIS_URL (exit status 1),
    not a traceback. An outage later is waited out (CliptextWorker)."""
    connection = redis.Redis.from_url(settings.redis_url)
    try:
        connection.ping()
    except redis.RedisError as error:
        log.error("cannot reach Redis at REDIS_URL: %s", " ".join(str(error).split()))
        raise SystemExit(1) from None
    return connection


def start_metrics(settings: Settings, connection: redis.Redis, queues: list[str]) -> None:
    """The metrics exporter; a port it cannot listen on stops the start with one line naming it (status 2,
    as settings_or_exit's)."""
    try:
        start_exporter(settings, connection, queues)
    except OSError as error:
        raise port_in_use("CLIPTEXT_WORKER_METRICS_PORT", settings.worker_metrics_port, error) from None


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
        help="comma list of queues, in priority order; each with its per-organization queues NAME.<org id>",
    )
    parser.add_argument("--log-level", default=os.environ.get("CLIPTEXT_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)

    settings = settings_or_exit()
    configure_logging(settings)  # before RQ sets up its own handler: RQ then keeps ours
    init_db(settings)
    db.close()  # nothing open when the work horses fork
    _preload()
    connection = redis_or_exit(settings)
    name = args.name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    start_metrics(settings, connection, queues)
    try:
        swept = sweep_scratch(scratch_root())
    except OSError as error:
        log.warning("job folders under %s not swept: %s", scratch_root(), error)
    else:
        if swept:
            log.info("removed %d job folder(s) left by killed workers under %s", swept, scratch_root())
    worker: CliptextWorker | None = None
    for attempt in itertools.count():
        worker_name = name if attempt == 0 else f"{name}.{attempt}"
        try:
            try:
                # RQ's Worker() talks to Redis too: an outage that made the last loop quit may still last
                worker = CliptextWorker(queues, name=worker_name, connection=connection, settings=settings)
                worker.work(burst=args.burst, logging_level=args.log_level, with_scheduler=True)
            except _REDIS_DOWN as error:  # Redis went away while the worker registered itself
                if _stop_asked(worker):  # SIGTERM, then Redis gone as the loop ended (make run killed)
                    return 0
                log.warning("Redis unreachable while the worker started (%s); starting again in 2 s", error)
                time.sleep(2.0)
                continue
            if args.burst or _stop_asked(worker):
                return 0
            # RQ's loop quits on any error it meets outside a job (a Redis outage at the wrong moment)
            log.warning("the worker loop stopped on an error; starting again in 2 s")
            time.sleep(2.0)
        except StopRequested:  # SIGTERM between two loops, while the last worker's handler is installed
            return 0
    return 1


def _stop_asked(worker: CliptextWorker | None) -> bool:
    """Whether SIGTERM or SIGINT asked `worker` to stop (RQ notes when; `_stop_requested` only while a
    job ran): a stopped loop is not started again, even when Redis failed as it ended."""
    return worker is not None and (worker._stop_requested or worker._shutdown_requested_date is not None)


if __name__ == "__main__":
    sys.exit(main())
