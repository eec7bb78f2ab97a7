"""Schema fuzzing: schemathesis generates requests for every operation of /v1/openapi.json.

The real app (SQLite file, Redis db 8) answers through its WSGI interface. Every answer must be no 5xx,
a documented status, content type, body and headers, and every error the {"error": {...}} envelope.
Generation is derandomized (the same cases on every run) and bounded per operation.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.models import Segment, Transcription
from tests.seed import completed_upload

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# cases with a valid key, spread over the operations and both modes (kept bounded as endpoints are added)
VALID_KEY_CASES = 1250
BAD_KEY_EXAMPLES = 4  # per operation and kind of bad key
ENVELOPE_KEYS = {"code", "message", "details"}


@dataclass
class Tally:
    cases: int = 0
    by_status: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    unsatisfiable: list[str] = field(default_factory=list)


def envelope_problem(response: Any) -> str | None:
    """An error answer must be exactly {"error": {"code", "message", "details"}}."""
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        return "error body is not JSON"
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return f"error body is not the envelope: {str(body)[:200]}"
    error = body["error"]
    if set(error) != ENVELOPE_KEYS or not isinstance(error["details"], dict):
        return f"error body has keys {sorted(error)}"
    if "Traceback" in response.text or "/work/" in response.text or ".py" in response.text:
        return "error body leaks internals"
    return None


def seed(app, raw_org) -> dict[str, str]:
    """A completed transcription with segments and a pending upload, so some ids exist."""
    org = raw_org
    with app.app_context():
        upload = completed_upload(org, duration=3.0)
        row = Transcription.create(
            organization=org, upload=upload, status="completed", text=" hi", duration=3.0, language="en"
        )
        Segment.create(transcription=row, index=0, start=0.0, end=1.5, text=" hi", words=None)
    return {"transcription_id": row.public_id, "upload_id": upload.public_id, "org_id": org.public_id}


def uses_envelope(spec: dict, case: Any, status: int) -> bool:
    """Our envelope unless the operation documents another error body (the OpenAI-compatible endpoint)."""
    operation = spec["paths"][case.operation.path][case.method.lower()]
    documented = operation.get("responses", {}).get(str(status), {})
    schema = documented.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref", "#/components/schemas/Error") == "#/components/schemas/Error"


def run_operation(
    spec: dict,
    operation,
    tally: Tally,
    kind: str,
    mode: GenerationMode,
    headers: dict[str, str],
    examples: int,
    path_parameters: dict[str, str] | None = None,
) -> None:
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(case=strategy)
    def fuzz(case) -> None:
        tally.cases += 1
        tally.by_kind[kind] += 1
        try:
            response = case.call(headers=headers)
        except Exception as error:  # the transport itself failed: count it as a failure
            tally.failures.append(f"{case.operation.label} {mode}: call raised {error!r}")
            return
        tally.by_status[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (AssertionError, FailureGroup) as error:
            tally.failures.append(f"{case.operation.label} {mode} -> {response.status_code}: {error}"[:1500])
        problem = envelope_problem(response) if uses_envelope(spec, case, response.status_code) else None
        if problem:
            tally.failures.append(f"{case.operation.label} {mode} -> {response.status_code}: {problem}")

    try:
        fuzz()
    except Unsatisfiable:  # nothing to make invalid (e.g. no parameters and no body in negative mode)
        tally.unsatisfiable.append(f"{operation.label} {mode}")


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_fuzz_every_operation(app, client, new_org, capsys):
    org, raw = new_org("enterprise", custom_rate_limit=1_000_000, custom_concurrent_uploads=1_000_000)
    ids = seed(app, org)
    spec = client.get("/v1/openapi.json").get_json()
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8

    per_run = math.ceil(VALID_KEY_CASES / (2 * len(operations)))
    tally = Tally()
    valid = {"Authorization": f"Bearer {raw}"}
    bad_keys = [
        {"Authorization": "Bearer ct_" + "x" * 43},  # well formed, unknown
        {"Authorization": "Basic dXNlcjpwYXNz"},  # wrong scheme
        {},  # none
    ]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run_operation(spec, operation, tally, "valid key", mode, valid, per_run)
        fixed = {p.name: ids[p.name] for p in operation.path_parameters if p.name in ids}
        if fixed:  # existing ids too, so the 200 answers are checked against their schemas
            run_operation(
                spec,
                operation,
                tally,
                "valid key",
                GenerationMode.POSITIVE,
                valid,
                per_run // 3,
                fixed,
            )
        for headers in bad_keys:
            run_operation(
                spec, operation, tally, "bad key", GenerationMode.POSITIVE, headers, BAD_KEY_EXAMPLES
            )

    with capsys.disabled():
        print(
            f"\nschemathesis: {tally.cases} cases ({dict(tally.by_kind)}) over {len(operations)} operations, "
            f"{len(tally.failures)} failures; statuses {dict(sorted(tally.by_status.items()))}"
        )
    assert tally.by_kind["valid key"] >= 1000 and tally.by_kind["bad key"] >= 100
    assert tally.by_status.get(500, 0) == 0
    assert not tally.failures, "\n".join(tally.failures[:20])


def test_every_operation_can_be_generated(app):
    """The OpenAPI document loads and no operation has a schema schemathesis cannot use."""
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", app)
    results = list(schema.get_all_operations())
    assert [r.err() for r in results if not hasattr(r, "ok")] == []
