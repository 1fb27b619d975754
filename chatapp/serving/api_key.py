"""The API key, on both sides of the OpenAI API: the one `--api-key` gives, else $CHATAPP_API_KEY."""

from __future__ import annotations

import hmac
import os

API_KEY_VARIABLE = "CHATAPP_API_KEY"


def api_key(given: str | None) -> str | None:
    """The key to send to a server, or that `chatapp serve` requires; None for no key."""
    return given or os.environ.get(API_KEY_VARIABLE) or None


def authorization_matches(header: str, key: str) -> bool:
    """Whether an Authorization header carries `key`, compared in constant time."""
    expected = f"Bearer {key}"
    return hmac.compare_digest(header.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape"))
