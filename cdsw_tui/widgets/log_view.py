"""A log pane in the manner of Toolong and k9s: follow, wrap, timestamps, filter, source.

Files are read in a thread, 64 KB at a time from where the last read stopped; lines
reach the screen in batches. Scrolling up stops following and counts what arrives
("+N lines"); End follows again.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, RichLog

from cdsw_tui.widgets.workers import ReportsWorkerErrors

CHUNK = 65536
KEEP = 5000


class FollowLog(RichLog):
    """A RichLog that tells its LogView when the user scrolls up (new lines only go down)."""

    class ScrolledUp(Message):
        pass

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value < old_value - 0.5:
            self.post_message(self.ScrolledUp())


class LogView(ReportsWorkerErrors, Vertical, can_focus=False):
    DEFAULT_CSS = """
    LogView { height: 1fr; }
    LogView RichLog { height: 1fr; border: round $panel; }
    LogView #log-bar { height: 1; color: $text-muted; }
    LogView #log-filter { display: none; height: 3; }
    LogView.-filtering #log-filter { display: block; }
    """
    BINDINGS = [
        # the bar under the log names these keys; the footer keeps its room
        Binding("f", "toggle_follow", "Follow", id="log.follow", show=False),
        Binding("w", "toggle_wrap", "Wrap", id="log.wrap", show=False),
        Binding("t", "toggle_timestamps", "Timestamps", id="log.timestamps", show=False),
        Binding("slash", "filter", "Filter", id="log.filter", show=False),
        Binding("a", "next_source", "Replica", id="log.source", show=False),
        Binding("end", "follow_end", "End", show=False),
    ]

    class Lines(Message):
        def __init__(self, lines: list[str], generation: int) -> None:
            super().__init__()
            self.lines = lines
            self.generation = generation

    def __init__(
        self,
        files: Callable[[], list[Path]],
        *,
        id: str | None = None,
        sources: bool = True,
        poll: float = 0.1,
    ) -> None:
        super().__init__(id=id)
        self.files = files
        self.show_sources = sources
        self.poll = poll
        self.follow = True
        self.wrap = False
        self.timestamps = True
        self.pattern = ""
        self.source: str | None = None  # None: every file
        self.known_sources: list[str] = []
        self.buffer: deque[str] = deque(maxlen=KEEP)
        self.missed = 0
        self._stop = threading.Event()
        self.last_line_at = 0.0
        self._ignore_scroll_until = 0.0
        self.generation = 0

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter (Enter to apply, empty to clear)", id="log-filter")
        yield FollowLog(
            max_lines=KEEP, wrap=False, highlight=False, markup=False, auto_scroll=False
        )
        with Horizontal(id="log-bar"):
            yield Label("", id="log-status")

    def on_mount(self) -> None:
        self._update_bar()
        self.tail()

    def on_unmount(self) -> None:
        self._stop.set()

    # -- reading -------------------------------------------------------------------------

    def tail(self) -> None:
        """(Re)start reading from the beginning of the files; an older reader stops."""
        self.generation += 1
        self._tail(self.generation)

    @work(thread=True, exclusive=True, group="tail")
    def _tail(self, generation: int) -> None:
        positions: dict[Path, int] = {}
        partial: dict[Path, bytes] = {}
        while not self._stop.is_set() and generation == self.generation:
            batch: list[str] = []
            try:
                paths = self.files()
            except Exception:  # a model deleted under us: show nothing
                paths = []
            for path in paths:
                try:
                    with open(path, "rb") as fh:
                        if os.fstat(fh.fileno()).st_size < positions.get(path, 0):
                            positions[path] = 0  # rotated: a new file began
                        fh.seek(positions.get(path, 0))
                        chunk = fh.read(CHUNK)
                except OSError:
                    continue
                if not chunk:
                    continue
                positions[path] = positions.get(path, 0) + len(chunk)
                data = partial.pop(path, b"") + chunk
                *lines, rest = data.split(b"\n")
                if rest:
                    partial[path] = rest
                prefix = f"{path.stem} " if self.show_sources else ""
                batch.extend(prefix + line.decode("utf-8", "replace") for line in lines)
            if batch:
                self.post_message(self.Lines(batch, generation))
            else:
                self._stop.wait(self.poll)

    @on(Lines)
    def _on_lines(self, message: Lines) -> None:
        if message.generation != self.generation:
            return  # from a reader that was replaced
        self.last_line_at = time.monotonic()
        log = self.query_one(FollowLog)
        fresh = []
        for line in message.lines:
            self.buffer.append(line)
            src = line.split(" ", 1)[0] if self.show_sources else ""
            if self.show_sources and src not in self.known_sources:
                self.known_sources.append(src)
            if self._visible(line):
                fresh.append(line)
        if not fresh:
            return
        if not self.follow:
            self.missed += len(fresh)
        # one write per batch: RichLog's cost is per write far more than per line
        log.write(
            Text("\n").join(self._format_line(line) for line in fresh), scroll_end=self.follow
        )
        self._update_bar()

    # -- drawing ------------------------------------------------------------------------

    def _visible(self, line: str) -> bool:
        if self.source is not None and not line.startswith(self.source + " "):
            return False
        return not self.pattern or self.pattern.lower() in line.lower()

    def _format_line(self, line: str) -> Text:
        source, rest = ("", line)
        if self.show_sources and " " in line:
            source, rest = line.split(" ", 1)
        stamp, stream, body = "", "", rest
        parts = rest.split(" ", 2)
        if len(parts) >= 2 and len(parts[0]) >= 20 and parts[0][:4].isdigit():
            stamp = parts[0]
            if len(parts) == 3 and parts[1] in ("stdout", "stderr"):
                stream, body = parts[1], parts[2]
            else:
                body = " ".join(parts[1:])
        text = Text()
        if source and self.source is None:
            text.append(source + " ", style="cyan")
        if stamp and self.timestamps:
            text.append(stamp + " ", style="dim")
        if stream == "stderr":
            text.append("ERR ", style="bold red")
            text.append(body, style="red")
        else:
            if stream == "stdout":
                text.append("OUT ", style="dim green")
            text.append(body)
        return text

    def redraw(self) -> None:
        log = self.query_one(FollowLog)
        self._ignore_scroll_until = time.monotonic() + 0.5  # clearing scrolls to the top
        log.clear()
        log.wrap = self.wrap
        shown = [self._format_line(line) for line in self.buffer if self._visible(line)]
        if shown:
            log.write(Text("\n").join(shown), scroll_end=False)
        if self.follow:
            log.scroll_end(animate=False)
        self._update_bar()

    def _update_bar(self) -> None:
        flags = [
            f"f follow {'on' if self.follow else 'off'}",
            f"w wrap {'on' if self.wrap else 'off'}",
            f"t timestamps {'on' if self.timestamps else 'off'}",
        ]
        if self.show_sources:
            flags.append(f"a replica {self.source or 'all'}")
        flags.append(f"/ filter '{self.pattern}'" if self.pattern else "/ filter")
        if self.missed:
            flags.append(f"+{self.missed} lines (End to follow)")
        self.query_one("#log-status", Label).update("  ·  ".join(flags))

    # -- keys -----------------------------------------------------------------------------

    @on(FollowLog.ScrolledUp)
    def _user_scrolled_up(self) -> None:
        if self.follow and time.monotonic() > self._ignore_scroll_until:
            self.follow = False
            self._update_bar()

    def _scrolled_up(self) -> bool:
        log = self.query_one(FollowLog)
        return log.scroll_y < log.max_scroll_y - 1

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        if self.follow:
            self.action_follow_end()
        self._update_bar()

    def action_follow_end(self) -> None:
        self.follow = True
        self.missed = 0
        self.query_one(FollowLog).scroll_end(animate=False)
        self._update_bar()

    def action_toggle_wrap(self) -> None:
        self.wrap = not self.wrap
        self.redraw()

    def action_toggle_timestamps(self) -> None:
        self.timestamps = not self.timestamps
        self.redraw()

    def action_filter(self) -> None:
        self.add_class("-filtering")
        box = self.query_one("#log-filter", Input)
        box.value = self.pattern
        box.focus()

    @on(Input.Submitted, "#log-filter")
    def _apply_filter(self, event: Input.Submitted) -> None:
        self.pattern = event.value.strip()
        self.remove_class("-filtering")
        self.query_one(FollowLog).focus()
        self.redraw()

    def action_next_source(self) -> None:
        if not self.show_sources:
            return
        options: list[str | None] = [None, *self.known_sources]
        index = options.index(self.source) if self.source in options else 0
        self.source = options[(index + 1) % len(options)]
        self.redraw()
