"""Webhook deliveries: a signed JSON POST when a transcription completes or fails.

The body is signed with HMAC-SHA256 over f"{timestamp}.{body}" using the organization's webhook
secret (headers `Cliptext-Timestamp` and `Cliptext-Signature: v1=<hex>`; see docs/webhooks.md). For
a while after a rotation (api.services.orgs.WEBHOOK_SECRET_OVERLAP) the secret it replaced signs too:
`v1=<hex with the new>,v1=<hex with the previous>`, so a receiver holding either accepts the delivery.
A non-2xx answer, a network error, or status line and headers not all in within
settings.webhook_timeout seconds (a deadline on the whole answer, not on each read; the body is never
read) raises, and RQ retries the job with backoff (enqueue_webhook sets the Retry); every attempt is
recorded as a WebhookDelivery, unless the transcription was deleted meanwhile (then nothing is
retried). Errors logged or stored name the target as scheme://host:port only (its path and query may
carry a token); the last attempt's failure is logged as a WARNING ("gave up after N attempts") and
counted as the job outcome `gave_up`.
Targets that resolve to private, loopback or link-local addresses are refused unless
settings.webhook_allow_private: checked once by name (a clear refusal, not retried), and again where
the connection is opened, to the very address that was checked (ssrfguard), since a name can resolve
elsewhere a moment later (DNS rebinding).
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from urllib.parse import urlsplit

import redis
import requests
from rq import Queue, Retry, get_current_job
from ssrfguard import SSRFGuardError

from api.db import db, locked, write_transaction
from api.models import Organization, Transcription, WebhookDelivery, utcnow
from api.queue import REQUEST_ID_META, job_request_id
from api.services.orgs import signing_secrets
from cliptext.jsonlog import request_id_var
from cliptext.settings import Settings
from cliptext.webhook_targets import without_credentials
from jobs import metrics
from jobs.transcript_store import ensure_db
from jobs.webhook_transport import send_event

log = logging.getLogger(__name__)

QUEUE_NAME = "webhooks"
JOB_FUNCTION = "jobs.webhooks.deliver_webhook"
SIGNATURE_HEADER = "Cliptext-Signature"
TIMESTAMP_HEADER = "Cliptext-Timestamp"
EVENT_HEADER = "Cliptext-Event"
USER_AGENT = "Cliptext-Webhooks/1"


class WebhookRefused(Exception):
    """The target may not be called (bad URL, or an address inside the private network)."""


class DeliveryFailed(Exception):
    """The receiver did not answer 2xx in time; raised so that RQ retries the job."""


def delivery_job_id(transcription_id: str, event: str) -> str:
    """The RQ job id of one event's delivery: one job per transcription and event."""
    return f"{transcription_id}-{event.replace('.', '-')}"


def _in_order(intervals: tuple[int, ...], retries: int) -> list[int]:
    """Exactly `retries` waits: the configured ones in order, the last repeated. RQ picks a failed job's
    wait counting from the end of the list (retries left), so a list of another length shifted them:
    2 retries over the default five intervals waited 30 min and 2 h, not 10 s and 1 min."""
    waits = list(intervals) or [0]
    return (waits + [waits[-1]] * retries)[:retries]


