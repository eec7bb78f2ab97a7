"""Every setting of every component, read from the environment in this one module.

Local defaults need nothing installed; production overrides them (see README).
"""

from __future__ import annotations

import math
import os
import re
import secrets
import sys
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, urlsplit


class SettingsError(ValueError):
    """A setting the process cannot run with; the message names the variable and what it takes."""


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _int(name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    raw = _env(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise SettingsError(f"{name} must be a whole number {bound}, got {raw!r}")
    return value


def _float(name: str, default: float, minimum: float = 0.0, above_minimum: bool = False) -> float:
    """A finite number: "nan" would make every comparison false, and a limit of nan no limit at all."""
    raw = _env(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum or (above_minimum and value == minimum):
        bound = f"greater than {minimum:g}" if above_minimum else f"of at least {minimum:g}"
        raise SettingsError(f"{name} must be a finite number {bound}, got {raw!r}")
    return value


def _choice(name: str, default: str, choices: tuple[str, ...], *, upper: bool = False) -> str:
    raw = _env(name, default)
    value = raw.upper() if upper else raw.lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


def _flag(name: str) -> bool:
    raw = _env(name, "0")
    value = raw.lower()
    if value not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
        raise SettingsError(f"{name} must be 1/true/yes/on or 0/false/no/off, got {raw!r}")
    return value in {"1", "true", "yes", "on"}


def _int_list(name: str, default: str) -> tuple[int, ...]:
    """'10,30,90' -> (10, 30, 90): retry intervals in whole seconds (what RQ's Retry takes)."""
    raw = _env(name, default)
    try:
        values = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        values = None
    if values is None or any(value < 0 for value in values):
        raise SettingsError(f"{name} must be whole seconds of at least 0 separated by commas, got {raw!r}")
    return values


# a password in libpq's keyword form, quoted or not: password=secret, password = 'se cret'
_KEYWORD_PASSWORD = re.compile(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


def _redacted(url: str) -> str:
    """The URL as an error message may show it: whatever stands before its last "@" (user and password,
    even a password holding "@", "/" or "?") replaced by ***, then its query string, which can hold a
    password too (`?password=…`, as libpq and playhouse.db_url read it); without a scheme, the value of
    each `password=` (libpq's keyword form, which DATABASE_URL does not take, but people write)."""
    scheme, sep, rest = url.partition("://")
    if not sep:  # no scheme: maybe a libpq keyword string ("host=db user=app password=…")
        scheme, rest = "", _KEYWORD_PASSWORD.sub(r"\1***", url)
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    rest, question, _ = rest.partition("?")
    return f"{scheme}{sep}{rest}{'?***' if question else ''}"


def _split(url: str) -> SplitResult | None:
    """The URL's parts, or None when it cannot be parsed or its port is not a number."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- a port such as ":80x" raises only when read
    except ValueError:
        return None
    return parts


def _check_url(name: str, raw: str, schemes: tuple[str, ...], *, needs_host: bool, takes: str) -> None:
    """A URL whose scheme the process can open: a mistyped one ("api.example.com", "mysql://…") stops
    the start with one line naming the variable, where it failed later in a traceback or, for a
    URL clients are sent to, not at all (links without a scheme resolve against the caller's page)."""
    parts = _split(raw)
    if parts is None or parts.scheme.lower() not in schemes or (needs_host and not parts.hostname):
        raise SettingsError(f"{name} must be {takes}, got {_redacted(raw)!r}")


def _check_storage_url(raw: str) -> None:
    """STORAGE_URL: `s3://bucket/prefix`, `file:///path` or a bare path (api.storage.open_storage)."""
    parts = _split(raw)
    scheme = parts.scheme.lower() if parts is not None else None
    if not (scheme in {"file", ""} or (scheme == "s3" and parts.netloc)):
        raise SettingsError(f"STORAGE_URL must be s3://bucket/prefix or file:///path, got {_redacted(raw)!r}")


def _check_urls(settings: Settings) -> None:
    """Every URL setting, checked once read (S3 endpoints: empty means the default)."""
    _check_url(
        "DATABASE_URL",
        settings.database_url,
        ("postgresql", "postgres", "sqlite"),
        needs_host=False,
        takes="postgresql://user:password@host:5432/name or sqlite:///path",
    )
    _check_url(
        "REDIS_URL",
        settings.redis_url,
        ("redis", "rediss", "unix"),
        needs_host=False,
        takes="redis://host:6379/0, rediss://… or unix:///path",
    )
    _check_storage_url(settings.storage_url)
    _check_url(
        "CLIPTEXT_PUBLIC_URL",
        settings.public_base_url,
        ("http", "https"),
        needs_host=True,
        takes="the URL clients reach the API at, with its scheme: https://api.example.com",
    )
    endpoints = {
        "S3_PUBLIC_ENDPOINT_URL": settings.storage_public_endpoint,
        "AWS_ENDPOINT_URL": _env("AWS_ENDPOINT_URL", ""),  # boto3 reads it: checked here to fail at start
    }
    for name, endpoint in endpoints.items():
        if endpoint:
            _check_url(
                name,
                endpoint,
                ("http", "https"),
                needs_host=True,
                takes="an http:// or https:// URL, or empty",
            )


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origins(name: str) -> tuple[str, ...]:
    """'https://app.example.com, http://localhost:3000' -> the web origins it names; '*' for any.

    Written as browsers send them (their Origin header): lower case, and without the scheme's default
    port ("https://app.example.com:443" never matched). A path or a trailing slash never matches either,
    so it is refused here rather than failing every call in the browser."""
    raw = _env(name, "")
    origins = []
    for origin in (part.strip().lower() for part in raw.split(",") if part.strip()):
        if origin == "*":
            origins.append(origin)
            continue
        parts = _split(origin)
        if (
            parts is None
            or parts.scheme not in _DEFAULT_PORTS
            or not parts.hostname
            or origin != f"{parts.scheme}://{parts.netloc}"
            or "@" in parts.netloc
        ):
            raise SettingsError(
                f"{name} must be web origins separated by commas (scheme://host[:port], no path), "
                f"or *, got {origin!r}"
            )
        if parts.port == _DEFAULT_PORTS[parts.scheme]:
            origin = origin.rpartition(":")[0]
        origins.append(origin)
    return tuple(origins)


def _load_or_create_secret(data_dir: Path) -> str:
    """A local secret generated once into the data folder: never a fixed default, never empty.

    The key is written whole to a file of its own and then linked into place, so a process killed or a
    disk full while writing leaves no half-written key (an empty one signed URLs anyone could forge),
    and processes starting together on a fresh folder all end with the first one's key.
    """
    path = data_dir / "secret_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        staged = data_dir / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
                handle.flush()
                os.fsync(handle.fileno())
            with suppress(FileExistsError):  # another process got there first: its key stands
                os.link(staged, path)
        finally:
            staged.unlink(missing_ok=True)
    value = path.read_text().strip()
    if not value:
        raise SettingsError(
            f"{path} is empty (a first start that failed while writing it?): delete it to have a new key"
            " generated, or set CLIPTEXT_SECRET_KEY"
        )
    return value


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    redis_url: str
    storage_url: str
    # the S3 endpoint written into presigned upload URLs, when clients reach it at another address than
    # the containers do (AWS_ENDPOINT_URL); empty: the same
    storage_public_endpoint: str
    inference_addr: str
    model_dir: Path
    secret_key: str = field(repr=False)
    # inference server
    inference_precision: str
    inference_device: str
    inference_threads: int
    inference_max_concurrent: int | None  # None: chosen by device (inference.server.default_max_concurrent)
    inference_max_queue: int
    max_audio_bytes: int
    max_audio_seconds: float
    # api
    max_upload_bytes: int
    public_base_url: str
    admin_user: str
    admin_password: str = field(repr=False)
    webhook_allow_private: bool
    openai_wait_seconds: float
    # the web origins whose pages may call the API from a browser (api/cors.py)
    cors_origins: tuple[str, ...] = ()
    # inference server: seconds calls in flight may still run after SIGTERM
    inference_grace_seconds: float = 30.0
    # inference server: seconds a client may send nothing while it uploads before its call is cancelled
    inference_upload_idle_seconds: float = 60.0
    # jobs (worker): seconds between HTTP/2 pings on a call to the inference server; a server that
    # stopped answering (host gone, network cut) fails the call within this plus at most 10 s
    inference_keepalive_seconds: float = 20.0
    # jobs (worker): retries of transient inference failures, time limits, abandoned-job recovery
    job_retries: int = 4
    job_retry_intervals: tuple[int, ...] = (10, 30, 90, 270)
    job_timeout_base: int = 300
    job_timeout_per_audio_second: float = 2.0
    job_max_recoveries: int = 3
    # seconds a queued/processing transcription may lack its RQ job before the workers enqueue it again
    job_orphan_grace: int = 120
    worker_heartbeat_seconds: int = 30
    worker_heartbeat_grace: int = 60
    worker_stop_grace: float = 45.0
    worker_maintenance_seconds: int = 60
    # webhooks
    webhook_timeout: float = 10.0
    webhook_retries: int = 5
    webhook_retry_intervals: tuple[int, ...] = (10, 60, 300, 1800, 7200)
    # observability: log format ("json": one JSON object per line, or "text"), Prometheus exporters
    # (worker / inference server: a port for an HTTP exporter, 0 = off); the API serves /metrics itself,
    # aggregated over gunicorn processes when PROMETHEUS_MULTIPROC_DIR is set (prometheus_client reads it)
    log_format: str = "json"
    log_level: str = "INFO"
    worker_metrics_port: int = 0
    inference_metrics_port: int = 0
    prometheus_multiproc_dir: str = ""
    # OpenAI-compatible API: seconds GET /v1/models caches the inference server's DescribeModel
    models_cache_seconds: float = 60.0
    # API: seconds an API process reuses a key's lookup (a revoked key may work that long in other processes)
    auth_cache_seconds: float = 5.0
    # API: seconds a multipart upload's concurrent-upload slot, and an Idempotency-Key's "in progress"
    # marker, outlive the process running the request (renewed every quarter of this while it runs)
    upload_slot_lease_seconds: float = 120.0

    @classmethod
    def from_env(cls) -> Settings:
        data_dir = Path(_env("CLIPTEXT_DATA_DIR", "./data")).resolve()
        secret = _env("CLIPTEXT_SECRET_KEY", "") or _load_or_create_secret(data_dir)
        cores = os.cpu_count() or 1
        job_retry_intervals = _int_list("CLIPTEXT_JOB_RETRY_INTERVALS", "10,30,90,270")
        settings = cls(
            data_dir=data_dir,
            database_url=_env("DATABASE_URL", f"sqlite:///{data_dir / 'cliptext.db'}"),
            redis_url=_env("REDIS_URL", "redis://127.0.0.1:6379/0"),
            storage_url=_env("STORAGE_URL", f"file://{data_dir / 'storage'}"),
            storage_public_endpoint=_env("S3_PUBLIC_ENDPOINT_URL", ""),
            inference_addr=_env("INFERENCE_ADDR", "127.0.0.1:50051"),
            model_dir=Path(_env("CLIPTEXT_MODEL_DIR", "models/whisper-tiny.en")),
            secret_key=secret,
            inference_precision=_choice("CLIPTEXT_PRECISION", "auto", ("auto", "fp32", "int8", "fp16")),
            inference_device=_choice("CLIPTEXT_DEVICE", "auto", ("auto", "cpu", "cuda")),
            inference_threads=_int("CLIPTEXT_THREADS", 0),
            inference_max_concurrent=_int("CLIPTEXT_MAX_CONCURRENT", 0) or None,
            inference_max_queue=_int("CLIPTEXT_MAX_QUEUE", 4 * cores),
            max_audio_bytes=_int("CLIPTEXT_MAX_AUDIO_BYTES", 2 * 1024**3, minimum=1),
            max_audio_seconds=_float("CLIPTEXT_MAX_AUDIO_SECONDS", 4 * 3600, above_minimum=True),
            max_upload_bytes=_int("CLIPTEXT_MAX_UPLOAD_BYTES", 2 * 1024**3, minimum=1),
            public_base_url=_env("CLIPTEXT_PUBLIC_URL", "http://127.0.0.1:8000"),
            admin_user=os.environ.get("CLIPTEXT_ADMIN_USER", ""),
            admin_password=os.environ.get("CLIPTEXT_ADMIN_PASSWORD", ""),
            webhook_allow_private=_flag("CLIPTEXT_WEBHOOK_ALLOW_PRIVATE"),
            cors_origins=_origins("CLIPTEXT_CORS_ORIGINS"),
            openai_wait_seconds=_float("CLIPTEXT_OPENAI_WAIT_SECONDS", 60),
            inference_grace_seconds=_float("CLIPTEXT_SHUTDOWN_GRACE", 30),
            inference_upload_idle_seconds=_float("CLIPTEXT_UPLOAD_IDLE_SECONDS", 60, above_minimum=True),
            inference_keepalive_seconds=_float("CLIPTEXT_INFERENCE_KEEPALIVE_SECONDS", 20, minimum=1),
            # one retry after each interval unless set: 6 intervals are 6 retries, not the first 4
            job_retries=_int("CLIPTEXT_JOB_RETRIES", len(job_retry_intervals)),
            job_retry_intervals=job_retry_intervals,
            job_timeout_base=_int("CLIPTEXT_JOB_TIMEOUT_BASE", 300, minimum=1),
            job_timeout_per_audio_second=_float("CLIPTEXT_JOB_TIMEOUT_PER_AUDIO_SECOND", 2),
            job_max_recoveries=_int("CLIPTEXT_JOB_MAX_RECOVERIES", 3),
            job_orphan_grace=_int("CLIPTEXT_JOB_ORPHAN_GRACE", 120),
            worker_heartbeat_seconds=_int("CLIPTEXT_WORKER_HEARTBEAT", 30, minimum=1),
            worker_heartbeat_grace=_int("CLIPTEXT_WORKER_HEARTBEAT_GRACE", 60),
            worker_stop_grace=_float("CLIPTEXT_WORKER_STOP_GRACE", 45),
            worker_maintenance_seconds=_int("CLIPTEXT_WORKER_MAINTENANCE", 60, minimum=1),
            webhook_timeout=_float("CLIPTEXT_WEBHOOK_TIMEOUT", 10, above_minimum=True),
            webhook_retries=_int("CLIPTEXT_WEBHOOK_RETRIES", 5),
            webhook_retry_intervals=_int_list("CLIPTEXT_WEBHOOK_RETRY_INTERVALS", "10,60,300,1800,7200"),
            log_format=_choice("CLIPTEXT_LOG_FORMAT", "json", ("json", "text")),
            log_level=_choice("CLIPTEXT_LOG_LEVEL", "INFO", LOG_LEVELS, upper=True),
            worker_metrics_port=_int("CLIPTEXT_WORKER_METRICS_PORT", 0, maximum=65535),
            inference_metrics_port=_int("CLIPTEXT_INFERENCE_METRICS_PORT", 0, maximum=65535),
            prometheus_multiproc_dir=_env("PROMETHEUS_MULTIPROC_DIR", ""),
            models_cache_seconds=_float("CLIPTEXT_MODELS_CACHE_SECONDS", 60),
            auth_cache_seconds=_float("CLIPTEXT_AUTH_CACHE_SECONDS", 5),
            upload_slot_lease_seconds=_float("CLIPTEXT_UPLOAD_SLOT_LEASE", 120, minimum=1),
        )
        _check_urls(settings)
        return settings


def settings_or_exit() -> Settings:
    """The settings for a process's main(): a bad value ends it with one line naming the variable
    (exit status 2), not a traceback."""
    try:
        return Settings.from_env()
    except SettingsError as error:
        raise configuration_error(str(error)) from None


def port_in_use(variable: str, port: int, error: OSError) -> SystemExit:
    """configuration_error for a port setting the process could not listen on (a metrics exporter's)."""
    return configuration_error(
        f"{variable} must be a port free on this host, got {port} ({error.strerror or error})"
    )


def configuration_error(message: str) -> SystemExit:
    """Print `configuration error: <message>` (one line naming what to change) and return the
    SystemExit, status 2, for the caller to raise: the one way a process refuses a setting it cannot use."""
    print(f"configuration error: {message}", file=sys.stderr, flush=True)
    return SystemExit(2)
