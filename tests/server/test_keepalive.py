"""HTTP/2 keepalive on calls to the inference server.

A server whose host vanished without closing the connection (powered off, a network cut, a NAT that
dropped the flow) sends nothing more: without pings the call waited for its deadline, hours for a long
file. The relay below stops forwarding without closing anything, which is what such a peer looks like.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from inference.audio import decode_audio
from inference.client import Summary, TranscriberClient, Unavailable
from inference.types import Segment
from tests.media import AUDIO_DIR


class SilentPeer:
    """A TCP relay to 127.0.0.1:`port` that, once frozen, forwards nothing and closes nothing."""

    def __init__(self, port: int) -> None:
        self.upstream_port = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.released.is_set():  # a reconnection while the test ends
                    client.close()
                    return
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
                self.sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if self.frozen.is_set():
                self.released.wait()  # hold it: neither forwarded nor refused
                return
            if not data:
                return
            try:
                target.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        with self.lock:
            self.released.set()
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            self.listener.close()
            for sock in self.sockets:
                sock.close()


@pytest.fixture(scope="module")
def roomy_server(launch):
    """The session's server refuses audio over 40 s; these calls must outlast a few pings."""
    return launch("--max-audio-seconds", "600")


@pytest.fixture
def long_audio(tmp_path: Path) -> Path:
    """44 s of speech: two windows, so the call is still running when the peer goes."""
    speech = decode_audio(AUDIO_DIR / "jfk.flac")
    path = tmp_path / "long.flac"
    sf.write(path, np.tile(speech, 4), 16000)
    return path


def test_a_call_ends_soon_after_its_server_stops_answering(roomy_server, long_audio):
    peer = SilentPeer(roomy_server.port)
    client = TranscriberClient(f"127.0.0.1:{peer.port}", keepalive_seconds=2)
    try:
        events = client.transcribe(long_audio, timeout=45, beam_size=1)
        for event in events:
            if isinstance(event, Segment):  # the audio is all sent; the server is decoding the rest
                break
        peer.frozen.set()
        stopped = time.monotonic()
        with pytest.raises(Unavailable):
            for _event in events:
                pass
        assert time.monotonic() - stopped < 15  # a ping every 2 s, 2 s to answer; the deadline is 45 s
        assert not isinstance(event, Summary)
    finally:
        client.close()
        peer.close()


def test_frequent_pings_do_not_end_a_healthy_call(roomy_server, long_audio):
    """The server permits them: grpc's default closes a connection pinged more than every 5 minutes."""
    with TranscriberClient(roomy_server.addr, keepalive_seconds=1) as client:
        started = time.monotonic()
        events = list(client.transcribe(long_audio, timeout=120, beam_size=1))
    assert isinstance(events[-1], Summary) and events[-1].segments > 0
    assert time.monotonic() - started > 3  # long enough for several pings
