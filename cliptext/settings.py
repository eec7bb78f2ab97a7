"""Every setting of every component, read from the environment in this one module.

Local defaults need nothing installed; production overrides them (see README).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _int_list(value: str) -> tuple[int, ...]:
    """'10,30,90' -> (10, 30, 90): retry intervals in whole seconds (what RQ's Retry takes)."""
    return tuple(int(part) for part in value.split(",") if part.strip())


def _load_or_create_secret(data_dir: Path) -> str:
    """A local secret generated once into the data folder: never a fixed default."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


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
    # inference server: seconds calls in flight may still run after SIGTERM
    inference_grace_seconds: float = 30.0
    # inference server: seconds a client may send nothing while it uploads before its call is cancelled
    inference_upload_idle_seconds: float = 60.0
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

    @classmethod
    def from_env(cls) -> Settings:
        data_dir = Path(_env("CLIPTEXT_DATA_DIR", "./data")).resolve()
        secret = os.environ.get("CLIPTEXT_SECRET_KEY") or _load_or_create_secret(data_dir)
        cores = os.cpu_count() or 1
        return cls(
            data_dir=data_dir,
            database_url=_env("DATABASE_URL", f"sqlite:///{data_dir / 'cliptext.db'}"),
            redis_url=_env("REDIS_URL", "redis://127.0.0.1:6379/0"),
            storage_url=_env("STORAGE_URL", f"file://{data_dir / 'storage'}"),
            storage_public_endpoint=os.environ.get("S3_PUBLIC_ENDPOINT_URL", ""),
            inference_addr=_env("INFERENCE_ADDR", "127.0.0.1:50051"),
            model_dir=Path(_env("CLIPTEXT_MODEL_DIR", "models/whisper-tiny.en")),
            secret_key=secret,
            inference_precision=_env("CLIPTEXT_PRECISION", "auto"),
            inference_device=_env("CLIPTEXT_DEVICE", "auto"),
            inference_threads=int(_env("CLIPTEXT_THREADS", "0")),
            inference_max_concurrent=int(_env("CLIPTEXT_MAX_CONCURRENT", "0")) or None,
            inference_max_queue=int(_env("CLIPTEXT_MAX_QUEUE", str(4 * cores))),
            max_audio_bytes=int(_env("CLIPTEXT_MAX_AUDIO_BYTES", str(2 * 1024**3))),
            max_audio_seconds=float(_env("CLIPTEXT_MAX_AUDIO_SECONDS", str(4 * 3600))),
            max_upload_bytes=int(_env("CLIPTEXT_MAX_UPLOAD_BYTES", str(2 * 1024**3))),
            public_base_url=_env("CLIPTEXT_PUBLIC_URL", "http://127.0.0.1:8000"),
            admin_user=os.environ.get("CLIPTEXT_ADMIN_USER", ""),
            admin_password=os.environ.get("CLIPTEXT_ADMIN_PASSWORD", ""),
            webhook_allow_private=_env("CLIPTEXT_WEBHOOK_ALLOW_PRIVATE", "0") in {"1", "true", "yes"},
            openai_wait_seconds=float(_env("CLIPTEXT_OPENAI_WAIT_SECONDS", "60")),
            inference_grace_seconds=float(_env("CLIPTEXT_SHUTDOWN_GRACE", "30")),
            inference_upload_idle_seconds=float(_env("CLIPTEXT_UPLOAD_IDLE_SECONDS", "60")),
            job_retries=int(_env("CLIPTEXT_JOB_RETRIES", "4")),
            job_retry_intervals=_int_list(_env("CLIPTEXT_JOB_RETRY_INTERVALS", "10,30,90,270")),
            job_timeout_base=int(_env("CLIPTEXT_JOB_TIMEOUT_BASE", "300")),
            job_timeout_per_audio_second=float(_env("CLIPTEXT_JOB_TIMEOUT_PER_AUDIO_SECOND", "2")),
            job_max_recoveries=int(_env("CLIPTEXT_JOB_MAX_RECOVERIES", "3")),
            job_orphan_grace=int(_env("CLIPTEXT_JOB_ORPHAN_GRACE", "120")),
            worker_heartbeat_seconds=int(_env("CLIPTEXT_WORKER_HEARTBEAT", "30")),
            worker_heartbeat_grace=int(_env("CLIPTEXT_WORKER_HEARTBEAT_GRACE", "60")),
            worker_maintenance_seconds=int(_env("CLIPTEXT_WORKER_MAINTENANCE", "60")),
            webhook_timeout=float(_env("CLIPTEXT_WEBHOOK_TIMEOUT", "10")),
            webhook_retries=int(_env("CLIPTEXT_WEBHOOK_RETRIES", "5")),
            webhook_retry_intervals=_int_list(
                _env("CLIPTEXT_WEBHOOK_RETRY_INTERVALS", "10,60,300,1800,7200")
            ),
            log_format=_env("CLIPTEXT_LOG_FORMAT", "json"),
            log_level=_env("CLIPTEXT_LOG_LEVEL", "INFO").upper(),
            worker_metrics_port=int(_env("CLIPTEXT_WORKER_METRICS_PORT", "0")),
            inference_metrics_port=int(_env("CLIPTEXT_INFERENCE_METRICS_PORT", "0")),
            prometheus_multiproc_dir=_env("PROMETHEUS_MULTIPROC_DIR", ""),
            models_cache_seconds=float(_env("CLIPTEXT_MODELS_CACHE_SECONDS", "60")),
            auth_cache_seconds=float(_env("CLIPTEXT_AUTH_CACHE_SECONDS", "5")),
        )
