"""A log pane in the manner of Toolong and k9s: follow, wrap, timestamps, filter, source.

The app's one log watcher (services/logwatch.py) reads the files and hands this view its
new lines in batches; a hidden view is paused there and catches up when shown. Scrolling
up stops following and counts what arrives ("+N lines"); f (or End in the pane) follows again.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.cache import LRUCache
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.scrollbar import ScrollTo
from textual.strip import Strip
from textual.widgets import Input, Label

from cdsw_tui.output import printable
from cdsw_tui.services.logs import STREAMS
from cdsw_tui.services.logwatch import Lines as Batch
from cdsw_tui.services.logwatch import LogWatcher, Subscription
from cdsw_tui.widgets.host import host
from cdsw_tui.widgets.workers import ReportsWorkerErrors

KEEP = 5000


class LogLines(ScrollView, can_focus=True):
    """The lines of a log, drawn as Toolong draws them: appending a line only stores it,
    and only the rows on screen are ever rendered (RichLog renders every line written,
    which cost the UI thread ~40 ms a batch under 2,000 lines/s). Wrapping cuts a line
    into rows of the view's width. Tells its LogView when the user scrolls up."""

    DEFAULT_CSS = "LogLines { background: $surface; }"

    class ScrolledUp(Message):
        pass

    def __init__(self, render: Callable[[str], Text]) -> None:
        super().__init__()
        self.format = render
        self.lines: deque[str] = deque(maxlen=KEEP)
        self.first = 0  # the number of the oldest kept line, for the cache's keys
        self.wrap = False
        self.rows: list[tuple[int, int]] = []  # wrapped: (line number, first cell)
        self.widest = 0
        self.at_end = True  # the last append followed: a resize keeps the end in view
        self._strips: LRUCache[int, Strip] = LRUCache(1024)

    def set_lines(self, lines: list[str], *, scroll_end: bool) -> None:
        """Start over with ``lines`` (a filter, a toggle, a new width for wrapping)."""
        self.lines.clear()
        self.first = 0
        self._strips.clear()
        self.widest = 0
        self.rows = []
        self.append(lines, scroll_end=scroll_end)

    def append(self, lines: list[str], *, scroll_end: bool) -> None:
        dropped = max(0, len(self.lines) + len(lines) - KEEP)
        self.first += dropped
        start = self.first + len(self.lines) - dropped
        self.lines.extend(lines)
        self.widest = max(self.widest, *(len(line) + 12 for line in lines[-KEEP:]), 0)
        if self.wrap:
            width = max(1, self.scrollable_content_region.width)
            if dropped:
                self.rows = [r for r in self.rows if r[0] >= self.first]
            for n, line in enumerate(lines[-KEEP:], start + max(0, len(lines) - KEEP)):
                cells = max(1, self._strip(n, line).cell_length)
                self.rows.extend((n, col) for col in range(0, cells, width))
        height = len(self.rows) if self.wrap else len(self.lines)
        # no layout pass for the whole screen (virtual_size is a layout reactive, ~30 ms
        # on the model screen): the pane's size is fixed by its CSS; only its scrollbars
        # follow, and they ask for a layout themselves when one appears or goes
        self.set_reactive(LogLines.virtual_size, Size(0 if self.wrap else self.widest, height))
        self._scroll_update(self.virtual_size)
        if dropped:
            self.refresh()  # every row moved up
        self.at_end = scroll_end
        if scroll_end:  # now: the virtual size is set, and a deferred scroll could lose
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    def rewrap(self) -> None:
        self.set_lines(list(self.lines), scroll_end=self.at_end)

    def on_resize(self) -> None:
        """Lines that came before the pane had its size were placed at no height: the
        end moved, so a following pane goes to it again."""
        if self.wrap:
            self.rewrap()
        if self.at_end:
            self.scroll_end(animate=False, immediate=False, x_axis=False)

    def _size_updated(
        self, size: Size, virtual_size: Size, container_size: Size, layout: bool = True
    ) -> bool:
        """A layout pass may move the scroll position; a following pane's scrollbar
        stays at the end with the rows it shows."""
        resized = super()._size_updated(size, virtual_size, container_size, layout)
        if self.at_end and self.scroll_y != self.max_scroll_y:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
        return resized

    def _strip(self, number: int, line: str) -> Strip:
        strip = self._strips.get(number)
        if strip is None:
            text = self.format(printable(line))  # what model code printed shows, inert
            strip = Strip(list(text.render(self.app.console)), text.cell_len)
            self._strips[number] = strip
        return strip

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        if self.at_end:  # following: the last rows, whatever the scroll position says
            height = self.scrollable_content_region.height
            scroll_y = max(0, (len(self.rows) if self.wrap else len(self.lines)) - height)
        row = scroll_y + y
        if self.wrap:
            if row >= len(self.rows):
                return Strip.blank(width, self.rich_style)
            number, col = self.rows[row]
            strip = self._strip(number, self.lines[number - self.first])
            return strip.crop_extend(col, col + width, self.rich_style).apply_style(self.rich_style)
        if row >= len(self.lines):
            return Strip.blank(width, self.rich_style)
        strip = self._strip(self.first + row, self.lines[row])
        return strip.crop_extend(scroll_x, scroll_x + width, self.rich_style).apply_style(
            self.rich_style
        )

    # The user scrolling up (wheel, keys, scrollbar) stops following. Watching scroll_y
    # cannot tell the user from a layout pass that moves it, so the intents are caught.

    def _leave_end(self) -> None:
        if self.at_end:
            self.at_end = False
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
            self.post_message(self.ScrolledUp())

    # (event handlers: Textual calls Widget's own after these, so no super() here)
    def _on_mouse_scroll_up(self, _event: events.MouseScrollUp) -> None:
        self._leave_end()

    def _on_scroll_to(self, message: ScrollTo) -> None:
        if message.y is not None and message.y < self.max_scroll_y:
            self._leave_end()

    def action_scroll_up(self) -> None:
        self._leave_end()
        super().action_scroll_up()

    def action_page_up(self) -> None:
        self._leave_end()
        super().action_page_up()

    def action_scroll_home(self) -> None:
        self._leave_end()
        super().action_scroll_home()


