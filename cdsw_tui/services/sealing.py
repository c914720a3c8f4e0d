"""Secret variable values at rest: sealed with Fernet (AES-128-CBC and HMAC-SHA256) under
a key kept in the home, so a copy of ``cdsw.db`` alone gives none of them away.

Which values are secret follows ``env.looks_secret`` (the names ``env list`` masks).
The key file is the home's own (0600 in a 0700 home): whoever can read it can read
the store anyway; the point is that the store, backups of it and SQL dumps do not
carry secrets in the clear.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from cdsw_tui.engine.process import private_key
from cdsw_tui.errors import CdswError

PREFIX = "fernet:"
KEY_FILE = "secret.key"


@lru_cache(maxsize=8)
def _fernet(home: Path) -> Fernet:
    path = home / KEY_FILE
    try:
        return Fernet(private_key(path, Fernet.generate_key))
    except (OSError, ValueError) as exc:
        raise CdswError(f"cannot read the secret key {path}: {exc}") from None


def seal(home: Path, value: str) -> str:
    return PREFIX + _fernet(home).encrypt(value.encode()).decode()


def unseal(home: Path, value: str) -> str:
    if not value.startswith(PREFIX):
        return value  # stored before secrets were sealed, or not a secret
    try:
        return _fernet(home).decrypt(value[len(PREFIX) :].encode()).decode()
    except InvalidToken:
        raise CdswError(
            f"a secret variable cannot be decrypted with {home / KEY_FILE}; set it again"
        ) from None
