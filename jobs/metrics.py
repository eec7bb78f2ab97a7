"""Prometheus metrics of a worker: jobs by outcome, audio seconds transcribed, job time, queue depth.

A job runs in a forked work horse whose memory dies with it, so the horse writes what happened into
the job's meta in Redis (`report`) and the worker process, which outlives its horses, counts it after
the horse exits (`record_job`). Queue depths are read from Redis at scrape time. Both are labelled by
the worker's `--queues` name, not by per-organization queue (api.queue.org_queue): one series per
kind of job, however many organizations. The worker serves them on settings.worker_metrics_port
(0 = no exporter): one port per worker process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import redis
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from rq import Queue, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from api.queue import family_queues
from cliptext.settings import Settings

log = logging.getLogger(__name__)

OUTCOME_META = "outcome"
AUDIO_SECONDS_META = "audio_seconds"

JOBS = Counter("cliptext_worker_jobs_total", "Jobs run by this worker, by outcome", ["queue", "outcome"])
AUDIO_SECONDS = Counter(
    "cliptext_worker_audio_seconds_total", "Seconds of audio of the transcriptions completed"
)
JOB_SECONDS = Histogram(
    "cliptext_worker_job_duration_seconds",
    "Wall time of a job, fork to exit",
    ["queue"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)

# what RQ's own status means when the job said nothing (a webhook job, a killed horse)
_BY_STATUS = {
    JobStatus.FINISHED: "succeeded",
    JobStatus.FAILED: "crashed",
    JobStatus.SCHEDULED: "retried",
    JobStatus.DEFERRED: "retried",
    JobStatus.QUEUED: "retried",
    JobStatus.STOPPED: "stopped",
    JobStatus.CANCELED: "canceled",
}


def report(outcome: str, audio_seconds: float = 0.0) -> None:
    """Called in the work horse: what this job ended as (completed, failed, retried, canceled, skipped;
    gave_up: a webhook whose last attempt failed)."""
    job = get_current_job()
    if job is None:
        return
    job.meta[OUTCOME_META] = outcome
    job.meta[AUDIO_SECONDS_META] = audio_seconds
    try:
        save_meta_if_present(job)
    except (redis.RedisError, NoSuchJobError):  # metrics never fail a job
        log.warning("could not save the outcome of job %s", job.id)


# Job.save_meta is a plain HSET: on a job the API deleted meanwhile (a transcription deleted while its
# job ran) it made a new hash holding only the meta, with no TTL, that nothing would ever remove
_SAVE_META_IF_PRESENT = """
if redis.call("EXISTS", KEYS[1]) == 1 then
    redis.call("HSET", KEYS[1], "meta", ARGV[1])
    return 1
end
return 0
"""


def save_meta_if_present(job: Job) -> bool:
    """Write `job.meta` unless the job's hash is gone; whether it was written."""
    return bool(job.connection.eval(_SAVE_META_IF_PRESENT, 1, job.key, job.serializer.dumps(job.meta)))


def forget_outcome(job: Job) -> None:
    """Before a (re)run, in the worker before the fork: drop the outcome of a previous attempt, in
    memory and in Redis, so a horse killed before it reports is counted from RQ's status (crashed),
    not as what the previous attempt reported (record_job reads the meta back from Redis)."""
    found = job.meta.pop(OUTCOME_META, None) is not None
    found = job.meta.pop(AUDIO_SECONDS_META, None) is not None or found
    if not found:
        return
    try:
        save_meta_if_present(job)
    except redis.RedisError:  # metrics never fail a job
        log.warning("could not clear the previous outcome of job %s", job.id)


def record_job(job: Job, queue_name: str, seconds: float, outcome: str | None = None) -> str:
    """Count the job the horse just finished (called in the worker process); returns the outcome, the
    one given or else the one the job reported (or its status tells)."""
    try:
        meta = job.get_meta(refresh=True)
        status = job.get_status(refresh=True)
    except (NoSuchJobError, redis.RedisError):
        meta, status = {}, None  # deleted meanwhile (the transcription was deleted)
    by_status = _BY_STATUS.get(status, "deleted" if status is None else str(status))
    outcome = outcome or meta.get(OUTCOME_META) or by_status
    JOBS.labels(queue_name, outcome).inc()
    JOB_SECONDS.labels(queue_name).observe(seconds)
    audio = float(meta.get(AUDIO_SECONDS_META) or 0.0)
    if audio > 0:
        AUDIO_SECONDS.inc(audio)
    return outcome


class QueueDepth(Collector):
    """cliptext_queue_depth{queue}: jobs waiting under each `--queues` name (its per-organization queues
    summed), read from Redis at scrape time."""

    def __init__(self, connection: redis.Redis, queue_names: Iterable[str]) -> None:
        self.connection = connection
        self.queue_names = list(queue_names)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("cliptext_queue_depth", "Jobs waiting in the queue", labels=["queue"])
        for name in self.queue_names:
            try:
                queues = family_queues(self.connection, name)
                family.add_metric([name], sum(Queue(q, connection=self.connection).count for q in queues))
            except redis.RedisError:
                continue
        yield family


def start_exporter(settings: Settings, connection: redis.Redis, queue_names: Iterable[str]) -> int:
    """Serve /metrics on settings.worker_metrics_port (0: nothing); returns the port."""
    if not settings.worker_metrics_port:
        return 0
    REGISTRY.register(QueueDepth(connection, queue_names))
    start_http_server(settings.worker_metrics_port)
    log.info("metrics on port %d", settings.worker_metrics_port)
    return settings.worker_metrics_port
