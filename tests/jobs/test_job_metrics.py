"""What a work horse writes into its job's hash for the worker's metrics."""

from __future__ import annotations

from rq import Queue
from rq.job import Job

from jobs.metrics import OUTCOME_META, save_meta_if_present
from tests.jobs.stack import REDIS_URL
from tests.redis_db import flushed_redis


def test_the_outcome_is_not_written_into_a_job_deleted_meanwhile() -> None:
    """A transcription deleted while its job ran takes the job's hash with it; a plain HSET of the
    outcome made a new hash holding only that, with no TTL, left in Redis for good."""
    with flushed_redis(REDIS_URL) as conn:
        job = Queue("metrics-test", connection=conn).enqueue("os.getcwd", job_id="txn_meta")
        job.meta[OUTCOME_META] = "completed"
        assert save_meta_if_present(job)
        assert Job.fetch("txn_meta", connection=conn).meta[OUTCOME_META] == "completed"

        job.delete()
        assert not save_meta_if_present(job)
        assert not conn.exists(job.key)
