"""API keys for models with authentication on: shown once, stored as a hash."""

from __future__ import annotations

import hashlib

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from cdsw_tui.errors import Conflict, NotFound
from cdsw_tui.services import validation as v
from cdsw_tui.services.access_keys import new_access_key
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import ApiKey, Model, utcnow


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create(wb: Workbench, name: str) -> str:
    """Returns the key itself; only its hash is kept."""
    name = v.name(name)
    key = "ak" + new_access_key()
    with wb.store.session() as s:
        s.add(ApiKey(name=name, key_hash=_hash(key)))
        try:
            s.commit()
        except IntegrityError:
            raise Conflict(f"an API key named {name!r} already exists") from None
    return key


def list_keys(wb: Workbench) -> list[ApiKey]:
    with wb.store.session() as s:
        return list(s.exec(select(ApiKey).order_by(ApiKey.name)))


def delete(wb: Workbench, name: str) -> None:
    with wb.store.session() as s:
        row = s.exec(select(ApiKey).where(ApiKey.name == name)).first()
        if row is None:
            raise NotFound(f"no API key named {name!r}")
        s.delete(row)
        s.commit()


def set_auth(wb: Workbench, model: Model, enabled: bool) -> Model:
    with wb.store.session() as s:
        row = s.get(Model, model.id)
        if row is None:
            raise NotFound(f"model {model.name} no longer exists")
        row.auth_enabled = enabled
        row.updated_at = utcnow()
        s.add(row)
        s.commit()
        s.refresh(row)
        return row


def valid(wb: Workbench, key: str) -> bool:
    """Whether ``key`` is one of the API keys made here (``apikey create``)."""
    if not key.startswith("ak"):
        return False
    with wb.store.session() as s:
        return s.exec(select(ApiKey).where(ApiKey.key_hash == _hash(key))).first() is not None
