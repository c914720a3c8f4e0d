"""Errors a user can act on: each carries one human sentence, never a traceback."""

from __future__ import annotations


class CdswError(Exception):
    """An error whose message is meant for the user, as one line."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(CdswError):
    """A project, model, build or deployment that does not exist."""


class ValidationError(CdswError):
    """Bad input for a form field or a CLI option; ``field`` names it."""


class Conflict(CdswError):
    """The request clashes with the current state (duplicate name, active deployment)."""
