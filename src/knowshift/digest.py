"""The one way knowshift names things by content: a hex SHA-256, cut to 16 characters for ids.

    json_digest({"lr": 1e-5, "epochs": 3})   # run ids, probe-setting keys, set folders, analyses
    text_digest("a\\nb")                      # fingerprints; text_digest(text, None): the whole hash

Changing either changes every stored id: they are part of the store's schema.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

ID_LENGTH = 16


def text_digest(text: str, length: int | None = ID_LENGTH) -> str:
    """The SHA-256 of `text` (UTF-8) in hex, its first `length` characters (None: all 64)."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    return digest if length is None else digest[:length]


def json_digest(value: Any, length: int | None = ID_LENGTH) -> str:
    """The digest of `value` as JSON with sorted keys (anything JSON cannot write, as str)."""
    return text_digest(json.dumps(value, sort_keys=True, default=str), length)
