"""Fair queueing between organizations: each organization's transcriptions wait in a queue of their own
(`transcriptions.<org id>`) and a worker takes one job from each in turn, so one organization's backlog
does not hold up everyone else's jobs. Real stack (tests/jobs/stack.py), one worker."""

from __future__ import annotations

import dataclasses
import secrets
import time
from pathlib import Path

from rq import Queue
from rq.job import Job
from rq.registry import StartedJobRegistry

from api.queue import JOB_FUNCTION, QUEUE_NAME, family_queues, forget_empty_queue
from tests.jobs.stack import Stack
from tests.media import AUDIO_DIR, silence, write_wav

LONG = AUDIO_DIR / "multilingual.mp3"


def _as_new_org(stack: Stack, name: str) -> Stack:
    """The same stack, its requests made with the key of a new organization."""
    email = f"{secrets.token_hex(4)}@example.com"
    options = ("--plan", "enterprise", "--owner", email, "--rate-limit", "100000")
    return dataclasses.replace(stack, api_key=stack.create_org(name, *options))


def _started_order(stack: Stack, ids: list[str]) -> list[str]:
    started = dict(stack.query("SELECT public_id, started_at FROM transcription"))
    return sorted(ids, key=lambda public_id: started[public_id])


def test_an_organizations_job_does_not_wait_behind_another_organizations_backlog(
    stack: Stack, tmp_path: Path
) -> None:
    """Six jobs of one organization queued, then one of another, one worker: the other's job runs first
    or second, not after the whole backlog (first in, first out across organizations)."""
    clip = write_wav(tmp_path / "quiet.wav", silence(2.0), 16000)
    busy, other = _as_new_org(stack, "Busy org"), _as_new_org(stack, "Other org")
    backlog = [busy.create(busy.upload(clip, "audio/wav"))["id"] for _ in range(6)]
    late = other.create(other.upload(clip, "audio/wav"))["id"]
    assert stack.job_hash(late)["origin"] != stack.job_hash(backlog[0])["origin"]

    worker = stack.start_worker()
    for client, transcription_id in [*((busy, b) for b in backlog), (other, late)]:
        assert client.wait(transcription_id, timeout=180)["status"] == "completed", worker.log()
    order = _started_order(stack, [*backlog, late])
    assert order.index(late) <= 1, order


def test_a_job_queued_before_the_upgrade_on_the_single_queue_still_runs(stack: Stack, tmp_path: Path) -> None:
    """Jobs in `transcriptions` itself (enqueued by an API from before the per-organization queues)."""
    clip = write_wav(tmp_path / "quiet.wav", silence(2.0), 16000)
    created = stack.create(stack.upload(clip, "audio/wav"))["id"]
    Job.fetch(created, connection=stack.redis).delete(remove_from_queue=True)
    Queue(QUEUE_NAME, connection=stack.redis).enqueue(JOB_FUNCTION, created, job_id=created)

    worker = stack.start_worker()
    assert stack.wait(created, timeout=120)["status"] == "completed", worker.log()
    assert worker.wait_for_line(f"job {created} on {QUEUE_NAME} ended: completed"), worker.log()


def test_the_job_of_a_worker_killed_is_requeued_on_its_organizations_queue(stack: Stack) -> None:
    first = stack.start_worker(name="killed")
    created = stack.create(stack.upload(LONG, "audio/mpeg"))["id"]
    origin = stack.job_hash(created)["origin"]
    assert origin.startswith(f"{QUEUE_NAME}.org_"), origin
    stack.wait_for_segments(created, first)
    first.kill()
    deadline = time.monotonic() + 60
    registry = StartedJobRegistry(origin, connection=stack.redis)
    while not any(
        m.decode().startswith(created) for m in stack.redis.zrangebyscore(registry.key, 0, time.time())
    ):
        assert time.monotonic() < deadline, "the dead worker's job never expired"
        time.sleep(0.2)

    second = stack.start_worker(name="recovers")
    assert stack.wait(created, timeout=240)["status"] == "completed", second.log()
    job = Job.fetch(created, connection=stack.redis)
    assert job.meta.get("recoveries") == 1 and job.origin == origin
    assert second.wait_for_line(f"job {created} on {origin} ended: completed"), second.log()


def test_an_idle_organizations_queue_leaves_rqs_set_of_queues_and_a_busy_one_stays(stack: Stack) -> None:
    """RQ never takes a queue off `rq:queues`: every worker would listen to and maintain one queue per
    organization that ever transcribed. A queue holding anything (here a running job) stays."""
    idle, busy = f"{QUEUE_NAME}.org_idle", f"{QUEUE_NAME}.org_busy"
    for name in (idle, busy):
        stack.redis.sadd(Queue.redis_queues_keys, Queue(name, connection=stack.redis).key)
    stack.redis.zadd(StartedJobRegistry(busy, connection=stack.redis).key, {"txn_x:exec": time.time() + 60})
    assert family_queues(stack.redis, QUEUE_NAME) == [QUEUE_NAME, busy, idle]

    assert forget_empty_queue(stack.redis, idle)
    assert not forget_empty_queue(stack.redis, busy)
    assert family_queues(stack.redis, QUEUE_NAME) == [QUEUE_NAME, busy]
