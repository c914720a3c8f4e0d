"""One log watcher per process, in the manner of Toolong: a single thread that waits on
the log folder with watchfiles (inotify; polling where that is unavailable), keeps an
offset index per file it follows, and hands each subscriber its new lines in one batch
per pass. A paused subscriber costs nothing; resumed, it catches up from its offsets.

Every file here is written by the controller only (the home is 0700, files are 0600);
files are opened without following links all the same.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import watchfiles

from cdsw_tui.engine.buildlog import tail_offset

READ_LIMIT = 1024 * 1024  # per file and pass: a burst is shown in several batches
REFRESH_SECONDS = 2.0  # how often a subscriber's list of files is asked again
DEBOUNCE_MS = 100  # under steady writes, a batch at least this often
STEP_MS = 20
IDLE_MS = 500  # a pass at least this often, whatever inotify says

Lines = list[tuple[Path, str]]


class FileIndex:
    """Where reading a file stopped: an open descriptor, its offset, and the start of a
    line not yet ended. A rotation (a new file at the path) is noticed by its inode;
    the old file is read to its end first, so no line is lost across it."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self.partial = b""
        self.fd: int | None = None
        self.inode: int | None = None

    def _open(self) -> bool:
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        st = os.fstat(self.fd)
        self.inode = st.st_ino
        if st.st_size < self.offset:  # truncated, or not the file the offset was for
            self.offset = 0
        return True

    def read(self, limit: int = READ_LIMIT) -> tuple[list[str], bool]:
        """New complete lines, and whether more is waiting."""
        if self.fd is None and not self._open():
            return [], False
        lines, more = self._read_fd(limit)
        if not more:
            now: int | None
            try:
                now = os.stat(self.path, follow_symlinks=False).st_ino
            except OSError:
                now = self.inode
            if now != self.inode:  # rotated: the old file is done, follow the new one
                if self.partial:
                    lines.append(self.partial.decode("utf-8", "replace"))
                self.close()
                self.offset, self.partial = 0, b""
                if self._open():
                    rest, more = self._read_fd(limit)
                    lines.extend(rest)
        return lines, more

    def _read_fd(self, limit: int) -> tuple[list[str], bool]:
        assert self.fd is not None
        data = os.pread(self.fd, limit, self.offset)
        if not data:
            return [], False
        self.offset += len(data)
        *complete, self.partial = (self.partial + data).split(b"\n")
        return [line.decode("utf-8", "replace") for line in complete], len(data) == limit

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Subscription:
    """What one view (or one ``--follow``) reads: the files ``files()`` names, from
    ``start`` offsets or the last ``tail`` lines, delivered to ``deliver``."""

    def __init__(
        self,
        watcher: LogWatcher,
        files: Callable[[], list[Path]],
        deliver: Callable[[Lines], None],
        *,
        tail: int | None,
        start: dict[Path, int] | None,
    ) -> None:
        self.watcher = watcher
        self.files = files
        self.deliver = deliver
        self.tail = tail
        self.start = dict(start or {})
        self.indexes: dict[Path, FileIndex] = {}
        self.paused = False
        self.closed = False
        self.first = True  # files of the first listing that names any start at tail/start
        self.refreshed_at = 0.0

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.watcher.wake()

    def close(self) -> None:
        self.closed = True
        self.watcher.wake()

    # -- in the watcher's thread --------------------------------------------------------

    def _refresh(self, now: float) -> None:
        self.refreshed_at = now
        try:
            paths = list(self.files())
        except Exception:  # a model deleted under us: nothing to follow
            paths = []
        for path in paths:
            if path not in self.indexes:
                self.indexes[path] = FileIndex(path, self._start_of(path))
        for path in [p for p in self.indexes if p not in paths]:
            self.indexes.pop(path).close()
        self.first = not paths  # until files are named, the first ones start at the tail

    def _start_of(self, path: Path) -> int:
        if not self.first:
            return 0  # a file that came later (a new replica): all of it
        if path in self.start:
            return self.start[path]
        if self.tail is None:
            return 0
        try:
            return tail_offset(path, self.tail)[0]
        except OSError:
            return 0

    def _pass(self, now: float, added: set[Path]) -> bool:
        """Read what is new; True if a file has more than one pass could take. A file
        that appeared, or a while gone by, asks ``files()`` again (it may read the store:
        here, never on the UI thread)."""
        every = 0.5 if self.first else REFRESH_SECONDS  # sooner while nothing is named yet
        if now - self.refreshed_at >= every or (added - set(self.indexes)):
            self._refresh(now)
        batch: Lines = []
        more = False
        for path, index in self.indexes.items():
            lines, again = index.read()
            more = more or again
            batch.extend((path, line) for line in lines)
        if batch:
            self.deliver(batch)
        return more

    def _close_files(self) -> None:
        for index in self.indexes.values():
            index.close()
        self.indexes.clear()


