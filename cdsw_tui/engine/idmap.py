"""An id-mapped view of a project folder, so a run as REPLICA_UID can write the project
(CDSW's sessions write theirs) without the project changing owner.

The project's files, owned by its owner on disk, appear owned by the run's uid in the
view, and what the run creates there is stored as the owner's: nothing is chowned or
chmodded, and the run still has no identity of the host. Linux 5.12+ (``open_tree``,
``mount_setattr``, ``move_mount``), root only, on file systems that support it (ext4,
xfs, btrfs, tmpfs...).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import time
from pathlib import Path

SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442  # x86-64 and arm64 alike
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, 0o2000000
AT_FDCWD, AT_EMPTY_PATH = -100, 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 4
MOUNT_ATTR_IDMAP = 0x00100000


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


class IdmapUnavailable(OSError):
    """The view cannot be made here (not root, an old kernel, a file system without it)."""


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise IdmapUnavailable(err, f"{what} failed: {os.strerror(err)}")
    return result


def _userns(owner: tuple[int, int], uid: int) -> int:
    """A user namespace mapping ``owner`` (uid, gid) on disk to ``uid`` in the view, held
    open by an fd (the process that made it is gone)."""
    me = os.readlink("/proc/self/ns/user")
    proc = subprocess.Popen(["unshare", "--user", "--", "sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{proc.pid}/ns/user") == me:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise IdmapUnavailable("unshare --user did not make a user namespace")
            time.sleep(0.001)
        Path(f"/proc/{proc.pid}/uid_map").write_text(f"{owner[0]} {uid} 1\n")
        Path(f"/proc/{proc.pid}/setgroups").write_text("deny")
        Path(f"/proc/{proc.pid}/gid_map").write_text(f"{owner[1]} {uid} 1\n")
        return os.open(f"/proc/{proc.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        proc.kill()
        proc.wait()


def mount(source: str, target: Path, uid: int) -> None:
    """Mount at ``target`` (an empty folder of ours) a view of ``source`` in which the
    files of ``source``'s owner are ``uid``'s."""
    if os.geteuid() != 0:
        raise IdmapUnavailable("an id-mapped view needs a root controller")
    info = os.stat(source)
    libc = ctypes.CDLL(None, use_errno=True)
    ns = _userns((info.st_uid, info.st_gid), uid)
    tree = -1
    try:
        tree = _check(
            libc.syscall(
                SYS_OPEN_TREE, AT_FDCWD, os.fsencode(source), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC
            ),
            "open_tree",
        )
        attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, ns)
        _check(
            libc.syscall(
                SYS_MOUNT_SETATTR,
                tree,
                b"",
                AT_EMPTY_PATH,
                ctypes.byref(attr),
                ctypes.c_size_t(ctypes.sizeof(attr)),
            ),  # fmt: skip
            "mount_setattr",
        )
        _check(
            libc.syscall(
                SYS_MOVE_MOUNT,
                tree,
                b"",
                AT_FDCWD,
                os.fsencode(str(target)),
                MOVE_MOUNT_F_EMPTY_PATH,
            ),  # fmt: skip
            "move_mount",
        )
    finally:
        os.close(ns)
        if tree >= 0:
            os.close(tree)


def mounted(target: Path) -> bool:
    """Whether something is mounted at ``target``, as the kernel's mount table says (a
    bind of the same file system has the same device: ``os.path.ismount`` misses it)."""
    wanted = os.path.realpath(target)
    try:
        table = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return os.path.ismount(target)
    for line in table.splitlines():
        fields = line.split(" ")
        if len(fields) > 4 and _unescape(fields[4]) == wanted:
            return True
    return False


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def unmount(target: Path) -> None:
    """Take the view away (lazily: a process still in it keeps it until it ends)."""
    while mounted(target):
        done = subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)
        if done.returncode:
            return  # left mounted: whoever removes the folder must look first
