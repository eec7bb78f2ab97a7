"""compose.yaml, the Dockerfile and .env.example against the code they start (no Docker engine needed).

Every command must name a module, app factory, CLI command or console script that exists; every
variable given to our containers must be one the code (cliptext/settings.py) or a library it uses reads;
every ${VAR} compose interpolates must be documented in .env.example, and nothing there may be unused.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
ENV_EXAMPLE = ROOT / ".env.example"
# services running our image (built from this repository's Dockerfile)
OURS = sorted(name for name, svc in SERVICES.items() if str(svc.get("image", "")).startswith("cliptext-"))
# read by libraries rather than by cliptext.settings: name -> the package whose source reads it
LIBRARY_VARIABLES = {
    "AWS_ACCESS_KEY_ID": "botocore",
    "AWS_SECRET_ACCESS_KEY": "botocore",
    "AWS_DEFAULT_REGION": "botocore",
    "AWS_ENDPOINT_URL": "botocore",
    "WEB_CONCURRENCY": "gunicorn",
}
# console scripts built on click with auto_envvar_prefix: PREFIX_<OPTION> sets --option
CLICK_ENV_PREFIXES = {"RQ_DASHBOARD_": ("rq_dashboard.cli", "run", "RQ_DASHBOARD")}
# read by docker compose itself (.env), not by a container
COMPOSE_VARIABLES = {"COMPOSE_PROFILES"}


def settings_variables() -> set[str]:
    """The environment variable names cliptext/settings.py reads (literals of its readers, environ.get)."""
    tree = ast.parse((ROOT / "cliptext" / "settings.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        called = (
            func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        )
        first = node.args[0]
        if (
            called in {"_env", "_int", "_float", "_choice", "_flag", "_int_list", "_origins", "get", "getenv"}
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
        ):
            names.add(first.value)
    return names


def click_option_from_env(variable: str) -> bool:
    """True when `variable` is PREFIX_<OPTION> of a click command that reads PREFIX_* (auto_envvar_prefix)."""
    for prefix, (module_name, command_name, envvar_prefix) in CLICK_ENV_PREFIXES.items():
        if not variable.startswith(prefix):
            continue
        module = importlib.import_module(module_name)
        source = Path(module.__file__).read_text()
        assert f'auto_envvar_prefix="{envvar_prefix}"' in source, f"{module_name} no longer reads {prefix}*"
        command = getattr(module, command_name)
        return variable[len(prefix) :].lower() in {param.name for param in command.params}
    return False


def package_source_mentions(package: str, name: str) -> bool:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
    folder = Path(next(iter(spec.submodule_search_locations)))
    return any(name in path.read_text(errors="ignore") for path in folder.rglob("*.py"))


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def module_exists(module: str) -> bool:
    """`python -m module` would find it in the repository (a module file or a package with __main__)."""
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()


def defines_function(module: str, name: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(source.read_text())
    return any(isinstance(node, ast.FunctionDef) and node.name == name for node in tree.body)


def console_script_exists(name: str) -> bool:
    return any(ep.name == name for ep in importlib.metadata.entry_points(group="console_scripts"))


def copied_sources() -> list[str]:
    """The build-context paths of every COPY (not COPY --from another stage)."""
    sources = []
    for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE, re.M):
        sources.extend(line.split()[:-1])
    assert sources, "no COPY found in the Dockerfile"
    return sources


def check_command(argv: list[str]) -> None:
    """Fail unless what `argv` starts exists in this repository or its installed dependencies."""
    program = argv[0]
    if program in {"python", "python3"}:
        assert argv[1] == "-m", argv
        assert module_exists(argv[2]), f"python -m {argv[2]}: no such module in the repository"
    elif program == "gunicorn":
        spec = argv[-1]  # APP_MODULE comes last
        module, _, factory = spec.partition(":")
        assert factory.endswith("()"), f"gunicorn {spec}: expected an app factory call"
        assert defines_function(module, factory[:-2]), f"gunicorn {spec}: {module} has no {factory[:-2]}"
    elif program == "flask":
        assert argv[1:3] == ["--app", "api"], argv
        from flask import Flask

        from api.cli import register_cli

        app = Flask("probe")
        register_cli(app)
        group = app.cli.commands[argv[3]]
        assert argv[4] in group.commands, f"flask --app api {argv[3]} has no command {argv[4]}"
    else:
        assert console_script_exists(program), f"{program}: no such console script installed"


@pytest.mark.parametrize("name", [name for name in OURS if command_of(SERVICES[name])])
def test_service_command_exists(name: str) -> None:
    check_command(command_of(SERVICES[name]))


def test_every_service_of_ours_has_a_command_or_image_default() -> None:
    assert {"api", "worker", "migrate", "rq-dashboard", "inference", "inference-cpu"} <= set(OURS)
    assert all(command_of(SERVICES[name]) for name in OURS if SERVICES[name]["build"]["target"] == "app")


def test_dockerfile_commands_exist() -> None:
    for match in re.finditer(r"^CMD (\[.*\])$", DOCKERFILE, re.M):
        check_command(ast.literal_eval(match.group(1)))
    for module in re.findall(r"python -m ([\w.]+)", DOCKERFILE):
        assert module_exists(module), f"Dockerfile runs python -m {module}: no such module"
    for source in copied_sources():
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is missing"


def test_dockerfile_targets_used_by_compose() -> None:
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", DOCKERFILE, re.M))
    for name in OURS:
        build = SERVICES[name]["build"]
        assert build["target"] in targets, f"{name} builds target {build['target']}, not in the Dockerfile"
    assert {"app", "inference", "inference-cpu"} <= targets


@pytest.mark.parametrize("name", OURS)
def test_environment_is_read_by_the_code(name: str) -> None:
    known = settings_variables()
    environment = SERVICES[name].get("environment") or {}
    assert isinstance(environment, dict), f"{name}: use the mapping form of environment"
    for variable in environment:
        if variable in known or click_option_from_env(variable):
            continue
        assert variable in LIBRARY_VARIABLES, f"{name} sets {variable}, which nothing reads"
        package = LIBRARY_VARIABLES[variable]
        assert package_source_mentions(package, variable), f"{package} does not read {variable}"


def test_dockerfile_environment_is_read_by_the_code() -> None:
    known = settings_variables()
    python_variables = {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PIP_NO_CACHE_DIR"}
    python_variables |= {
        "PIP_DISABLE_PIP_VERSION_CHECK",
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
    }
    for block in re.findall(r"^ENV ((?:.*\\\n)*.*)$", DOCKERFILE, re.M):
        for variable in re.findall(r"(\w+)=", block):
            assert variable in known | python_variables, f"Dockerfile sets {variable}, which nothing reads"


def test_settings_parser_finds_the_known_names() -> None:
    """The AST scan above must really see settings.py's names (else every check would be vacuous)."""
    names = settings_variables()
    assert {"DATABASE_URL", "REDIS_URL", "STORAGE_URL", "INFERENCE_ADDR", "CLIPTEXT_SECRET_KEY"} <= names


