"""Domain errors. No HTTP status codes here: api/errors.py maps them."""

from __future__ import annotations

from collections.abc import Sequence


class ScheddError(Exception):
    """Base of every domain error."""


class NotFound(ScheddError):
    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"{what} not found")


class Conflict(ScheddError):
    def __init__(self, message: str) -> None:
        super().__init__(message)


class Unauthorized(ScheddError):
    def __init__(self, message: str = "Missing or invalid API key") -> None:
        super().__init__(message)


class InvalidField(ScheddError):
    """A value the client sent is wrong. `loc` names it, e.g. ("body", "schedule_expression")."""

    def __init__(self, loc: Sequence[str | int], msg: str, type_: str = "value_error") -> None:
        self.loc = list(loc)
        self.msg = msg
        self.type = type_
        super().__init__(f"{'.'.join(str(p) for p in self.loc)}: {msg}")


class ConfigError(ScheddError):
    """A bad configuration value; the message names the key."""


class StorageUnavailable(ScheddError):
    """The database cannot be written right now: the disk is full (kind "full"), the file or
    its filesystem is read-only ("readonly"), another process holds the write lock longer
    than the busy timeout ("locked") or the write failed at the OS level ("io"). Nothing of
    the failed transaction was kept; the same request may be tried again later."""

    KINDS = ("full", "readonly", "locked", "io")

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(f"the database cannot be written ({kind}): {message}")
