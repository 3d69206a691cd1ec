"""API keys: generation and hashing. A key is 32 random bytes (256 bits), so one SHA-256
is enough to store it safely (no password stretching needed) and lets a request find its
key with one indexed lookup. The key itself is shown once, at creation, and never logged."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "sk_"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def display_prefix(key: str) -> str:
    """The first characters, enough to tell keys apart in `schedd keys list`."""
    return key[: len(KEY_PREFIX) + 6]


def token_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request carries: `X-Api-Key: KEY` or `Authorization: Bearer KEY`."""
    if x_api_key:
        return x_api_key.strip() or None
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None