def enqueue_webhook(connection: redis.Redis, settings: Settings, transcription_id: str, event: str) -> bool:
    """Queue one delivery of `event` ("transcription.completed" / "transcription.failed"), unless it
    was queued in the last job_orphan_grace seconds: the worker that stored the result and the
    recovery sweep (jobs.recovery.enqueue_missed_webhooks) may both try, and only one may win.
    False when it was already queued."""
    claim = f"cliptext:webhook-queued:{delivery_job_id(transcription_id, event)}"
    if not connection.set(claim, 1, nx=True, ex=max(1, settings.job_orphan_grace)):
        log.info("webhook %s for %s: already queued", event, transcription_id)
        return False
    retry = None
    if settings.webhook_retries > 0:
        retry = Retry(
            max=settings.webhook_retries,
            interval=_in_order(settings.webhook_retry_intervals, settings.webhook_retries),
        )
    Queue(QUEUE_NAME, connection=connection).enqueue(
        JOB_FUNCTION,
        transcription_id,
        event,
        job_id=delivery_job_id(transcription_id, event),
        retry=retry,
        job_timeout=int(settings.webhook_timeout * 3 + 30),
        result_ttl=3600,
        failure_ttl=7 * 24 * 3600,
        description=f"webhook {event} {transcription_id}",
        meta={REQUEST_ID_META: request_id_var.get()} if request_id_var.get() else None,
    )
    return True


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `Cliptext-Signature` value: "v1=" + hex HMAC-SHA256 of f"{timestamp}.{body}"."""
    message = str(timestamp).encode() + b"." + body
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(org_secrets: list[str], timestamp: int, body: bytes) -> str:
    """The `Cliptext-Signature` value for several secrets (the current one first): their signatures
    joined by commas, as Stripe does, so a receiver accepts the delivery if any one matches."""
    return ",".join(sign(secret, timestamp, body) for secret in org_secrets)


def check_target(url: str, allow_private: bool) -> None:
    """Raise WebhookRefused unless `url` is http(s) and every address of its host is public."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise WebhookRefused("the webhook URL must be an absolute http(s) URL")
    if allow_private:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as error:
        raise WebhookRefused(f"cannot resolve {parts.hostname}: {error}") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_global or address.is_multicast:
            raise WebhookRefused(f"{parts.hostname} resolves to a non-public address ({address})")


