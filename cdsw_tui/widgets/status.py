"""Status badges coloured from the theme's meaning, not fixed colours."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

GOOD = {"deployed", "built", "running", "ok", "succeeded"}
BUSY = {"pending", "deploying", "building", "queued", "stopping", "starting", "restarting"}
BAD = {"failed", "timedout", "crashloop"}


def badge(status: str) -> Text:
    if status in GOOD:
        style = "bold green"
    elif status in BUSY:
        style = "bold yellow"
    elif status in BAD:
        style = "bold red"
    else:
        style = "dim"
    return Text(f"● {status}", style=style)


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def dash(value: object) -> str:
    return "-" if value in (None, "") else str(value)
