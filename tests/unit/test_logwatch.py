"""The one log watcher, on real files with its real thread (inotify through watchfiles)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from cdsw_tui.engine.buildlog import last_lines, rotate, tail_offset
from cdsw_tui.services.logwatch import FileIndex, LogWatcher, follow


class Sink:
    def __init__(self) -> None:
        self.batches: list[list[tuple[Path, str]]] = []
        self.lock = threading.Lock()

    def __call__(self, batch) -> None:
        with self.lock:
            self.batches.append(batch)

    def lines(self) -> list[str]:
        with self.lock:
            return [line for batch in self.batches for _, line in batch]


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not reached"
        time.sleep(0.02)


def append(path: Path, *lines: str) -> None:
    with open(path, "a") as fh:
        fh.writelines(line + "\n" for line in lines)


def test_tail_offset_finds_where_the_last_lines_begin(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntwo\nthree\n")
    assert tail_offset(path, 2) == (4, 14)
    assert tail_offset(path, 5) == (0, 14)
    assert tail_offset(path, 0) == (14, 14)
    path.write_bytes(b"one\ntwo\nthree")  # a last line not ended yet counts
    assert tail_offset(path, 1) == (8, 13)
    assert last_lines(path, 2) == (["two", "three"], 13)


def test_appended_lines_arrive_in_order_in_batches_from_the_tail(tmp_path):
    path = tmp_path / "r.log"
    append(path, *(f"old {i}" for i in range(100)))
    sink = Sink()
    with LogWatcher(tmp_path) as watcher:
        watcher.subscribe(lambda: [path], sink, tail=3)
        wait_until(lambda: sink.lines() == ["old 97", "old 98", "old 99"])
        for i in range(2000):
            append(path, f"new {i}")
        wait_until(lambda: len(sink.lines()) == 2003)
    assert sink.lines()[3:] == [f"new {i}" for i in range(2000)]
    assert len(sink.batches) < 1000  # batched, not a delivery per line


def test_a_rotation_loses_no_line_and_repeats_none(tmp_path):
    path = tmp_path / "r.log"
    sink = Sink()
    with LogWatcher(tmp_path) as watcher:
        watcher.subscribe(lambda: [path], sink)
        append(path, "a", "b")
        wait_until(lambda: sink.lines() == ["a", "b"])
        append(path, "c")  # written to the old file just before it is rotated
        rotate(path)
        append(path, "d", "e")
        wait_until(lambda: len(sink.lines()) >= 5)
        time.sleep(0.3)
    assert sink.lines() == ["a", "b", "c", "d", "e"]


def test_a_paused_view_reads_nothing_and_catches_up_when_resumed(tmp_path):
    path = tmp_path / "r.log"
    path.touch()
    sink = Sink()
    with LogWatcher(tmp_path) as watcher:
        sub = watcher.subscribe(lambda: [path], sink)
        watcher.caught_up()
        sub.pause()
        watcher.caught_up()
        append(path, "while hidden 1", "while hidden 2")
        watcher.caught_up()
        time.sleep(0.3)
        assert sink.lines() == []
        index = sub.indexes[path]
        assert index.offset == 0  # not even read
        sub.resume()
        wait_until(lambda: sink.lines() == ["while hidden 1", "while hidden 2"], timeout=2)


def test_files_that_appear_later_are_read_whole_and_links_are_not_followed(tmp_path):
    first = tmp_path / "d1" / "a.log"
    second = tmp_path / "d1" / "b.log"
    decoy = tmp_path / "d1" / "c.log"
    first.parent.mkdir()
    append(first, "a1")
    secret = tmp_path / "secret.txt"
    secret.write_text("not a log\n")
    names = [first]
    sink = Sink()
    with LogWatcher(tmp_path) as watcher:
        watcher.subscribe(lambda: list(names), sink, tail=10)
        wait_until(lambda: sink.lines() == ["a1"])
        append(second, "b1", "b2")
        os.symlink(secret, decoy)
        names.extend([second, decoy])
        wait_until(lambda: sink.lines()[1:] == ["b1", "b2"])
        append(first, "a2")
        wait_until(lambda: sink.lines()[-1] == "a2")
        watcher.caught_up()
    assert "not a log" not in sink.lines()


def test_an_index_keeps_a_line_until_it_ends(tmp_path):
    path = tmp_path / "x.log"
    path.write_bytes(b"whole\nhal")
    index = FileIndex(path)
    assert index.read() == (["whole"], False)
    with open(path, "ab") as fh:
        fh.write(b"f\n")
    assert index.read() == (["half"], False)
    index.close()


def test_follow_ends_when_the_writer_is_done_with_its_last_lines(tmp_path):
    path = tmp_path / "build.log"
    append(path, "step 1")
    done = threading.Event()

    def writer() -> None:
        time.sleep(0.3)
        append(path, "step 2", "built")
        done.set()

    threading.Thread(target=writer).start()
    got = [line for _, line in follow(tmp_path, lambda: [path], until=done.is_set)]
    assert got == ["step 1", "step 2", "built"]


def test_logs_follow_of_several_replicas_starts_at_their_tails(tmp_path):
    """`cdsw-tui logs MODEL --follow`: the last lines merged by time, then what comes,
    through the one watcher (no file reopened on a timer)."""
    from cdsw_tui.services import logs

    a, b = tmp_path / "d1" / "r-a.log", tmp_path / "d1" / "r-b.log"
    a.parent.mkdir()
    a.write_text("2026-01-01T00:00:01.000Z stdout a1\n2026-01-01T00:00:03.000Z stdout a2\n")
    b.write_text("2026-01-01T00:00:02.000Z stdout b1\n")
    threading.Timer(0.3, append, (b, "2026-01-01T00:00:04.000Z stdout b2")).start()
    got = []
    for line in logs.read([a, b], tail=2, follow=True):
        got.append(line)
        if len(got) == 3:
            break
    assert got == [
        "r-b 2026-01-01T00:00:02.000Z stdout b1",
        "r-a 2026-01-01T00:00:03.000Z stdout a2",
        "r-b 2026-01-01T00:00:04.000Z stdout b2",
    ]


def test_a_pane_opened_before_its_file_is_named_still_starts_at_the_tail(tmp_path):
    """The build log pane names no file until the model is loaded: the first file it
    names is a long build log, shown from its last lines, not read whole."""
    path = tmp_path / "1.log"
    append(path, *(f"step {i}" for i in range(10_000)))
    names: list[Path] = []
    sink = Sink()
    with LogWatcher(tmp_path) as watcher:
        watcher.subscribe(lambda: list(names), sink, tail=5)
        watcher.caught_up()
        names.append(path)
        wait_until(lambda: len(sink.lines()) >= 5)
        watcher.caught_up()
    assert sink.lines() == [f"step {i}" for i in range(9995, 10_000)]


def test_a_merged_line_names_its_stream_as_the_workbench_does():
    from cdsw_tui.services.logs import shown

    assert (
        shown("r-a 2026-01-01T00:00:01.000Z stderr boom x")
        == "r-a 2026-01-01T00:00:01.000Z ERR boom x"
    )
    assert shown("r-a 2026-01-01T00:00:01.000Z stdout hi") == "r-a 2026-01-01T00:00:01.000Z OUT hi"
    assert shown("a line of no shape") == "a line of no shape"
