"""The RQ side of a transcription: enqueue by dotted name, cancel by the transcription's public id.

The job function lives in the worker's code base (`jobs.transcribe.run_transcription`); the API only
names it, so the API process never imports the jobs or inference code.

Each organization's transcriptions go to a queue of their own, `transcriptions.<org public id>`
(`org_queue`), and the workers take one job from each non-empty queue in turn (jobs.worker): one
organization's backlog no longer delays everyone's jobs queued behind it. The queue `transcriptions`
itself still runs the jobs enqueued there before the per-organization queues. `family_queues` lists a
family's queues from RQ's set of queues; `forget_empty_queue` takes an idle one off that set, so it
holds the organizations with recent jobs, not every organization that ever had one.
"""

from __future__ import annotations

import contextlib
import logging

import redis
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)

QUEUE_NAME = "transcriptions"
JOB_FUNCTION = "jobs.transcribe.run_transcription"

log = logging.getLogger(__name__)

ORG_SEPARATOR = "."  # organization public ids (`org_…`) hold no dot


def org_queue(prefix: str, org_public_id: str) -> str:
    """The queue of one organization's transcriptions: `<prefix>.<org public id>`."""
    return f"{prefix}{ORG_SEPARATOR}{org_public_id}"


def queue_family(name: str) -> str:
    """The queue `name` is a per-organization queue of (`transcriptions.org_…` -> `transcriptions`)."""
    return name.split(ORG_SEPARATOR, 1)[0]


def in_family(name: str, family: str) -> bool:
    """Whether queue `name` is `family` itself or one of its per-organization queues."""
    return name == family or name.startswith(family + ORG_SEPARATOR)


def family_queues(connection: redis.Redis, family: str) -> list[str]:
    """`family` and every `family.*` queue in RQ's set of queues, sorted: what a worker on `family`
    listens to and maintains."""
    prefix = Queue.redis_queue_namespace_prefix
    names = {family}
    for key in connection.smembers(Queue.redis_queues_keys):
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name.startswith(prefix) and in_family(name[len(prefix) :], family):
            names.add(name[len(prefix) :])
    return sorted(names)


# RQ adds a queue to its set of queues when a job is enqueued and never takes it off: one member per
# organization that ever transcribed, each listened to and maintained by every worker. A queue is taken
# off only when it holds nothing at all (waiting, running, retrying, finished or failed), checked and
# done in one step: a job enqueued meanwhile registers its queue again (RQ's enqueue, in one MULTI), and
# the worker registers the queue of every job it starts once the job is in the started registry
# (jobs.worker), so a job popped from a queue emptied at that instant is still found by maintenance.
_FORGET_IF_EMPTY = """
for i = 2, #KEYS do
    local kind = redis.call("TYPE", KEYS[i])["ok"]
    if kind == "list" and redis.call("LLEN", KEYS[i]) > 0 then return 0 end
    if kind == "zset" and redis.call("ZCARD", KEYS[i]) > 0 then return 0 end
    if kind ~= "none" and kind ~= "list" and kind ~= "zset" then return 0 end
end
return redis.call("SREM", KEYS[1], ARGV[1])
"""


def forget_empty_queue(connection: redis.Redis, name: str) -> bool:
    """Take queue `name` off RQ's set of queues if it and all its registries are empty; whether it was."""
    queue = Queue(name, connection=connection)
    registries = (
        StartedJobRegistry,
        ScheduledJobRegistry,
        FailedJobRegistry,
        FinishedJobRegistry,
        DeferredJobRegistry,
        CanceledJobRegistry,
    )
    keys = [Queue.redis_queues_keys, queue.key, IntermediateQueue.get_intermediate_queue_key(queue.key)]
    keys += [registry(name, connection=connection).key for registry in registries]
    return bool(connection.eval(_FORGET_IF_EMPTY, len(keys), *keys, queue.key))


REQUEST_ID_META = "request_id"  # the X-Request-Id of the creating request, for the job's logs


def job_request_id(job: Job | None, transcription_id: str | None) -> str | None:
    """The request id a job's log lines carry, wherever they are written (the job itself, the worker
    around it, the recovery sweeps): the X-Request-Id the API stored in its meta, else the id of its
    transcription."""
    found = (job.meta.get(REQUEST_ID_META) if job is not None else None) or transcription_id
    return str(found)[:128] if found else None


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
    org_public_id: str,
    request_id: str | None = None,
) -> Job:
    """Queue `run_transcription(transcription_id)` on its organization's queue (`org_queue` of the
    prefix `queue_name`); the job id is the transcription's public id.

    One transaction, one round trip: RQ registers the queue and stores the job in our pipeline
    (left to itself it sends each in a transaction of its own).
    """
    queue = Queue(org_queue(queue_name, org_public_id), connection=connection)
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
    try:
        status = job.get_status(refresh=True)
    except InvalidJobOperation:  # deleted since the fetch (a worker's sweep, its result expired): gone
        return
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
