"""Schema fuzzing: schemathesis generates requests for every operation of /v1/openapi.json.

The real app (SQLite file, Redis db 8) answers through its WSGI interface. Every answer must be no 5xx,
a documented status, content type, body and headers, and every error the {"error": {...}} envelope.
Generation is derandomized (the same cases on every run) and bounded per operation.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

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

from api.models import Segment, Transcription, Upload, utcnow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# cases per operation and mode; with ~10 operations x 2 modes x 2 key kinds this is > 1,000 cases in all
VALID_KEY_EXAMPLES = 60
BAD_KEY_EXAMPLES = 12
ENVELOPE_KEYS = {"code", "message", "details"}


@dataclass
class Tally:
    cases: int = 0
    by_status: Counter = field(default_factory=Counter)
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
        upload = Upload.create(
            organization=org,
            filename="seed.mp3",
            content_type="audio/mpeg",
            declared_size=10,
            storage_key=f"uploads/{org.public_id}/seed",
            status="completed",
            expires_at=utcnow(),
            completed_at=utcnow(),
            duration=3.0,
        )
        row = Transcription.create(
            organization=org, upload=upload, status="completed", text=" hi", duration=3.0, language="en"
        )
        Segment.create(transcription=row, index=0, start=0.0, end=1.5, text=" hi", words=None)
    return {"transcription_id": row.public_id, "upload_id": upload.public_id, "org_id": org.public_id}


def run_operation(
    operation,
    tally: Tally,
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
        problem = envelope_problem(response)
        if problem:
            tally.failures.append(f"{case.operation.label} {mode} -> {response.status_code}: {problem}")

    try:
        fuzz()
    except Unsatisfiable:  # nothing to make invalid (e.g. no parameters and no body in negative mode)
        tally.unsatisfiable.append(f"{operation.label} {mode}")


def test_fuzz_every_operation(app, new_org, capsys):
    org, raw = new_org("enterprise", custom_rate_limit=1_000_000, custom_concurrent_uploads=1_000_000)
    ids = seed(app, org)
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8

    tally = Tally()
    valid = {"Authorization": f"Bearer {raw}"}
    key_kinds = [
        ({"Authorization": "Bearer ct_" + "x" * 43}, "unknown key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "wrong scheme"),
        ({}, "no key"),
    ]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run_operation(operation, tally, mode, valid, VALID_KEY_EXAMPLES)
        if operation.path_parameters:
            fixed = {p.name: ids[p.name] for p in operation.path_parameters if p.name in ids}
            if fixed:
                run_operation(
                    operation, tally, GenerationMode.POSITIVE, valid, VALID_KEY_EXAMPLES // 3, fixed
                )
        for headers, _ in key_kinds:
            run_operation(operation, tally, GenerationMode.POSITIVE, headers, BAD_KEY_EXAMPLES // 3)

    with capsys.disabled():
        print(
            f"\nschemathesis: {tally.cases} cases over {len(operations)} operations, "
            f"{len(tally.failures)} failures; statuses {dict(sorted(tally.by_status.items()))}"
        )
    assert tally.cases >= 1000
    assert tally.by_status.get(500, 0) == 0
    assert not tally.failures, "\n".join(tally.failures[:20])


def test_every_operation_can_be_generated(app):
    """The OpenAPI document loads and no operation has a schema schemathesis cannot use."""
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", app)
    results = list(schema.get_all_operations())
    assert [r.err() for r in results if not hasattr(r, "ok")] == []
