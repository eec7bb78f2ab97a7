"""The SDK's list_members / change_member_role / remove_member against the real API: an organization
manages its team without the operator, every page is fetched, refusals arrive as typed CliptextErrors,
and a DELETE or PATCH whose answer was lost (a proxy closing the connection) is retried to success."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import requests

from cliptext.sdk import Client, CliptextError, Member
from tests.sdk.conftest import ApiServer, Org


def error_of(call: Callable[[], object]) -> tuple[str, int | None]:
    with pytest.raises(CliptextError) as caught:
        call()
    return caught.value.code, caught.value.status


def client(api_server: ApiServer, key: str) -> Client:
    return Client(api_key=key, base_url=api_server.base_url, timeout=30)


def test_owner_lists_changes_and_removes_members(api_server: ApiServer, make_org: Callable[..., Org]) -> None:
    org = make_org("enterprise")
    owner = client(api_server, org.key)
    (me,) = owner.list_members(org.id)
    assert isinstance(me, Member) and me.role == "owner" and me.id.startswith("usr_")
    added = [owner.add_member(org.id, f"team{n}@example.com") for n in range(4)]

    listed = owner.list_members(org.id)
    assert [m.id for m in listed] == [me.id] + [m.id for m in added]  # users in the order they joined
    assert {m.email: m.role for m in listed[1:]} == {f"team{n}@example.com": "member" for n in range(4)}
    assert all(m.created_at is not None for m in listed)

    pages: list[str] = []
    owner._session.hooks["response"].append(lambda r, *a, **k: pages.append(r.request.url))
    assert owner.list_members(org.id, limit=2) == listed  # every page, in order
    assert len(pages) == 3 and "starting_after" not in pages[0]
    assert f"starting_after={listed[1].id}" in pages[1] and f"starting_after={listed[3].id}" in pages[2]

    promoted = owner.change_member_role(org.id, added[0].id, "admin")
    assert (promoted.id, promoted.email, promoted.role) == (added[0].id, "team0@example.com", "admin")
    assert {m.id: m.role for m in owner.list_members(org.id)}[added[0].id] == "admin"

    # a removed member's key is refused from the next request; they are gone from the list
    their_key = owner.create_key(org.id, added[1].id)
    assert client(api_server, their_key.key).get_org(org.id).role == "member"
    assert owner.remove_member(org.id, added[1].id) is None
    assert error_of(lambda: client(api_server, their_key.key).get_org(org.id)) == ("UNAUTHORIZED", 401)
    assert added[1].id not in {m.id for m in owner.list_members(org.id)}
    # removed already, with no lost answer to explain it: a 404, not silence
    assert error_of(lambda: owner.remove_member(org.id, added[1].id)) == ("NOT_FOUND", 404)


def test_refusals_are_typed(api_server: ApiServer, make_org: Callable[..., Org]) -> None:
    org, other = make_org("enterprise"), make_org("enterprise")
    owner = client(api_server, org.key)
    (me,) = owner.list_members(org.id)
    admin_user = owner.add_member(org.id, "admin@example.com", "admin")
    plain_user = owner.add_member(org.id, "plain@example.com", "member")
    admin = client(api_server, owner.create_key(org.id, admin_user.id).key)
    plain = client(api_server, owner.create_key(org.id, plain_user.id).key)

    # any member lists; a member changes and removes no one else (403)
    assert {m.id for m in plain.list_members(org.id)} == {me.id, admin_user.id, plain_user.id}
    assert error_of(lambda: plain.change_member_role(org.id, admin_user.id, "member")) == ("FORBIDDEN", 403)
    assert error_of(lambda: plain.remove_member(org.id, admin_user.id)) == ("FORBIDDEN", 403)
    # an admin neither touches an owner nor makes one (403)
    assert error_of(lambda: admin.change_member_role(org.id, me.id, "member")) == ("FORBIDDEN", 403)
    assert error_of(lambda: admin.change_member_role(org.id, plain_user.id, "owner")) == ("FORBIDDEN", 403)
    assert error_of(lambda: admin.remove_member(org.id, me.id)) == ("FORBIDDEN", 403)
    assert admin.change_member_role(org.id, plain_user.id, "admin").role == "admin"
    # the last owner is neither demoted nor removed (409)
    assert error_of(lambda: owner.change_member_role(org.id, me.id, "admin")) == ("CONFLICT", 409)
    assert error_of(lambda: owner.remove_member(org.id, me.id)) == ("CONFLICT", 409)
    # another organization, or a user who is no member: 404; a role that is none: 422
    (stranger,) = client(api_server, other.key).list_members(other.id)
    assert error_of(lambda: owner.list_members(other.id)) == ("NOT_FOUND", 404)
    assert error_of(lambda: owner.change_member_role(other.id, stranger.id, "admin")) == ("NOT_FOUND", 404)
    assert error_of(lambda: owner.remove_member(other.id, stranger.id)) == ("NOT_FOUND", 404)
    assert error_of(lambda: owner.change_member_role(org.id, stranger.id, "admin")) == ("NOT_FOUND", 404)
    assert error_of(lambda: owner.remove_member(org.id, stranger.id)) == ("NOT_FOUND", 404)
    assert error_of(lambda: owner.change_member_role(org.id, plain_user.id, "boss")) == (
        "VALIDATION_ERROR",
        422,
    )
    # anyone may leave: a member removes themselves
    assert plain.remove_member(org.id, plain_user.id) is None
    assert {m.id for m in owner.list_members(org.id)} == {me.id, admin_user.id}


# -- a lost answer ----------------------------------------------------------------------------------


class _LosesFirstAnswer(BaseHTTPRequestHandler):
    """A proxy to the API (server.upstream) that forwards every PATCH and DELETE but closes the
    connection unanswered after the first: the change happened, the client never hears so."""

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
        answer = requests.request(
            self.command,
            self.server.upstream + self.path,  # type: ignore[attr-defined]
            headers=headers,
            data=self.rfile.read(length) if length else None,
            timeout=30,
        )
        statuses: list[int] = self.server.statuses  # type: ignore[attr-defined]
        statuses.append(answer.status_code)
        if len(statuses) == 1:
            self.close_connection = True
            return
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_PATCH = do_DELETE = _relay  # noqa: N815 (http.server's names)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def lossy(api_server: ApiServer) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LosesFirstAnswer)
    origin = urlsplit(api_server.base_url)
    server.upstream = f"{origin.scheme}://{origin.netloc}"  # type: ignore[attr-defined]
    server.statuses = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_remove_whose_answer_was_lost(
    api_server: ApiServer, make_org: Callable[..., Org], lossy: ThreadingHTTPServer
) -> None:
    org = make_org("enterprise")
    owner = client(api_server, org.key)
    added = owner.add_member(org.id, "leaving@example.com")
    through = Client(api_key=org.key, base_url=f"http://127.0.0.1:{lossy.server_port}/v1", timeout=30)
    through.remove_member(org.id, added.id)
    assert lossy.statuses == [204, 404], "the retry met the first DELETE's work"  # type: ignore[attr-defined]
    assert added.id not in {m.id for m in owner.list_members(org.id)}


def test_role_change_whose_answer_was_lost(
    api_server: ApiServer, make_org: Callable[..., Org], lossy: ThreadingHTTPServer
) -> None:
    org = make_org("enterprise")
    owner = client(api_server, org.key)
    added = owner.add_member(org.id, "promoted@example.com")
    through = Client(api_key=org.key, base_url=f"http://127.0.0.1:{lossy.server_port}/v1", timeout=30)
    assert through.change_member_role(org.id, added.id, "admin").role == "admin"
    assert lossy.statuses == [200, 200]  # type: ignore[attr-defined]
