"""The log pane as a user meets it: real files under the home, the app's one watcher,
keys through Pilot."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdsw_tui.services import logs, models
from cdsw_tui.widgets.log_view import LogLines, LogView
from tests.helpers import open_model, wait_for

STAMP = "2026-11-20T09:31:00.000Z"


def replica_logs(app) -> tuple[Path, Path]:
    model = models.resolve(app.wb, "demo/add")
    d = 1
    a = logs.replica_log(app.wb.home, int(model.id), d, f"add-{model.id}-{d}-abcde")
    b = logs.replica_log(app.wb.home, int(model.id), d, f"add-{model.id}-{d}-fghij")
    a.parent.mkdir(parents=True, exist_ok=True)
    return a, b


def write(path: Path, *lines: str) -> None:
    with open(path, "a") as fh:
        fh.writelines(f"{STAMP} stdout {line}\n" for line in lines)


def on_screen(view: LogView) -> list[str]:
    """The rows the pane draws now, as text."""
    pane = view.query_one(LogLines)
    rows = ["".join(s.text for s in pane.render_line(y)) for y in range(pane.size.height)]
    return [r.rstrip() for r in rows]


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_the_replica_log_follows_filters_and_picks_a_replica(app, size):
    a, b = replica_logs(app)
    write(a, *(f"request {i} from a" for i in range(3000)))
    write(b, "warming up b")
    async with app.run_test(size=size) as pilot:
        screen = await open_model(pilot, app, "demo/add", "monitoring")
        view = screen.query_one("#replica-log", LogView)
        await wait_for(pilot, lambda: any("request 2999 from a" in r for r in on_screen(view)))
        assert any("warming up b" in line for line in view.buffer)
        write(a, "a new line")
        await wait_for(pilot, lambda: any("a new line" in r for r in on_screen(view)))
        await pilot.press("slash", *"up b", "enter")
        await wait_for(pilot, lambda: any("warming up b" in r for r in on_screen(view)))
        assert not any("from a" in r for r in on_screen(view))
        await pilot.press("slash", "ctrl+u", "enter")  # an empty filter shows all again
        await pilot.press("a")  # the first replica alone
        await wait_for(pilot, lambda: view.source is not None)
        shown = [r for r in on_screen(view) if r]
        assert shown and all("from a" in r or "a new line" in r for r in shown)


async def test_scrolling_up_stops_following_and_counts_what_comes(app):
    a, _ = replica_logs(app)
    write(a, *(f"line {i}" for i in range(500)))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_model(pilot, app, "demo/add", "monitoring")
        view = screen.query_one("#replica-log", LogView)
        pane = view.query_one(LogLines)
        await wait_for(pilot, lambda: any("line 499" in r for r in on_screen(view)))
        table = screen.query_one("#replicas-table")
        await wait_for(pilot, lambda: app.focused is table)  # the tab's first focus, done
        pane.focus()
        await wait_for(pilot, lambda: app.focused is pane)
        await pilot.press("home")  # the user goes to the top of the log
        await wait_for(pilot, lambda: not view.follow)
        write(a, "late 1", "late 2")
        await wait_for(pilot, lambda: view.missed == 2)
        assert "+2 lines (f to follow)" in str(view.query_one("#log-status").render())
        assert any("line 0" in r for r in on_screen(view))
        table.focus()
        await pilot.press("f")  # whatever has the focus
        await wait_for(pilot, lambda: any("late 2" in r for r in on_screen(view)))
        assert view.follow and view.missed == 0


async def test_wrap_cuts_a_long_line_into_rows_of_the_pane(app):
    a, _ = replica_logs(app)
    write(a, "x" * 300 + " tail-of-the-line")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_model(pilot, app, "demo/add", "monitoring")
        view = screen.query_one("#replica-log", LogView)
        await wait_for(pilot, lambda: len(view.buffer) == 1)
        assert not any("tail-of-the-line" in r for r in on_screen(view))  # off to the right
        await pilot.press("w")
        await wait_for(pilot, lambda: any("tail-of-the-line" in r for r in on_screen(view)))
        assert sum(1 for r in on_screen(view) if "xxxx" in r) >= 4


async def test_a_hidden_log_reads_nothing_and_catches_up_when_shown(app):
    a, _ = replica_logs(app)
    write(a, "before")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_model(pilot, app, "demo/add", "monitoring")
        view = screen.query_one("#replica-log", LogView)
        await wait_for(pilot, lambda: len(view.buffer) == 1)
        await pilot.press("1")  # Overview: the replica log is hidden
        await wait_for(pilot, lambda: view._sub is not None and view._sub.paused)
        write(a, "while hidden")
        app.log_watcher.caught_up()
        await pilot.pause(0.2)
        assert list(view.buffer)[-1].endswith("before")
        await pilot.press("4")
        await wait_for(pilot, lambda: any("while hidden" in r for r in on_screen(view)))
        # quick switches leave it reading: the last state wins
        await pilot.press("1", "4", "1", "4")
        await wait_for(pilot, lambda: screen.active_tab() == "monitoring")
        write(a, "after the switches")
        await wait_for(pilot, lambda: any("after the switches" in r for r in on_screen(view)))


async def test_what_a_replica_prints_cannot_drive_the_terminal(app):
    """OSC 0 (the window's title), OSC 52 (a clipboard write) and CSI 2J (clear the
    screen) in a replica's output are shown written out, never drawn as they are."""
    a, _ = replica_logs(app)
    write(a, "t\x1b]0;pwned\x07", "c\x1b]52;c;ZXZpbA==\x07", "x\x1b[2J\x9b1m end")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_model(pilot, app, "demo/add", "monitoring")
        view = screen.query_one("#replica-log", LogView)
        await wait_for(pilot, lambda: any(" end" in r for r in on_screen(view)))
        drawn = "\n".join(on_screen(view))
        assert not any(c in drawn for c in "\x1b\x07\x9b")
        for shown in (r"t\x1b]0;pwned\x07", r"c\x1b]52;c;ZXZpbA==\x07", r"x\x1b[2J\x9b1m end"):
            assert shown in drawn, drawn
