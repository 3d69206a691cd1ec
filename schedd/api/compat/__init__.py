"""Compatibility routers (SPEC §7): other scheduling APIs served over the same services.

Each module translates one seed API's names and shapes to the native services and back;
validation, errors and guarantees are the native ones, with the router's own field names in
`loc` (docs/compat.md lists every field and how it maps)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from schedd.errors import InvalidField


def relabel(exc: InvalidField, rename: Callable[[list[str | int]], Sequence[str | int]]
            ) -> InvalidField:
    """The same error with its body loc renamed to the router's field names."""
    loc = list(exc.loc)
    if loc and loc[0] == "body":
        loc = ["body", *rename(loc[1:])]
    return InvalidField(loc, exc.msg, exc.type)
