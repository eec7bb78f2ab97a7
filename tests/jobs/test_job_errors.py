"""jobs/errors.classify: what each failure means for the job (its code, and whether to retry)."""

from __future__ import annotations

import boto3.exceptions
import botocore.exceptions
import grpc
import pytest

from cliptext.errors import ErrorCode
from inference.client import InferenceError
from inference.types import EngineError
from jobs.errors import classify

STORAGE_DOWN = [
    botocore.exceptions.EndpointConnectionError(endpoint_url="http://minio:9000/cliptext"),
    botocore.exceptions.ConnectTimeoutError(endpoint_url="http://minio:9000/cliptext"),
    botocore.exceptions.NoCredentialsError(),
    botocore.exceptions.ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetObject"),
    botocore.exceptions.ClientError({"Error": {"Code": "SlowDown", "Message": "busy"}}, "GetObject"),
]


@pytest.mark.parametrize("error", STORAGE_DOWN, ids=lambda e: type(e).__name__)
def test_object_storage_that_cannot_answer_is_retried(error):
    failure = classify(error)
    assert failure.code == ErrorCode.SERVICE_UNAVAILABLE and failure.transient
    assert "storage" in failure.message and "minio" not in failure.message


@pytest.mark.parametrize(
    ("error", "code", "transient"),
    [
        (InferenceError(grpc.StatusCode.UNAVAILABLE, "", "down"), ErrorCode.INFERENCE_UNAVAILABLE, True),
        (
            InferenceError(grpc.StatusCode.INVALID_ARGUMENT, "NO_AUDIO_STREAM", "x"),
            ErrorCode.NO_AUDIO_STREAM,
            False,
        ),
        (EngineError(ErrorCode.AUDIO_DECODE_ERROR, "bad"), ErrorCode.AUDIO_DECODE_ERROR, False),
        (ValueError("bug"), ErrorCode.INTERNAL, False),
    ],
)
def test_other_failures_keep_their_meaning(error, code, transient):
    failure = classify(error)
    assert (failure.code, failure.transient) == (code, transient)


def test_a_transfer_that_broke_off_is_retried_and_names_no_internals():
    cause = botocore.exceptions.ReadTimeoutError(
        endpoint_url="http://minio:9000/cliptext/uploads/org_a/upl_b"
    )
    failure = classify(boto3.exceptions.RetriesExceededError(cause))
    assert failure.code == ErrorCode.SERVICE_UNAVAILABLE and failure.transient
    assert "minio" not in failure.message and "upl_b" not in failure.message
