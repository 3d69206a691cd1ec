"""Signed cookies and CSRF tokens of the console: HMAC-SHA256 under the secret kept in
the database (table `shared_secrets`, Services.load_console_secret). Pure functions; the
session table is the services'.

The session cookie is `<token>.<mac>`: the token is random (its hash is the server-side
session id), the mac proves the daemon issued it, so a forged cookie is refused before any
database read. A form's CSRF token is another mac of the same token under another purpose:
it cannot be computed without the secret, and it dies with the session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SESSION_COOKIE = "schedd_session"
SIGNIN_COOKIE = "schedd_signin"  # the sign-in form's own CSRF anchor (no session yet)


def mac(secret: bytes, purpose: str, value: str) -> str:
    digest = hmac.new(secret, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify(secret: bytes, purpose: str, value: str, given: str | None) -> bool:
    if not given or not value:
        return False
    return hmac.compare_digest(mac(secret, purpose, value).encode(), given.encode("utf-8",
                                                                                    "replace"))


def session_cookie(secret: bytes, token: str) -> str:
    return f"{token}.{mac(secret, 'session', token)}"


def token_of(secret: bytes, cookie: str | None) -> str | None:
    """The session token of a cookie this daemon signed; None for anything else."""
    if not cookie or cookie.count(".") != 1:
        return None
    token, sig = cookie.split(".")
    return token if verify(secret, "session", token, sig) else None


def csrf_token(secret: bytes, token: str) -> str:
    return mac(secret, "csrf", token)


def new_signin_nonce() -> str:
    return secrets.token_urlsafe(24)


def signin_csrf(secret: bytes, nonce: str) -> str:
    return mac(secret, "signin", nonce)