def env_example_names() -> set[str]:
    names = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            names.add(line.split("=", 1)[0].strip())
    return names


def test_interpolated_variables_are_documented_in_env_example() -> None:
    text = (ROOT / "compose.yaml").read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    documented = env_example_names()
    assert used - documented == set(), "compose.yaml uses variables .env.example does not document"
    assert documented - used - COMPOSE_VARIABLES == set(), ".env.example has variables nothing uses"


def test_secrets_have_no_defaults() -> None:
    """Secrets must come from .env: compose refuses to start without them (${VAR:?...})."""
    text = (ROOT / "compose.yaml").read_text()
    for secret in ("CLIPTEXT_SECRET_KEY", "POSTGRES_PASSWORD", "CLIPTEXT_ADMIN_PASSWORD"):
        uses = re.findall(rf"\$\{{{secret}([^}}]*)\}}", text)
        assert uses and all(use.startswith(":?") for use in uses), f"{secret} must be required (:?)"
        line = next(line for line in ENV_EXAMPLE.read_text().splitlines() if line.startswith(f"{secret}="))
        assert line == f"{secret}=", f".env.example must not ship a value for {secret}"


def test_scalable_and_gpu_services() -> None:
    worker = SERVICES["worker"]
    assert "ports" not in worker and "container_name" not in worker, "worker must scale (--scale worker=N)"
    assert command_of(worker) == ["python", "-m", "jobs.worker"]
    devices = SERVICES["inference"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert SERVICES["inference"]["profiles"] == ["gpu"] and SERVICES["inference-cpu"]["profiles"] == ["cpu"]
    for name in ("inference", "inference-cpu"):
        assert "inference" in SERVICES[name]["networks"]["default"]["aliases"]
        assert SERVICES[name]["environment"]["INFERENCE_ADDR"] == "0.0.0.0:50051"
    assert SERVICES["worker"]["environment"]["INFERENCE_ADDR"].endswith("dns:///inference:50051}")


def test_webhooks_have_a_worker_of_their_own() -> None:
    """A worker takes a webhook only when no transcription waits: with one backlog, events came hours late."""
    webhooks = SERVICES["webhook-worker"]
    assert command_of(webhooks) == ["python", "-m", "jobs.worker", "--queues", "webhooks"]
    assert webhooks["environment"] == SERVICES["worker"]["environment"]
    assert webhooks["healthcheck"] == SERVICES["worker"]["healthcheck"]


def test_healthchecks_are_valid_python() -> None:
    for name, service in SERVICES.items():
        test = (service.get("healthcheck") or {}).get("test") or []
        if test[:3] == ["CMD", "python", "-c"]:
            ast.parse(test[3], filename=f"{name} healthcheck")


def test_named_volumes_are_declared() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    for name, service in SERVICES.items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in copied_sources():
        assert source not in ignored, f".dockerignore hides {source}, which the Dockerfile copies"


# --- what each container really gets: compose.yaml interpolated from an operator's .env -------------


def _interpolate(text: str, env: dict[str, str]) -> str:
    """docker compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error} (nested)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if not text.startswith("${", i):
            out.append(text[i])
            i += 1
            continue
        depth, j = 1, i + 2
        while depth:
            if text.startswith("${", j):
                depth, j = depth + 1, j + 2
            else:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
        inner = text[i + 2 : j - 1]
        name, op, arg = re.match(r"(\w+)(:?[-?])?(.*)", inner, re.S).groups()
        value = env.get(name)
        missing = not value if op and op.startswith(":") else value is None
        if op in {":-", "-"} and missing:
            value = _interpolate(arg, env)
        elif op in {":?", "?"} and missing:
            raise AssertionError(f"compose would refuse to start: {arg}")
        out.append(value or "")
        i = j
    return "".join(out)


def operator_env(**overrides: str) -> dict[str, str]:
    """.env.example as an operator fills it in (every empty secret given a value), plus `overrides`."""
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            env[name.strip()] = value
    for secret in (
        "CLIPTEXT_SECRET_KEY",
        "POSTGRES_PASSWORD",
        "CLIPTEXT_ADMIN_PASSWORD",
        "AWS_SECRET_ACCESS_KEY",
    ):
        env[secret] = env[secret] or f"filled-{secret.lower()}"
    env.update(overrides)
    return env


def dockerfile_env() -> dict[str, str]:
    pairs: dict[str, str] = {}
    for block in re.findall(r"^ENV ((?:.*\\\n)*.*)$", DOCKERFILE, re.M):
        pairs.update(re.findall(r"(\w+)=(\S+)", block))
    return pairs


def container_settings(name: str, dotenv: dict[str, str], data_dir: Path):
    """cliptext.settings.Settings as service `name` builds it: the image's ENV, then its environment."""
    from unittest import mock

    from cliptext.settings import Settings

    environment = {k: _interpolate(str(v), dotenv) for k, v in SERVICES[name]["environment"].items()}
    env = {**dockerfile_env(), **environment, "CLIPTEXT_DATA_DIR": str(data_dir)}
    with mock.patch.dict("os.environ", env, clear=True):
        return Settings.from_env()


APP_SERVICES = ("api", "worker", "migrate")
INFERENCE_SERVICES = ("inference", "inference-cpu")


def test_operator_settings_reach_every_container_that_reads_them(tmp_path: Path) -> None:
    """An operator's .env reaches each process that reads the setting, not only one of them: the workers
    write CLIPTEXT_PUBLIC_URL into webhook payloads, the API dials the inference server for GET /v1/models,
    the API and the workers apply CLIPTEXT_MAX_AUDIO_SECONDS too, and the documented knobs reach anyone."""
    dotenv = operator_env(
        CLIPTEXT_PUBLIC_URL="https://api.example.com",
        CLIPTEXT_MAX_AUDIO_SECONDS="600",
        CLIPTEXT_MAX_AUDIO_BYTES="1000",
        CLIPTEXT_WEBHOOK_ALLOW_PRIVATE="1",
        CLIPTEXT_LOG_LEVEL="DEBUG",
        CLIPTEXT_LOG_FORMAT="text",
        CLIPTEXT_AUTH_CACHE_SECONDS="0",
        CLIPTEXT_SHUTDOWN_GRACE="12",
        CLIPTEXT_WEBHOOK_TIMEOUT="3",
        CLIPTEXT_OPENAI_WAIT_SECONDS="7",
    )
    for name in APP_SERVICES:
        got = container_settings(name, dotenv, tmp_path)
        assert got.public_base_url == "https://api.example.com", name
        assert got.inference_addr == "dns:///inference:50051", name
        assert got.max_audio_seconds == 600, name
        assert got.webhook_allow_private is True, name
        assert got.auth_cache_seconds == 0, name
        assert got.webhook_timeout == 3 and got.openai_wait_seconds == 7, name
    for name in INFERENCE_SERVICES:
        got = container_settings(name, dotenv, tmp_path)
        assert got.max_audio_seconds == 600 and got.max_audio_bytes == 1000, name
        assert got.inference_grace_seconds == 12, name
        assert got.inference_addr == "0.0.0.0:50051", name
    for name in OURS:
        got = container_settings(name, dotenv, tmp_path)
        assert (got.log_level, got.log_format) == ("DEBUG", "text"), name
    # an operator's own inference address reaches the API as well as the workers
    elsewhere = operator_env(INFERENCE_ADDR="dns:///inference.internal:50051")
    for name in ("api", "worker"):
        assert (
            container_settings(name, elsewhere, tmp_path).inference_addr == "dns:///inference.internal:50051"
        )


def test_compose_defaults_are_the_code_defaults(tmp_path: Path) -> None:
    """With nothing set in .env but the secrets, compose's ${VAR:-default} give what the code would."""
    from unittest import mock

    from cliptext.settings import Settings

    dotenv = {k: v for k, v in operator_env().items() if k in {"POSTGRES_PASSWORD", "CLIPTEXT_SECRET_KEY"}}
    dotenv["CLIPTEXT_ADMIN_PASSWORD"] = "x"
    with mock.patch.dict("os.environ", {"CLIPTEXT_DATA_DIR": str(tmp_path)}, clear=True):
        code = Settings.from_env()
    fields = (
        "max_audio_seconds",
        "max_audio_bytes",
        "max_upload_bytes",
        "webhook_allow_private",
        "webhook_timeout",
        "webhook_retries",
        "webhook_retry_intervals",
        "job_orphan_grace",
        "auth_cache_seconds",
        "openai_wait_seconds",
        "models_cache_seconds",
        "inference_grace_seconds",
        "inference_upload_idle_seconds",
        "inference_keepalive_seconds",
        "log_level",
        "log_format",
    )
    for name in OURS:
        got = container_settings(name, dotenv, tmp_path)
        for field in fields:
            assert getattr(got, field) == getattr(code, field), f"{name}: {field}"


def test_documented_settings_reach_a_container() -> None:
    """Every setting the README or docs/ name is given to at least one of our containers (compose or
    the image's ENV): documented, it must be settable in a deployment."""
    text = (ROOT / "README.md").read_text() + "".join(
        path.read_text() for path in sorted((ROOT / "docs").glob("*.md"))
    )
    documented = {name for name in settings_variables() if re.search(rf"\b{name}\b", text)}
    given = set(dockerfile_env())
    for name in OURS:
        given |= set(SERVICES[name].get("environment") or {})
    assert {"CLIPTEXT_MAX_AUDIO_BYTES", "CLIPTEXT_SHUTDOWN_GRACE"} <= documented  # the scan sees them
    assert documented - given == set(), "documented settings no container is given"


def test_operator_dashboard_is_on_localhost_only() -> None:
    """The API port serves no /admin/rq: the api service never gets the operator credentials. The
    dashboard is its own service, published on the host's loopback address only."""
    for name in OURS:
        if name == "rq-dashboard":
            continue
        environment = SERVICES[name].get("environment") or {}
        assert "CLIPTEXT_ADMIN_USER" not in environment and "CLIPTEXT_ADMIN_PASSWORD" not in environment, name
    dashboard = SERVICES["rq-dashboard"]
    assert {"CLIPTEXT_ADMIN_USER", "CLIPTEXT_ADMIN_PASSWORD", "REDIS_URL"} <= set(dashboard["environment"])
    assert dashboard["ports"] and all(str(port).startswith("127.0.0.1:") for port in dashboard["ports"])


def test_dashboard_service_serves_the_protected_mount() -> None:
    """Not rq-dashboard's own CLI (Werkzeug's dev server, no cross-site protection): api.admin's
    dashboard under gunicorn with the project's gunicorn settings."""
    argv = command_of(SERVICES["rq-dashboard"])
    assert argv[0] == "gunicorn" and "--config=python:api.gunicorn_conf" in argv, argv
    assert argv[-1] == "api.admin:create_dashboard_app()", argv
    assert not any(a.startswith("--bind=") and not a.endswith(":9181") for a in argv), argv


def test_api_gets_longer_to_stop_than_gunicorn_gives_its_requests() -> None:
    """Docker's default 10 s would SIGKILL requests gunicorn still lets finish (graceful_timeout)."""
    from api import gunicorn_conf

    grace = SERVICES["api"].get("stop_grace_period")
    assert grace, "api has no stop_grace_period (Docker's default is 10 s)"
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(grace))
    assert match and any(match.groups()), grace
    seconds = int(match.group(1) or 0) * 60 + int(match.group(2) or 0)
    assert seconds > gunicorn_conf.graceful_timeout, (seconds, gunicorn_conf.graceful_timeout)
    flags = [a for a in command_of(SERVICES["api"]) if a.startswith("--graceful-timeout")]
    assert not flags, "the graceful timeout lives in api/gunicorn_conf.py"
