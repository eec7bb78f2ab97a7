"""Fixtures of the reliability tests: the exported model and a throwaway Redis of their own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference.export import DEFAULT_NAME, default_source, export
from tests.jobs.stack import ROOT
from tests.reliability.redis_server import RedisServer


@pytest.fixture(scope="session")
def model_dir() -> Path:
    configured = os.environ.get("CLIPTEXT_MODEL_DIR")
    if configured:
        return Path(configured).resolve()
    export(default_source(), ROOT / "models", DEFAULT_NAME, ("fp32", "int8", "fp16"))
    return ROOT / "models" / DEFAULT_NAME


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
