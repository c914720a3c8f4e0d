"""Which model an access key names, and which pool serves that model now: a table in
memory, pushed to it by the controller's publisher (controller/publisher.py), so the
call path asks nothing of the store.

Keys are looked up by their SHA-256, so the lookup takes the same time whatever the
key's prefix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cdsw_tui.serving.pool import Pool


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class Route:
    model_id: int
    name: str
    project: str
    auth_enabled: bool
    # what the model's OpenAPI document is made from (never its key)
    description: str = ""
    function: str = ""
    kernel: str = "python3"
    example_input: str = ""
    example_output: str = ""
    _label: str = field(default="", init=False, repr=False, compare=False)

    @property
    def label(self) -> str:
        return self._label

    def __post_init__(self) -> None:
        object.__setattr__(self, "_label", f"{self.project}/{self.name}")  # made once

    def describe(self) -> dict[str, str]:
        return {
            "description": self.description,
            "function": self.function,
            "kernel": self.kernel,
            "example_input": self.example_input,
            "example_output": self.example_output,
        }


class Router:
    def __init__(self) -> None:
        self.routes: dict[bytes, Route] = {}  # by the access key's hash
        self.by_name: dict[tuple[str, str], Route] = {}
        self.by_model: dict[int, Route] = {}
        self.api_keys: frozenset[bytes] = frozenset()
        self.pools: dict[int, Pool] = {}  # model id -> the pool serving it

    def set_routes(self, routes: dict[bytes, Route], api_keys: frozenset[bytes]) -> None:
        """A new table from the publisher, taking effect for the next call (each lookup
        reads one attribute, so a call sees the old table or the new one, whole)."""
        self.by_name = {(r.project, r.name): r for r in routes.values()}
        self.by_model = {r.model_id: r for r in routes.values()}
        self.api_keys = api_keys
        self.routes = routes

    def route(self, access_key: str) -> Route | None:
        return self.routes.get(key_hash(access_key))

    def named(self, project: str, name: str) -> Route | None:
        return self.by_name.get((project, name))

    def api_key_valid(self, key: str) -> bool:
        return key_hash(key) in self.api_keys
