"""How the CLI prints: aligned tables for people, JSON arrays for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence

import click


def count(n: int, word: str) -> str:
    """``1 replica``, ``3 replicas``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(rows: Sequence[dict], columns: Sequence[str], *, empty: str = "nothing yet") -> None:
    if not rows:
        click.echo(empty)
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