class LogWatcher:
    """The process's one watcher thread over ``root`` (the home's logs folder)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._passes = 0
        self._passed = threading.Condition()
        self._thread: threading.Thread | None = None

    def subscribe(
        self,
        files: Callable[[], list[Path]],
        deliver: Callable[[Lines], None],
        *,
        tail: int | None = None,
        start: dict[Path, int] | None = None,
    ) -> Subscription:
        sub = Subscription(self, files, deliver, tail=tail, start=start)
        with self._lock:
            self._subs.append(sub)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="log-watcher", daemon=True)
                self._thread.start()
        self.wake()
        return sub

    def wake(self) -> None:
        self._wake.set()

    def caught_up(self, timeout: float = 5.0) -> None:
        """Return once a whole pass has run after this call (everything written before
        it has been delivered)."""
        with self._passed:
            target = self._passes + 2
            self.wake()
            self._passed.wait_for(lambda: self._passes >= target or self._closed, timeout)

    def close(self) -> None:
        self._closed = True
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LogWatcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        polling = False
        while not self._closed:
            self._wake.clear()
            if self._read(set()):
                continue  # a burst: read on before waiting
            try:
                for changes in watchfiles.watch(
                    self.root,
                    watch_filter=None,
                    debounce=DEBOUNCE_MS,
                    step=STEP_MS,
                    stop_event=self._wake,
                    rust_timeout=IDLE_MS,
                    yield_on_timeout=True,
                    raise_interrupt=False,
                    force_polling=polling or None,
                    poll_delay_ms=100,
                    ignore_permission_denied=True,
                ):
                    added = {Path(p) for change, p in changes if change == watchfiles.Change.added}
                    if self._read(added):
                        break
            except Exception:  # inotify unavailable (limits, filesystems): poll instead
                if polling:
                    time.sleep(IDLE_MS / 1000)
                polling = True
        with self._lock:
            for sub in self._subs:
                sub._close_files()
            self._subs.clear()
        with self._passed:
            self._passed.notify_all()

    def _read(self, added: set[Path]) -> bool:
        now = time.monotonic()
        more = False
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            if sub.closed:
                sub._close_files()
                with self._lock:
                    self._subs.remove(sub)
                continue
            if not sub.paused:
                more = sub._pass(now, added) or more
        with self._passed:
            self._passes += 1
            self._passed.notify_all()
        return more


def follow(
    root: Path,
    files: Callable[[], list[Path]],
    *,
    start: dict[Path, int] | None = None,
    tail: int | None = None,
    until: Callable[[], bool] | None = None,
) -> Iterator[tuple[Path, str]]:
    """Lines as they are appended, for ``--follow`` in the CLI: until ``until()`` says the
    writer is done (then what it wrote last), or forever."""
    batches: queue.Queue[Lines] = queue.Queue()
    with LogWatcher(root) as watcher:
        watcher.subscribe(files, batches.put, tail=tail, start=start)
        while True:
            try:
                yield from batches.get(timeout=0.25)
                continue
            except queue.Empty:
                pass
            if until is not None and until():
                watcher.caught_up()
                while not batches.empty():
                    yield from batches.get_nowait()
                return
