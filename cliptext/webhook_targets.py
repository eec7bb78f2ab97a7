"""Which webhook targets may be called: one ssrfguard policy for the API's check when a transcription is
created and for the worker's pinned connection when its event is delivered, so a URL is refused when it
is submitted rather than accepted and then dropped."""

from __future__ import annotations

from urllib.parse import urlsplit

from ssrfguard import Policy

# Receivers listen on the ports their owners choose and may take Basic credentials in the URL: what is
# refused is the address (and hosts written so that it is unclear which address they mean)
PUBLIC_ONLY = Policy(allowed_ports=frozenset(range(1, 65536)), allow_userinfo=True)


def without_credentials(text: str, url: str) -> str:
    """`text` (an error that may quote `url`) with the URL's user and password masked, for logs and rows."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    return text.replace(userinfo + "@", "***@") if userinfo else text
