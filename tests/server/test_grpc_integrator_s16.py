"""What a service built from the .proto and docs alone found (review S16): the config's `request_id`,
"echoed in the server's log line", went into that line as sent, so a caller could write a forged
call line into a text log with a newline, or a second `outcome=` into either format with a space.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc
import pytest

from inference.stubs import pb2, pb2_grpc
from tests.server.conftest import ServerProcess

FORGED = "txn_1\n2030-01-01 00:00:00,000 INFO inference.server [evil]: transcribe request_id=evil outcome=OK"


def _refused_with_request_id(server: ServerProcess, request_id: str) -> None:
    """One call that fails at once (its audio is not media): all it leaves is its log line."""
    requests = iter(
        [
            pb2.TranscribeRequest(config=pb2.TranscribeConfig(request_id=request_id)),
            pb2.TranscribeRequest(audio=b"not audio at all"),
        ]
    )
    with grpc.insecure_channel(server.addr) as channel, pytest.raises(grpc.RpcError) as raised:
        list(pb2_grpc.TranscriberStub(channel).Transcribe(requests, timeout=30))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _fields(text: str, key: str) -> list[str]:
    """The values of `key=` in a key=value line, as a log reader splits it."""
    return [word.split("=", 1)[1] for word in text.split() if word.startswith(f"{key}=")]


def _lines_after(server: ServerProcess, before: int) -> list[str]:
    """The call lines written since `before` of them (the line is written before the status goes out)."""
    server.wait_for_log(r"outcome=AUDIO_DECODE_ERROR")
    return server.call_lines()[before:]


@pytest.fixture(scope="module")
def text_log_server(launch: Callable[..., ServerProcess]) -> ServerProcess:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPTEXT_LOG_FORMAT", "text")
        return launch()


def test_a_request_id_cannot_forge_a_line_of_the_text_log(text_log_server: ServerProcess) -> None:
    before = len(text_log_server.call_lines())
    _refused_with_request_id(text_log_server, FORGED)
    lines = _lines_after(text_log_server, before)
    assert len(lines) == 1, lines
    assert not any(line.startswith("2030-") for line in text_log_server.log().splitlines())
    assert _fields(lines[0], "outcome") == ["AUDIO_DECODE_ERROR"]
    assert "txn_1\\x0a2030" in lines[0]  # still readable, escaped


@pytest.mark.parametrize("request_id", ["a outcome=OK segments=9", "a\toutcome=OK", "a\u2028outcome=OK"])
def test_a_request_id_cannot_add_a_field_to_the_call_line(server: ServerProcess, request_id: str) -> None:
    before = len(server.call_lines())
    _refused_with_request_id(server, request_id)
    (line,) = _lines_after(server, before)
    assert _fields(json.loads(line)["msg"], "outcome") == ["AUDIO_DECODE_ERROR"], line


def test_an_ordinary_request_id_is_logged_as_sent(server: ServerProcess) -> None:
    before = len(server.call_lines())
    _refused_with_request_id(server, "txn_AbC-12.3")
    (line,) = _lines_after(server, before)
    assert "request_id=txn_AbC-12.3 " in line
    assert '"request_id": "txn_AbC-12.3"' in line
