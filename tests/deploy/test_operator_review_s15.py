"""An operator's URL settings with a typo stop every process at start with one line naming the variable
(never a traceback, never the password in it), and CLIPTEXT_JOB_RETRY_INTERVALS alone sets how long a
job waits out an inference outage (compose passes no CLIPTEXT_JOB_RETRIES)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cliptext.settings import Settings, SettingsError
from tests.deploy.test_settings_errors import ENTRY_POINTS

ROOT = Path(__file__).resolve().parents[2]

BAD_URLS = [
    ("DATABASE_URL", "mysql://cliptext:hunter2@db:3306/cliptext"),
    ("DATABASE_URL", "cliptext:hunter2@db:5432/cliptext"),
    ("DATABASE_URL", "postgresql://cliptext:hunter2@db:54x2/cliptext"),
    ("REDIS_URL", "http://redis:6379/0"),
    ("REDIS_URL", "127.0.0.1:6379"),
    ("STORAGE_URL", "gs://bucket/uploads"),
    ("STORAGE_URL", "s3://"),
    ("CLIPTEXT_PUBLIC_URL", "api.example.com"),
    ("CLIPTEXT_PUBLIC_URL", "127.0.0.1:8080"),
    ("CLIPTEXT_PUBLIC_URL", "https://"),
    ("S3_PUBLIC_ENDPOINT_URL", "s3.example.com"),
    ("AWS_ENDPOINT_URL", "minio:9000"),
]

GOOD_URLS = {
    "DATABASE_URL": "postgresql://cliptext:p@ss/w0rd@db.internal:5432/cliptext",
    "REDIS_URL": "rediss://:secret@redis.internal:6380/2",
    "STORAGE_URL": "s3://cliptext/uploads",
    "CLIPTEXT_PUBLIC_URL": "https://api.example.com/cliptext/",
    "S3_PUBLIC_ENDPOINT_URL": "https://s3.example.com",
    "AWS_ENDPOINT_URL": "http://minio:9000",
}


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLIPTEXT_DATA_DIR", str(tmp_path))
    for name in (*GOOD_URLS, "CLIPTEXT_JOB_RETRIES", "CLIPTEXT_JOB_RETRY_INTERVALS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.mark.parametrize(("name", "value"), BAD_URLS)
def test_a_mistyped_url_is_refused_naming_the_variable(data_dir, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        Settings.from_env()
    message = str(refused.value)
    assert message.startswith(f"{name} must be ")
    assert "hunter2" not in message  # a database password never reaches the logs


def test_good_urls_are_read_as_given(data_dir, monkeypatch):
    for name, value in GOOD_URLS.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.database_url == GOOD_URLS["DATABASE_URL"]
    assert settings.redis_url == GOOD_URLS["REDIS_URL"]
    assert settings.storage_url == GOOD_URLS["STORAGE_URL"]
    assert settings.public_base_url == GOOD_URLS["CLIPTEXT_PUBLIC_URL"]
    assert settings.storage_public_endpoint == GOOD_URLS["S3_PUBLIC_ENDPOINT_URL"]


def test_local_defaults_and_bare_storage_paths_are_accepted(data_dir, monkeypatch):
    monkeypatch.setenv("STORAGE_URL", str(data_dir / "storage"))
    monkeypatch.setenv("REDIS_URL", "unix:///run/redis/redis.sock?db=3")
    assert Settings.from_env().storage_url == str(data_dir / "storage")


def test_every_interval_is_a_retry_unless_retries_are_set(data_dir, monkeypatch):
    """compose passes CLIPTEXT_JOB_RETRY_INTERVALS but not CLIPTEXT_JOB_RETRIES: six intervals gave
    four retries, so a job failed after 6.7 min of outage where the operator had configured 52."""
    assert Settings.from_env().job_retries == 4  # the default four intervals
    monkeypatch.setenv("CLIPTEXT_JOB_RETRY_INTERVALS", "10,30,90,270,900,1800")
    assert Settings.from_env().job_retries == 6
    monkeypatch.setenv("CLIPTEXT_JOB_RETRIES", "2")
    assert Settings.from_env().job_retries == 2


PROCESSES = {
    "worker": ENTRY_POINTS["worker"],
    "flask CLI": [sys.executable, "-m", "flask", "--app", "api", "orgs", "create", "A", "--owner", "a@b.c"],
    "gunicorn": ENTRY_POINTS["gunicorn"],
}


@pytest.mark.parametrize("process", list(PROCESSES))
@pytest.mark.parametrize(
    ("name", "value"), [("STORAGE_URL", "gs://bucket/uploads"), ("CLIPTEXT_PUBLIC_URL", "api.example.com")]
)
def test_a_process_with_a_mistyped_url_stops_with_one_line(tmp_path, process, name, value):
    """A worker given gs:// started and failed every job; an API given a host without a scheme sent
    clients links relative to their own page."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CLIPTEXT_DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cliptext.db'}",
        "REDIS_URL": "redis://127.0.0.1:1/0",  # nothing is reached before the settings are read
        name: value,
    }
    done = subprocess.run(PROCESSES[process], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"configuration error: {name} must be " in done.stderr


@pytest.mark.parametrize("command", [["db", "upgrade"], ["keys", "list", "--org", "org_x"]])
def test_the_cli_names_database_url_when_the_database_does_not_answer(tmp_path, command):
    """compose's `migrate` started before a managed database answered printed a traceback."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CLIPTEXT_DATA_DIR": str(tmp_path),
        "DATABASE_URL": "postgresql://cliptext:hunter2@127.0.0.1:1/cliptext",  # nothing listens on port 1
    }
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "api", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr
    assert done.stderr.startswith("Error: cannot open the database at DATABASE_URL: ")
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_password_in_the_query_string_is_not_printed(monkeypatch):
    """libpq and playhouse.db_url read `?password=`: a misspelt scheme printed it whole."""
    monkeypatch.setenv("DATABASE_URL", "postgresq://db.internal/cliptext?user=app&password=S3cretPW")
    with pytest.raises(SettingsError) as refused:
        Settings.from_env()
    assert "S3cretPW" not in str(refused.value) and "db.internal/cliptext?***" in str(refused.value)


def test_a_password_in_a_keyword_connection_string_is_not_printed(monkeypatch):
    """libpq's keyword form is refused (DATABASE_URL takes a URL), and its password was printed whole."""
    monkeypatch.setenv("DATABASE_URL", "host=db.internal user=cliptext password=S3cretPw dbname=cliptext")
    with pytest.raises(SettingsError) as refused:
        Settings.from_env()
    assert "S3cretPw" not in str(refused.value) and "password=***" in str(refused.value)
