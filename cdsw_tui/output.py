"""How the CLI prints: aligned tables for people, JSON arrays for scripts."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table


def count(n: int, word: str) -> str:
    """``1 replica``, ``3 replicas``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], *, empty: str = "nothing yet"
) -> None:
    """Columns two spaces apart under upper-case names, never wrapped (a pipe reads whole
    lines); rich measures the cells, so wide characters align too."""
    if not rows:
        click.echo(empty)
        return
    grid = Table(box=None, pad_edge=False, padding=(0, 1), header_style="", highlight=False)
    for column in columns:
        grid.add_column(column.upper(), no_wrap=True, overflow="ignore")
    for row in rows:
        grid.add_row(*(_cell(row.get(c)) for c in columns))
    text = io.StringIO()
    console = Console(
        file=text, width=1_000_000, color_system=None, markup=False, emoji=False, highlight=False
    )
    console.print(grid)
    for line in text.getvalue().splitlines():
        click.echo(line.rstrip())


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
