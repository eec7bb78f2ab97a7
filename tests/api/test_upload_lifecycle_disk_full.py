"""Local storage that cannot take the bytes (review s2): a full disk, a quota, a file size limit or a
read-only file system is storage that cannot answer, 503 with Retry-After in each API's error shape, as
S3 down is; any other OSError is still a 500.

The full disk is real: the API runs in a child process whose RLIMIT_FSIZE is 1 MiB, so every write past
1 MiB fails with EFBIG, in LocalStorage and in werkzeug's spooling of a multipart body alike.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from api.models import Transcription, Upload
from tests.api.helpers import JFK_MP3, app_config, local_path, stored_files
from tests.media import sine, write_wav

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 1 << 20

# the API with a 1 MiB file size limit: a presigned PUT, a multipart create and the OpenAI endpoint, each
# with 2 MiB of audio; then the limit is lifted and the same PUT is sent again
CHILD = r"""
import io, json, resource, sys
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart
from api import create_app

config, headers = json.loads(sys.argv[1]), json.loads(sys.argv[2])
audio, limit = sys.argv[3], int(sys.argv[4])
client = create_app(config).test_client()
data = open(audio, "rb").read()

def answer(response):
    return {"status": response.status_code, "retry_after": response.headers.get("Retry-After"),
            "body": response.get_json(silent=True)}

def multipart(**fields):
    file = FileStorage(io.BytesIO(data), filename="long.wav", content_type="audio/wav")
    boundary, body = encode_multipart({"file": file, **fields})
    return {"data": body, "content_type": f"multipart/form-data; boundary={boundary}"}

declared = {"filename": "long.wav", "content_type": "audio/wav", "size": len(data)}
presigned = client.post("/v1/uploads/presigned", headers=headers, json=declared).get_json()
path = presigned["url"].split("/v1/", 1)[1]
native, openai = multipart(), multipart(model="whisper-1")
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
out = {"id": presigned["id"]}
out["put"] = answer(client.put(f"/v1/{path}", data=data, headers=presigned["headers"]))
out["multipart"] = answer(client.post("/v1/transcriptions", headers=headers, **native))
out["openai"] = answer(client.post("/v1/audio/transcriptions", headers=headers, **openai))
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
out["put_again"] = answer(client.put(f"/v1/{path}", data=data, headers=presigned["headers"]))
print("RESULT " + json.dumps(out), flush=True)
"""


def run_api_with_full_disk(app, headers: dict[str, str], audio: Path) -> dict:
    config = app_config(app)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(config), json.dumps(headers), str(audio), str(LIMIT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    found = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
    assert found, (child.returncode, child.stdout[-3000:], child.stderr[-3000:])
    return json.loads(found[0].removeprefix("RESULT "))


def test_a_full_disk_is_503_with_retry_after_and_the_put_can_be_sent_again(app, new_org, tmp_path):
    """It was a 500 INTERNAL on all three; the PUT's URL stays usable once the disk has room."""
    _, headers = new_org("pro")
    audio = write_wav(tmp_path / "long.wav", sine(70.0), 16000)  # 2.2 MB: past the limit
    assert audio.stat().st_size > 2 * LIMIT
    answers = run_api_with_full_disk(app, headers, audio)

    for name in ("put", "multipart"):
        assert answers[name]["status"] == 503, (name, answers[name])
        assert answers[name]["retry_after"] == "5", (name, answers[name])
        error = answers[name]["body"]["error"]
        assert set(error) == {"code", "message", "details"} and error["code"] == "SERVICE_UNAVAILABLE"
    openai = answers["openai"]
    assert openai["status"] == 503 and openai["retry_after"] == "5", openai
    assert openai["body"]["error"]["type"] == "server_error"
    assert openai["body"]["error"]["code"] == "service_unavailable"

    assert answers["put_again"]["status"] == 200, answers["put_again"]
    assert answers["put_again"]["body"]["size"] == audio.stat().st_size
    with app.app_context():
        assert [(u.public_id, u.status) for u in Upload.select()] == [(answers["id"], "uploaded")]
        assert Transcription.select().count() == 0
        key = Upload.get(Upload.public_id == answers["id"]).storage_key
    assert stored_files(tmp_path) == [key]  # no half-written temp file anywhere


def test_other_storage_os_errors_stay_internal(app, client, new_org, tmp_path):
    """Only the errors of a disk that cannot take the bytes are 503: a storage folder that is a file
    (EEXIST, a bug or a broken deployment) is still a 500 with the request id."""
    org, headers = new_org("pro")
    data = JFK_MP3.read_bytes()
    presigned = client.post(
        "/v1/uploads/presigned",
        json={"filename": "jfk.mp3", "content_type": "audio/mpeg", "size": len(data)},
        headers=headers,
    ).get_json()
    blocker = tmp_path / "storage" / "uploads" / org.public_id
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"not a folder")
    response = client.put(local_path(presigned["url"]), data=data, headers=presigned["headers"])
    assert response.status_code == 500, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "INTERNAL" and error["details"]["request_id"]
