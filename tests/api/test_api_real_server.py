"""Through a real HTTP server: a chunked (streamed) PUT of real audio to the presigned URL, then complete."""

from __future__ import annotations

import threading

import requests
from werkzeug.serving import make_server

from tests.api.helpers import JFK_MP3


def test_streamed_put_over_http(app, new_org):
    _, headers = new_org("pro")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        data = JFK_MP3.read_bytes()
        presigned = requests.post(
            f"{base}/v1/uploads/presigned",
            json={"filename": "jfk.mp3", "content_type": "audio/mpeg", "size": len(data)},
            headers=headers,
            timeout=30,
        ).json()
        path = presigned["url"].split("/v1/", 1)[1]

        def chunks():
            for start in range(0, len(data), 16384):
                yield data[start : start + 16384]

        put = requests.put(f"{base}/v1/{path}", data=chunks(), headers=presigned["headers"], timeout=30)
        assert put.status_code == 200, put.text
        assert put.json()["status"] == "uploaded"
        done = requests.post(
            f"{base}/v1/uploads/complete", json={"upload_id": presigned["id"]}, headers=headers, timeout=30
        )
        assert done.status_code == 200 and done.json()["size"] == len(data)
        assert done.headers["RateLimit-Limit"] == "60" and done.headers["X-Request-Id"]
        malformed = requests.post(
            f"{base}/v1/uploads/complete",
            data=b"{oops",
            headers={**headers, "Content-Type": "application/json"},
            timeout=30,
        )
        assert malformed.status_code == 400
        assert malformed.json()["error"]["code"] == "VALIDATION_ERROR"
    finally:
        server.shutdown()
        thread.join(timeout=10)
