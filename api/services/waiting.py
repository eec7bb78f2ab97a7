"""Wait for a transcription to end, for the OpenAI-compatible endpoint (which answers with the result).

The job publishes on a Redis channel when a transcription completes or fails (api.queue.final_channel);
the waiter also re-reads the database every second, so a missed message (or a transcription failed by
the recovery sweep, which does not publish) costs at most a second. The database connection is
returned between reads: a waiting request holds a gunicorn thread, not a pooled connection.
"""

from __future__ import annotations

import time

from api.models import Organization, Transcription, TranscriptionStatus, db
from api.queue import final_channel
from api.services.transcriptions import get_transcription
from api.state import AppState

RECHECK_SECONDS = 1.0


def wait_until_final(state: AppState, org: Organization, public_id: str, seconds: float) -> Transcription:
    """The transcription once completed/failed/canceled, or as it is when `seconds` have passed."""
    deadline = time.monotonic() + max(0.0, seconds)
    pubsub = state.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(final_channel(public_id))  # before the first read: no end can slip between
    try:
        while True:
            row = get_transcription(org, public_id)
            remaining = deadline - time.monotonic()
            if row.status in TranscriptionStatus.FINAL or remaining <= 0:
                return row
            db.close()
            try:
                pubsub.get_message(timeout=min(RECHECK_SECONDS, remaining))
            finally:
                db.connect(reuse_if_open=True)
    finally:
        pubsub.close()
