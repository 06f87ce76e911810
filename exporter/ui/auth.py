"""The web view's login: the API token, once, in a form; then an HttpOnly, SameSite=Strict cookie
holding a value derived from it (never the token itself), so a leaked cookie does not open the API."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

COOKIE = "syncwatch-ui"
_CONTEXT = b"syncwatch-ui-session-v1"


def session_value(token: bytes) -> str:
    """What the cookie holds: an HMAC of a fixed context under the token. Changing the token logs
    every browser out."""
    return hmac.new(token, _CONTEXT, hashlib.sha256).hexdigest()


def token_ok(given: str, token: bytes) -> bool:
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token)


def cookie_ok(value: str | None, token: bytes) -> bool:
    if not value:
        return False
    return hmac.compare_digest(value.encode("utf-8", "surrogateescape"), session_value(token).encode())


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path under /ui/ of this server, never another site
    (`//evil`, `/ui/\\evil`, a scheme) and never a control character."""
    default = "/ui/transactions?state=overdue"
    if not target or not target.startswith("/ui/") or "\\" in target or any(ord(c) < 32 for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui/"):
        return default
    return target
