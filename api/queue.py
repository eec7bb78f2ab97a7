"""The RQ side of a transcription: enqueue by dotted name, cancel by the transcription's public id.

The job function lives in the worker's code base (`jobs.transcribe.run_transcription`); the API only
names it, so the API process never imports the jobs or inference code.
"""

from __future__ import annotations

import contextlib
import logging

import redis
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus

QUEUE_NAME = "transcriptions"
JOB_FUNCTION = "jobs.transcribe.run_transcription"

log = logging.getLogger(__name__)


REQUEST_ID_META = "request_id"  # the X-Request-Id of the creating request, for the job's logs
_FINAL_CHANNEL = "cliptext:transcription-final:"


def final_channel(transcription_id: str) -> str:
    """Redis pub/sub channel on which the job announces that a transcription ended (completed/failed)."""
    return _FINAL_CHANNEL + transcription_id


def enqueue_transcription(
    connection: redis.Redis,
    transcription_id: str,
    *,
    queue_name: str = QUEUE_NAME,
    job_timeout: int = 3600,
    request_id: str | None = None,
) -> Job:
    """Queue `run_transcription(transcription_id)`; the job id is the transcription's public id.

    One transaction, one round trip: RQ registers the queue and stores the job in our pipeline
    (left to itself it sends each in a transaction of its own).
    """
    queue = Queue(queue_name, connection=connection)
    with connection.pipeline() as pipe:
        job = queue.enqueue(
            JOB_FUNCTION,
            transcription_id,
            job_id=transcription_id,
            job_timeout=job_timeout,
            meta={REQUEST_ID_META: request_id} if request_id else None,
            result_ttl=3600,
            failure_ttl=7 * 24 * 3600,
            description=f"transcription {transcription_id}",
            pipeline=pipe,
        )
        pipe.execute()
    return job


def cancel_transcription(connection: redis.Redis, transcription_id: str) -> None:
    """Stop a running job, or cancel and delete a queued one. A missing job is not an error."""
    try:
        job = Job.fetch(transcription_id, connection=connection)
    except NoSuchJobError:
        return
    status = job.get_status(refresh=True)
    if status == JobStatus.STARTED:
        # the worker kills the work horse; the job record then expires with failure_ttl
        with contextlib.suppress(InvalidJobOperation, NoSuchJobError):  # it may just have finished
            send_stop_job_command(connection, transcription_id)
        return
    if status in {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED}:
        with contextlib.suppress(InvalidJobOperation):
            job.cancel()
    with contextlib.suppress(NoSuchJobError):
        job.delete(remove_from_queue=True)
