"""Access keys: 32 lowercase letters and digits from a CSPRNG."""

from __future__ import annotations

import secrets
import string

ALPHABET = string.ascii_lowercase + string.digits
KEY_LENGTH = 32


def new_access_key() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(KEY_LENGTH))


def mask(key: str) -> str:
    """What is shown instead of a key: nothing of the key itself."""
    return "•" * 12 if key else ""