def event_body(settings: Settings, row: Transcription, event: str) -> bytes:
    """The JSON body: event type, transcription id and status, error, and where to fetch the result."""
    error = {"code": row.error_code, "message": row.error_message} if row.error_code else None
    payload = {
        "id": f"evt_{row.public_id}.{event}",
        "type": event,
        # when the transcription ended, the same on every retry of this event (its id)
        "created_at": calendar.timegm((row.completed_at or utcnow()).utctimetuple()),
        "data": {
            "id": row.public_id,
            "object": "transcription",
            "status": row.status,
            "error": error,
            "url": f"{settings.public_base_url.rstrip('/')}/v1/transcriptions/{row.public_id}",
        },
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def _record(row: Transcription, status_code: int | None, error: str | None) -> int | None:
    """Store one delivery attempt; its number (1 for the first), or None when the transcription was
    deleted meanwhile: its deliveries went with it, and the insert had failed on the foreign key (a
    crashed job, retried, for an event that had nobody left to tell)."""
    with write_transaction():
        if locked(Transcription.select(Transcription.id).where(Transcription.id == row.id)).first() is None:
            return None
        attempt = WebhookDelivery.select().where(WebhookDelivery.transcription == row.id).count() + 1
        WebhookDelivery.create(transcription=row.id, attempt=attempt, status_code=status_code, error=error)
    return attempt


def target_origin(url: str) -> str:
    """scheme://host:port of `url`: all a log line or a stored error may say of the target, since its
    user, password, path and query may hold secrets (a token in the path or the query string)."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def redact_target(text: str, url: str) -> str:
    """`text` (an error that may quote `url`, whole or in part) with the URL's userinfo, path, query
    and fragment masked."""
    parts = urlsplit(url)
    request_target = parts.path + (f"?{parts.query}" if parts.query else "")
    pieces = {url, without_credentials(url, url), request_target, parts.query, parts.fragment}
    pieces |= {requests.utils.requote_uri(piece) for piece in set(pieces)}
    if parts.path not in ("", "/"):
        pieces.add(parts.path)
    for piece in sorted((p for p in pieces if p), key=len, reverse=True):
        text = text.replace(piece, "/[redacted]")
    return without_credentials(text, url)


def _failure_reason(error: requests.RequestException, url: str) -> str:
    """What went wrong, without the URL: requests' text quotes it (`Max retries exceeded with url:
    /path?query`); the underlying cause (connection refused, timed out) does not need it."""
    cause: object = error.args[0] if error.args else error
    cause = getattr(cause, "reason", None) or cause  # urllib3's MaxRetryError: the error behind it
    text = str(cause)
    if " object at 0x" in text and ": " in text:  # "<urllib3.connection.HTTPConnection object at 0x…>: …"
        text = text.split(": ", 1)[1]
    return f"{type(error).__name__} calling {target_origin(url)}: {redact_target(text, url)}"


def _failed(transcription_id: str, attempt: int, reason: str) -> DeliveryFailed:
    """The error that makes RQ retry the delivery; on the last attempt, said so in a WARNING and
    reported as the job's outcome `gave_up` (RQ's status alone reads as a crashed work horse)."""
    job = get_current_job()
    if job is None or not job.should_retry:
        log.warning("webhook for %s gave up after %d attempts (last: %s)", transcription_id, attempt, reason)
        metrics.report("gave_up")
    return DeliveryFailed(f"webhook for {transcription_id}: {reason}")


def _refused(row: Transcription, reason: str) -> None:
    """Record and log a delivery that may not be made (not retried: the URL will not become
    acceptable), the URL masked as in every other error (ssrfguard's refusal quotes it whole)."""
    reason = redact_target(reason.replace(row.webhook_url, target_origin(row.webhook_url)), row.webhook_url)
    _record(row, None, f"refused: {reason}"[:1000])
    log.warning("webhook for %s refused: %s", row.public_id, reason)


def deliver_webhook(transcription_id: str, event: str) -> int | None:
    """POST the signed event to the transcription's webhook_url; returns the receiver's status code."""
    settings = Settings.from_env()
    ensure_db(settings)
    request_id_var.set(job_request_id(get_current_job(), transcription_id))
    with db.connection_context():
        row = Transcription.get_or_none(Transcription.public_id == transcription_id)
        if row is None or not row.webhook_url:
            log.info("webhook %s for %s: nothing to deliver", event, transcription_id)
            return None
        delivered = WebhookDelivery.select().where(
            (WebhookDelivery.transcription == row.id) & WebhookDelivery.status_code.between(200, 299)
        )
        if delivered.exists():  # a transcription ends once: its one event already reached the receiver
            log.info("webhook %s for %s: already delivered", event, transcription_id)
            return None
        try:
            check_target(row.webhook_url, settings.webhook_allow_private)
        except WebhookRefused as refused:
            _refused(row, str(refused))
            return None
        org_secrets = signing_secrets(Organization.get_by_id(row.organization_id))
        body = event_body(settings, row, event)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: event,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature_header(org_secrets, timestamp, body),
        }
        try:
            response = send_event(
                row.webhook_url, body, headers, settings.webhook_timeout, settings.webhook_allow_private
            )
        except SSRFGuardError as refused:  # resolved to a public address when checked, not now
            _refused(row, str(refused))
            return None
        except requests.RequestException as error:
            reason = _failure_reason(error, row.webhook_url)[:1000]
            if (attempt := _record(row, None, reason)) is None:
                return _deleted(transcription_id)
            raise _failed(transcription_id, attempt, reason) from None
        if not 200 <= response.status_code < 300:
            reason = f"HTTP {response.status_code}"
            if (attempt := _record(row, response.status_code, reason)) is None:
                return _deleted(transcription_id)
            raise _failed(transcription_id, attempt, reason)
        _record(row, response.status_code, None)
        return response.status_code


def _deleted(transcription_id: str) -> None:
    """A failed attempt for a transcription deleted meanwhile: not retried, there is nothing to announce."""
    log.info("webhook for %s: the transcription was deleted during the attempt", transcription_id)
