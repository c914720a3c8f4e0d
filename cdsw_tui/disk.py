"""A full disk, said in one line: which disk (its mount point), and how much is free."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

DISK_ERRORS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EIO))
SIGNS = (
    "No space left on device",
    "Disk quota exceeded",
    "Input/output error",
    "database or disk is full",  # SQLite's SQLITE_FULL
)


def mount_point(path: Path) -> Path:
    path = _existing(path)
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def free_mb(path: Path) -> float:
    return shutil.disk_usage(_existing(path)).free / 1024 / 1024


def _existing(path: Path) -> Path:
    """``path``, or its nearest folder that exists (a build folder not made yet)."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def describe(path: Path) -> str:
    """``the disk holding /var (12 MB free)``."""
    try:
        return f"the disk holding {mount_point(path)} ({free_mb(path):.0f} MB free)"
    except OSError:
        return f"the disk holding {path}"


def failure(exc: BaseException) -> OSError | None:
    """The disk error (ENOSPC, EDQUOT, EIO) in ``exc``, if it is one: an OSError, or a
    copy's ``shutil.Error`` with such an error among its (source, target, why) list."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRORS:
        return exc
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
        for entry in exc.args[0]:
            why = str(entry[-1]) if isinstance(entry, tuple) and entry else str(entry)
            for code in DISK_ERRORS:
                if f"[Errno {code}]" in why:
                    return OSError(code, os.strerror(code))
    if any(sign in str(exc) for sign in SIGNS):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    cause = exc.__cause__ or exc.__context__
    return failure(cause) if cause is not None and cause is not exc else None


def reason(error: OSError, where: Path) -> str:
    return f"{error.strerror or 'a write failed'} on {describe(where)}"


def too_little(path: Path, min_mb: float) -> str:
    """Why a build must not start on the disk of ``path`` ("" if it may)."""
    if min_mb <= 0:
        return ""
    try:
        free = free_mb(path)
    except OSError:
        return ""
    if free >= min_mb:
        return ""
    return (
        f"only {free:.0f} MB free on the disk holding {mount_point(path)} "
        f"(MIN_FREE_MB is {min_mb:g}); free some space and build again"
    )
