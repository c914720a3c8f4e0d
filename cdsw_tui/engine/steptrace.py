"""What a build step (``cdsw-build.sh``) read from the project and wrote into it.

A step is reused only when nothing it read has changed, so its reads are traced: an
inotify watch on every folder of the project tree reports each file opened there, by
any process, whatever path it took, at no cost to opens elsewhere (the environment the
step installs into, the Python library). The kernel reports opens only, not lookups or
``stat`` of a name, so the caller also keys the step on the whole list of the
project's names, modes and links: a file added, removed or renamed runs the step again.
What the step wrote into the tree (new, changed and deleted files) is found by
comparing the tree before and after.

Standard library only, Python 3.9 syntax: the Docker builder copies this file into the
dependency image and runs it there around ``cdsw-build.sh``::

    python3 steptrace.py --root /home/cdsw --out DIR [--skip REL]... [--clear] -- CMD...

It writes ``DIR/step.json`` (the files opened, written and deleted, and why the trace
is incomplete, if it is), moves what the step wrote to ``DIR/tree/``, with ``--clear``
removes the rest of the project, and exits with the command's status.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import select
import shutil
import stat
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence

IN_OPEN = 0x00000020
IN_IGNORED = 0x00008000
IN_Q_OVERFLOW = 0x00004000
IN_ISDIR = 0x40000000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then the name, NUL-padded)

Entry = tuple[str, int, int, int, int]  # kind, mode, size, mtime_ns, inode


def _skipped(rel: str, skip: Sequence[str]) -> bool:
    return any(rel == s or rel.startswith(s + "/") for s in skip)


def listing(root: str, skip: Sequence[str] = ()) -> dict[str, Entry]:
    """Every file, link and folder under ``root`` (relative path -> what it is), links
    not followed; paths in ``skip`` (and what is under them) left out."""
    found: dict[str, Entry] = {}
    for dirpath, dirs, names in os.walk(root):
        base = os.path.relpath(dirpath, root)
        base = "" if base == "." else base + "/"
        keep = []
        for name in dirs:
            rel = base + name
            if _skipped(rel, skip):
                continue
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("l", st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
            else:
                found[rel] = ("d", st.st_mode, 0, 0, st.st_ino)
                keep.append(name)
        dirs[:] = keep
        for name in names:
            rel = base + name
            if _skipped(rel, skip):
                continue
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            kind = "f" if stat.S_ISREG(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "o"
            found[rel] = (kind, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
    return found


def changes(before: dict[str, Entry], after: dict[str, Entry]) -> tuple[list[str], list[str]]:
    """(written, deleted): files and links that are new or changed, and paths that went.
    Folders count only when they are new and empty (a file in one says it already)."""
    parents = {rel.rsplit("/", 1)[0] for rel in after if "/" in rel}
    written = []
    for rel, entry in after.items():
        if entry[0] in "fl" and before.get(rel) != entry:
            written.append(rel)
        elif entry[0] == "d" and rel not in before and rel not in parents:
            written.append(rel)
    deleted = [
        rel for rel, entry in before.items() if rel not in after or after[rel][0] != entry[0]
    ]
    return sorted(written), sorted(deleted)


class Watcher:
    """The files under ``root`` that any process opens while this watches (one inotify
    watch per folder; ``skip``: folders not to watch; ``known``: the ``listing`` of root
    just taken, if the caller has it)."""

    def __init__(
        self, root: str, skip: Sequence[str] = (), known: dict[str, Entry] | None = None
    ) -> None:
        self.root = root
        self.opened: set[str] = set()
        self.incomplete = ""  # why the trace may miss a read, if it may
        self._dirs: dict[int, str] = {}
        self._stop = threading.Event()
        libc = ctypes.CDLL(None, use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            self.incomplete = f"inotify is not available ({os.strerror(ctypes.get_errno())})"
            self._thread: threading.Thread | None = None
            return
        for rel, entry in (known if known is not None else listing(root, skip)).items():
            if entry[0] == "d" and not self.incomplete:
                self._watch(rel)
        if not self.incomplete:
            self._watch("")
        self._thread = threading.Thread(target=self._pump, daemon=True, name="steptrace")
        self._thread.start()

    def _watch(self, rel: str) -> None:
        path = os.path.join(self.root, rel) if rel else self.root
        wd = self._add(self._fd, os.fsencode(path), IN_OPEN)
        if wd < 0:
            code = ctypes.get_errno()
            hint = " (fs.inotify.max_user_watches)" if code == errno.ENOSPC else ""
            self.incomplete = (
                f"the project's folders cannot all be watched: {os.strerror(code)}{hint}"
            )
            return
        self._dirs[wd] = rel

    def _pump(self) -> None:
        while True:
            ready, _, _ = select.select([self._fd], [], [], 0.1)
            if ready:
                self._drain()
            elif self._stop.is_set():
                return

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, size = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size : offset + _EVENT.size + size].rstrip(b"\0")
                offset += _EVENT.size + size
                if mask & IN_Q_OVERFLOW:
                    self.incomplete = (
                        "too many opens at once (the kernel's inotify queue overflowed)"
                    )
                elif mask & IN_OPEN and not mask & IN_ISDIR and name and wd in self._dirs:
                    base = self._dirs[wd]
                    self.opened.add((base + "/" if base else "") + os.fsdecode(name))

    def stop(self) -> tuple[set[str], str]:
        """(the files opened, why the trace is incomplete or ""), once every event is in."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._drain()
            os.close(self._fd)
        return self.opened, self.incomplete


def keep_outputs(root: str, written: Sequence[str], dest: str, *, move: bool) -> None:
    """Copy (or move) what a step wrote from ``root`` to the same paths under ``dest``:
    files, links (as links) and empty folders; nothing else (a FIFO or a device a step
    made is no build output), nothing followed."""
    for rel in written:
        source, target = os.path.join(root, rel), os.path.join(dest, rel)
        st = os.lstat(source)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if stat.S_ISDIR(st.st_mode):
            os.makedirs(target, exist_ok=True)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(source), target)
            if move:
                os.unlink(source)
        elif stat.S_ISREG(st.st_mode):
            if move:
                shutil.move(source, target)
            else:
                shutil.copy2(source, target, follow_symlinks=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--skip", action="append", default=[])
    parser.add_argument("--clear", action="store_true")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    before = listing(args.root, args.skip)
    watcher = Watcher(args.root, args.skip, before)
    code = subprocess.call(command, cwd=args.root) if command else 0
    opened, incomplete = watcher.stop()
    after = listing(args.root, args.skip)
    written, deleted = changes(before, after)
    os.makedirs(os.path.join(args.out, "tree"), exist_ok=True)
    keep_outputs(args.root, written, os.path.join(args.out, "tree"), move=True)
    record = {
        "status": code,
        "opened": sorted(p for p in opened if before.get(p, ("",))[0] == "f"),
        "written": written,
        "deleted": deleted,
        "incomplete": incomplete,
    }
    with open(os.path.join(args.out, "step.json"), "w") as fh:
        json.dump(record, fh)
    if args.clear:  # the project itself: the build's image copies it as it is then
        for rel in sorted(after, reverse=True):
            full = os.path.join(args.root, rel)
            if not os.path.lexists(full):
                continue
            if os.path.isdir(full) and not os.path.islink(full):
                if not os.listdir(full):
                    os.rmdir(full)
            else:
                os.unlink(full)
    return code


if __name__ == "__main__":
    sys.exit(main())
