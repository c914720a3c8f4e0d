"""The documents in the repository stay true to the code they describe."""

from __future__ import annotations

import re
from pathlib import Path

import click

from cdsw_tui.cli import main

ROOT = Path(__file__).resolve().parents[2]


def commands(group: click.Group, prefix: str = "cdsw-tui") -> list[str]:
    found = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, f"{prefix} {name} is listed but not found"
        path = f"{prefix} {name}"
        found += commands(cmd, path) if isinstance(cmd, click.Group) else [path]
    return found


def test_the_cli_reference_names_every_command():
    """Each command's words appear in order on one line of the reference (``env
    list|set|unset`` names three)."""
    lines = (ROOT / "docs" / "cli.md").read_text().splitlines()
    missing = [
        c
        for c in commands(main)
        if not any(
            re.search(r"\b" + r"\b.*\b".join(map(re.escape, c.split())) + r"\b", line)
            for line in lines
        )
    ]
    assert not missing, f"docs/cli.md does not describe {missing}"


def test_readme_links_stay_inside_the_repository():
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert links, "the README links its documents"
    for link in links:
        assert not link.startswith(("..", "/")) and "://" not in link, link
        assert (ROOT / link).is_file(), f"README links {link}, which is not in the repository"
    assert "../shared" not in text
    assert "Python 3.11" in text


def test_the_settings_document_names_every_setting():
    from cdsw_tui.config import names

    text = (ROOT / "docs" / "settings.md").read_text()
    missing = [name.upper() for name in names() if f"`{name.upper()}`" not in text]
    assert not missing, f"docs/settings.md does not describe {missing}"
