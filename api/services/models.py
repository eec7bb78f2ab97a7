"""The model(s) the inference servers run, for GET /v1/models (OpenAI's model list).

Asked of an inference server with DescribeModel (inference.client), cached per API process for
settings.models_cache_seconds; when no server answers, the configured model folder's name stands in
(cached briefly, so a down server is not asked on every request).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from api.errors import ApiError
from cliptext.errors import ErrorCode
from cliptext.settings import Settings

log = logging.getLogger(__name__)

OWNED_BY = "cliptext"
_FALLBACK_CACHE_SECONDS = 10.0
_DESCRIBE_TIMEOUT = 2.0


@dataclass(frozen=True)
class LoadedModel:
    id: str
    created: int  # Unix seconds the model folder was written, 0 when the API cannot see it
    languages: tuple[str, ...] = ()  # what the server said it knows; () when no server answered


_lock = threading.Lock()
_cache: dict[str, tuple[float, LoadedModel]] = {}


def _created(settings: Settings) -> int:
    try:
        return int((settings.model_dir / "config.json").stat().st_mtime)
    except OSError:
        return 0


def _describe(settings: Settings) -> tuple[LoadedModel, float]:
    from inference.client import InferenceError, TranscriberClient  # gRPC only where this is asked

    try:
        with TranscriberClient(settings.inference_addr, retries=0) as client:
            described = client.describe_model(timeout=_DESCRIBE_TIMEOUT)
        model = LoadedModel(
            described.name or settings.model_dir.name, _created(settings), tuple(described.languages)
        )
        return model, settings.models_cache_seconds
    except (InferenceError, ValueError, OSError) as error:
        log.warning("DescribeModel failed (%s); answering the configured model name", error)
        return LoadedModel(settings.model_dir.name, _created(settings)), _FALLBACK_CACHE_SECONDS


def loaded_models(settings: Settings) -> list[LoadedModel]:
    """The models to list (one: every inference server behind INFERENCE_ADDR runs the same)."""
    now = time.monotonic()
    with _lock:
        cached = _cache.get(settings.inference_addr)
        if cached is not None and cached[0] > now:
            return [cached[1]]
    model, ttl = _describe(settings)
    with _lock:
        _cache[settings.inference_addr] = (now + ttl, model)
    return [model]


def check_language(settings: Settings, language: str | None) -> None:
    """Refuse, before anything is stored or queued, a language the loaded model does not know (the job
    would fail with it after the upload). When no inference server answers, nothing is refused here:
    the job says so later."""
    if not language:
        return
    known = loaded_models(settings)[0].languages
    if not known or language in known:
        return
    if known == ("en",):
        message = f"language {language!r}: the model is English-only (give 'en' or no language)"
    else:
        message = f"unknown language {language!r}: the model knows {', '.join(known)}"
    raise ApiError(ErrorCode.VALIDATION_ERROR, message, {"field": "language"})
