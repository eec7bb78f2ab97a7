"""The generated gRPC modules of cliptext.inference.v1, regenerated first if missing or stale.

Import the stubs from here (`from inference.stubs import pb2, pb2_grpc`), never from
inference.proto directly, so a changed .proto can never meet old generated code.
"""

from inference.proto_build import ensure_stubs

ensure_stubs()

from inference.proto.cliptext.inference.v1 import (  # noqa: E402
    transcriber_pb2 as pb2,
)
from inference.proto.cliptext.inference.v1 import (  # noqa: E402
    transcriber_pb2_grpc as pb2_grpc,
)

SERVICE_NAME = pb2.DESCRIPTOR.services_by_name["Transcriber"].full_name

__all__ = ["SERVICE_NAME", "pb2", "pb2_grpc"]
