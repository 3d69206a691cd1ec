"""The `temporal` backend: not in this build.

SPEC 7.3 accepts `temporal` only when the daemon is built with Temporal support and
`[backends.temporal]` is configured. This build has no Temporal client (and nothing here
can run a Temporal server to test one against), so a sync asking for it is refused with a
422 naming `["body", "executionBackend"]`, never accepted and left to fail later.
"""

from __future__ import annotations

from schedd.errors import InvalidField

NAME = "temporal"
SUPPORTED = False
MESSAGE = ("the temporal backend is not available: this schedd is built without Temporal "
           "support (no [backends.temporal]); use native, external or prefect")


def refuse() -> InvalidField:
    return InvalidField(("body", "executionBackend"), MESSAGE, "value_error")
