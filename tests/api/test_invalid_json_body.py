"""A JSON body that does not parse is answered "not valid JSON", with where, on every JSON endpoint.

It was answered in the envelope but with Werkzeug's stock "The browser (or proxy) sent a request that
this server could not understand.", which names neither the body nor JSON. Two parsers read these
bodies (webargs for the @blp.arguments endpoints, Flask's get_json for POST /v1/transcriptions): both
must say the same, with the same status and code as before.
"""

from __future__ import annotations

import pytest

from tests.api.test_api_errors_limits import assert_envelope

ENDPOINTS = [
    "/v1/transcriptions",
    "/v1/uploads/presigned",
    "/v1/uploads/complete",
    "/v1/orgs/{org}/members",
    "/v1/orgs/{org}/keys",
]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "{bad",
            "The request body is not valid JSON: "
            "Expecting property name enclosed in double quotes (line 1, column 2)",
        ),
        (
            '{\n  "upload_id": "upl_x",\n  "language": en\n}',
            "The request body is not valid JSON: Expecting value (line 3, column 15)",
        ),
    ],
)
def test_a_body_that_is_not_json_says_so_and_where(client, new_org, path, body, expected):
    org, headers = new_org("pro")
    response = client.post(
        path.format(org=org.public_id), data=body, headers=headers, content_type="application/json"
    )
    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert error["message"] == expected


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_number_python_cannot_read_is_named_as_the_json_problem(client, new_org, path):
    """Valid JSON that Python's reader refuses (an integer past 4,300 digits) names the reason."""
    org, headers = new_org("pro")
    response = client.post(
        path.format(org=org.public_id),
        data='{"upload_id": ' + "1" * 4301 + "}",
        headers=headers,
        content_type="application/json",
    )
    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert error["message"].startswith("The request body could not be read as JSON: Exceeds the limit")