class LogView(ReportsWorkerErrors, Vertical, can_focus=False):
    DEFAULT_CSS = """
    LogView { height: 1fr; }
    LogView LogLines { height: 1fr; border: round $panel; }
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
    ) -> None:
        super().__init__(id=id)
        self.files = files
        self.show_sources = sources
        self.active = True
        self._sub: Subscription | None = None
        self.follow = True
        self.wrap = False
        self.timestamps = True
        self.pattern = ""
        self.source: str | None = None  # None: every file
        self.known_sources: list[str] = []
        self.buffer: deque[str] = deque(maxlen=KEEP)
        self.missed = 0
        self._bar = ""
        self.last_line_at = 0.0
        self.generation = 0

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter (Enter to apply, empty to clear)", id="log-filter")
        yield LogLines(self._format_line)
        with Horizontal(id="log-bar"):
            yield Label("", id="log-status")

    def on_mount(self) -> None:
        self._update_bar()
        self.tail()

    def on_unmount(self) -> None:
        if self._sub is not None:
            self._sub.close()

    # -- reading -------------------------------------------------------------------------

    @property
    def watcher(self) -> LogWatcher:
        return host(self).log_watcher

    def switch(self) -> None:
        """The files are others now (another run, build or task): what shows is cleared,
        and the new files are tailed."""
        self.buffer.clear()
        self.redraw()
        self.tail()

    def tail(self) -> None:
        """(Re)start from the last KEEP lines of the files; an older subscription ends."""
        if self._sub is not None:
            self._sub.close()
        self.generation += 1
        generation = self.generation
        prefix = self.show_sources

        def deliver(batch: Batch) -> None:  # in the watcher's thread
            per_file: dict[Path, list[tuple[str, str]]] = {}
            for path, line in batch:  # each file's lines come in order: merge by stamp
                text = f"{path.stem} {line}" if prefix else line
                per_file.setdefault(path, []).append((line[:24], text))
            merged = heapq.merge(*per_file.values(), key=lambda pair: pair[0])
            self.post_message(self.Lines([text for _, text in merged], generation))

        self._sub = self.watcher.subscribe(self.files, deliver, tail=KEEP)
        if not self.active:
            self._sub.pause()

    def set_active(self, active: bool) -> None:
        """Read only while shown: a hidden view is paused and catches up when shown."""
        self.active = active
        if self._sub is not None:
            self._sub.resume() if active else self._sub.pause()

    @on(Lines)
    def _on_lines(self, message: Lines) -> None:
        if message.generation != self.generation:
            return  # from a reader that was replaced
        self.last_line_at = time.monotonic()
        log = self.query_one(LogLines)
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
        log.append(fresh, scroll_end=self.follow)  # stored; drawn only if on screen
        if not self.follow:
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
            if len(parts) == 3 and parts[1] in STREAMS:
                stream, body = parts[1], parts[2]
            else:
                body = " ".join(parts[1:])
        text = Text()
        if source and self.source is None:
            text.append(source + " ", style="cyan")
        if stamp and self.timestamps:
            text.append(stamp + " ", style="dim")
        if stream == "stderr":
            text.append(f"{STREAMS[stream]} ", style="bold red")
            text.append(body, style="red")
        else:
            if stream == "stdout":
                text.append(f"{STREAMS[stream]} ", style="dim green")
            text.append(body)
        return text

    def redraw(self) -> None:
        log = self.query_one(LogLines)
        log.wrap = self.wrap
        log.set_lines([line for line in self.buffer if self._visible(line)], scroll_end=self.follow)
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
            flags.append(f"+{self.missed} lines (f to follow)")
        text = "  ·  ".join(flags)
        if text != self._bar:  # an unchanged bar costs no layout pass
            self._bar = text
            self.query_one("#log-status", Label).update(text)

    # -- keys -----------------------------------------------------------------------------

    @on(LogLines.ScrolledUp)
    def _user_scrolled_up(self) -> None:
        if self.follow:
            self.follow = False
            self._update_bar()

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        if self.follow:
            self.action_follow_end()
        self._update_bar()

    def action_follow_end(self) -> None:
        self.follow = True
        self.missed = 0
        log = self.query_one(LogLines)
        log.at_end = True
        log.scroll_end(animate=False)
        log.refresh()
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
        self.query_one(LogLines).focus()
        self.redraw()

    def action_next_source(self) -> None:
        if not self.show_sources:
            return
        options: list[str | None] = [None, *self.known_sources]
        index = options.index(self.source) if self.source in options else 0
        self.source = options[(index + 1) % len(options)]
        self.redraw()
