"""`make run`: the whole local stack in the foreground, stopped together on Ctrl-C.

Redis (a throwaway one when none answers at REDIS_URL), the inference server, one worker and the
API on 127.0.0.1:8000, on embedded defaults: SQLite and local file storage in ./data. The API listens
where CLIPTEXT_PUBLIC_URL points (so presigned URLs reach it), the inference server at INFERENCE_ADDR.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from urllib.error import URLError
from urllib.parse import urlsplit
from urllib.request import urlopen

from cliptext import local_services
from cliptext.settings import Settings, settings_or_exit


def _start(name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
    print(f"[stack] starting {name}: {' '.join(command)}", flush=True)
    # its own session: Ctrl-C reaches the stack alone, which stops the worker before the servers it uses;
    # ended with the stack even when that is SIGKILLed (they held the ports, and the next run refused)
    return subprocess.Popen(
        command, env=env, start_new_session=True, preexec_fn=local_services.ends_with_parent()
    )


def _wait_for_http(url: str, processes: dict[str, subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_alive(processes)
        with contextlib.suppress(URLError, OSError), urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def _wait_for_inference(addr: str, processes: dict[str, subprocess.Popen], timeout: float) -> None:
    import grpc  # noqa: PLC0415
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            _check_alive(processes)
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.3)
    raise RuntimeError(f"the inference server at {addr} was not SERVING within {timeout:.0f} s")


def _check_alive(processes: dict[str, subprocess.Popen]) -> None:
    for name, process in processes.items():
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode}")


def _stop(processes: dict[str, subprocess.Popen]) -> None:
    # a second Ctrl-C, SIGTERM or SIGHUP must not cut the clean-up short and leave children running
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    if processes:
        print("\n[stack] stopping", flush=True)
    for process in processes.values():
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def _dev_key(env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "api", "dev-key"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip().splitlines()[-1]


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _free(host: str, port: int, what: str, setting: str) -> None:
    """Refuse to start beside whatever holds a port: its health check would pass for ours (a second
    `make run` printed a key that the stack answering on the port had never issued)."""
    if local_services.answers(host, port):
        raise RuntimeError(
            f"{host}:{port} ({what}) is already in use, by another `make run` or something else: "
            f"stop it, or set {setting}"
        )


def main() -> int:
    # stop everything on Ctrl-C, SIGTERM and SIGHUP (the terminal closed). SIGINT explicitly: a background
    # job of a non-interactive shell starts with it ignored, and Python then leaves it ignored
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        return _run(settings_or_exit())
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:  # what could not start, said in one line
        print(f"[stack] {exc}", file=sys.stderr, flush=True)
        return 1


def _run(settings: Settings) -> int:
    public = urlsplit(settings.public_base_url)
    api_host, api_port = public.hostname or "127.0.0.1", public.port or 80
    _free(api_host, api_port, "the API", "CLIPTEXT_PUBLIC_URL, e.g. http://127.0.0.1:8080")
    inference_host, _, inference_port = settings.inference_addr.rpartition(":")
    _free(
        inference_host.strip("[]"),
        int(inference_port),
        "the inference server",
        "INFERENCE_ADDR, e.g. 127.0.0.1:50052",
    )
    python = sys.executable
    processes: dict[str, subprocess.Popen] = {}
    with (
        local_services.redis(settings.redis_url) as redis_url,
        tempfile.TemporaryDirectory(prefix="cliptext-metrics-") as metrics_dir,
    ):
        env = dict(os.environ, REDIS_URL=redis_url, PYTHONUNBUFFERED="1")
        # the API's /metrics adds up both gunicorn processes (api.gunicorn_conf), not whichever answered
        api_env = {**env, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}  # a stale inherited folder must not win
        try:
            processes["inference"] = _start("inference server", [python, "-m", "inference.server"], env)
            processes["api"] = _start(
                "api",
                [
                    python,
                    "-m",
                    "gunicorn",
                    "--config",
                    "python:api.gunicorn_conf",
                    "--bind",
                    f"{api_host}:{api_port}",
                    "--workers",
                    "2",
                    "--threads",
                    "4",
                    "api:create_app()",
                ],
                api_env,
            )
            _wait_for_http(f"http://{api_host}:{api_port}/v1/health", processes, timeout=60)
            processes["worker"] = _start("worker", [python, "-m", "jobs.worker"], env)
            # webhooks while transcriptions queue up (the worker above takes one only when none waits)
            webhooks = [python, "-m", "jobs.worker", "--queues", "webhooks"]
            quiet = {**env, "CLIPTEXT_WORKER_METRICS_PORT": "0"}  # the port, when set, is the worker's
            processes["webhook-worker"] = _start("webhook-worker", webhooks, quiet)
            _wait_for_inference(settings.inference_addr, processes, timeout=120)
            key = _dev_key(env)
            base = f"{settings.public_base_url.rstrip('/')}/v1"
            print(
                "\n[stack] Cliptext is ready.\n"
                f"  API:      {base}  (docs: {base}/docs)\n"
                f"  API key:  {key}\n"
                "  Try it:\n"
                f"    curl -s -H 'Authorization: Bearer {key}' -F file=@../shared/audio/jfk.mp3 "
                f"{base}/transcriptions\n"
                "  Ctrl-C stops everything.\n",
                flush=True,
            )
            while True:
                _check_alive(processes)
                time.sleep(1)
        finally:
            _stop(processes)


if __name__ == "__main__":
    sys.exit(main())
