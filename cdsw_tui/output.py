"""How the CLI prints: aligned tables for people, JSON arrays for scripts."""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

# what a terminal acts on instead of showing: C0 but newline and tab, DEL, C1, and the
# bidirectional overrides (text that reads differently from what it is)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character a terminal would act on written out
    (ESC as ``\\x1b``): what model code or a project printed shows, and does nothing."""
    return _CONTROL.sub(_escaped, text) if _CONTROL.search(text) else text


def untrusted(line: str, raw: bool = False) -> None:
    """Print a line that model code or a project wrote: escaped when it goes to a
    terminal, unless ``raw`` (``--raw``) asks for the bytes as they are."""
    # color=True: click would drop ANSI sequences from what goes to a pipe, and a pipe
    # gets the line as it is
    click.echo(line if raw or not sys.stdout.isatty() else printable(line), color=True)


def count(n: int, word: str) -> str:
    """``1 replica``, ``3 replicas``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    *,
    empty: str = "nothing yet",
    raw: bool = False,
    widths: dict[str, int] | None = None,
) -> None:
    """Columns two spaces apart under upper-case names, never wrapped (a pipe reads whole
    lines); rich measures the cells, so wide characters align too. A cell's control
    characters are written out (a reason may quote what a replica wrote) unless ``raw``.
    ``widths``: the least width of columns, so that rows printed later (a follow, through
    ``table_row``) line up under them."""
    if not rows:
        click.echo(empty)
        return
    grid = Table(box=None, pad_edge=False, padding=(0, 1), header_style="", highlight=False)
    for column in columns:
        least = (widths or {}).get(column)
        grid.add_column(column.upper(), no_wrap=True, overflow="ignore", min_width=least)
    for row in rows:
        grid.add_row(*(_cell(row.get(c), raw) for c in columns))
    text = io.StringIO()
    console = Console(
        file=text, width=1_000_000, color_system=None, markup=False, emoji=False, highlight=False
    )
    console.print(grid)
    for line in text.getvalue().splitlines():
        click.echo(line.rstrip())


def table_row(row: dict[str, Any], columns: Sequence[str], widths: dict[str, int]) -> str:
    """One more row of a ``table`` printed with these ``widths``, under its columns (a
    cell wider than its column pushes the rest right). Not yet written out: see
    ``untrusted``."""
    cells = ["-" if row.get(c) is None else str(row[c]) for c in columns]
    padded = (cell.ljust(widths.get(c, 0)) for c, cell in zip(columns, cells, strict=True))
    return "  ".join(padded).rstrip()


def _cell(value: object, raw: bool) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value) if raw else printable(str(value))
    return text if len(text) <= 60 else text[:57] + "..."
