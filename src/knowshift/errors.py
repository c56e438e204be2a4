"""The one error type users see.

Every problem a user can fix (bad input, unknown name, missing package) is raised as a
`KnowshiftError` whose message is one line naming the problem and the fix. The CLI prints it
and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KnowshiftError(Exception):
    """A problem the user can fix; its message says what and how."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> KnowshiftError:
    """An error for an unknown registry name that lists the valid ones and the closest match."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return KnowshiftError(f"unknown {kind} {name!r}{hint}; valid: {', '.join(valid)}")
