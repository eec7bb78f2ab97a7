"""grpcurl's `describe <service>.<method>` asks reflection for the file containing the method's full
name: grpcio-reflection answered NOT_FOUND for every method (grpc/grpc#34743)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.server.conftest import ServerProcess


def _file_containing(server: ServerProcess, symbol: str) -> reflection_pb2.ServerReflectionResponse:
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
    with grpc.insecure_channel(server.addr) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (response,) = stub.ServerReflectionInfo(iter([request]), timeout=10)
    return response


@pytest.mark.parametrize(
    ("symbol", "file"),
    [
        ("cliptext.inference.v1.Transcriber.Transcribe", "cliptext/inference/v1/transcriber.proto"),
        ("cliptext.inference.v1.Transcriber.DescribeModel", "cliptext/inference/v1/transcriber.proto"),
        ("grpc.health.v1.Health.Check", "grpc_health/v1/health.proto"),
    ],
)
def test_a_method_name_finds_its_file(server: ServerProcess, symbol: str, file: str) -> None:
    response = _file_containing(server, symbol)
    assert response.WhichOneof("message_response") == "file_descriptor_response", response
    names = [
        descriptor_pb2.FileDescriptorProto.FromString(data).name
        for data in response.file_descriptor_response.file_descriptor_proto
    ]
    assert names[0] == file


def test_an_unknown_method_is_still_not_found(server: ServerProcess) -> None:
    response = _file_containing(server, "cliptext.inference.v1.Transcriber.Nope")
    assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
