"""Whether the store can be trusted before anything uses it, and copies of it.

A store that is damaged (a failed ``PRAGMA quick_check``, a file SQLite cannot read), or
that is missing or empty in a home that has builds, is refused in one line that says
what to do: re-creating it would leave the home's replicas running unmanaged and its
builds unknown. Copies are made with SQLite's online backup API, so a running
controller's writes are never half in them."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from cdsw_tui.errors import CdswError

RESTORE = "restore a backup with 'cdsw-tui store restore FILE'"


class StoreDamaged(CdswError):
    pass


def _has_builds(home: Path) -> bool:
    for folder in (home / "builds", home / "logs" / "builds"):
        try:
            if any(folder.iterdir()):
                return True
        except OSError:
            continue
    return any((home / "run" / "local").glob("*.json"))


def quick_check(path: Path) -> str:
    """ "ok", or what SQLite found wrong (its first line)."""
    try:
        con = sqlite3.connect(path, timeout=10)
        try:
            rows = con.execute("PRAGMA quick_check").fetchall()
            tables = con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # locked, busy, a full disk, an I/O error: the
        return "ok"  # file may be sound; opening it says what is wrong, if anything
    except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
        return str(exc)
    first = str(rows[0][0]) if rows else "no answer"
    if first == "ok" and not tables:
        return "empty"
    return first


def check(path: Path) -> None:
    """Raise StoreDamaged unless the store at ``path`` may be used (or made, in a home
    that has nothing yet)."""
    home = path.parent
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = -1
    if size > 0:
        found = quick_check(path)
        if found == "ok":
            return
        if found != "empty":
            raise StoreDamaged(
                f"the store {path} is damaged ({found.splitlines()[0][:200]}); {RESTORE}, "
                f"or move {path.name} away to start afresh"
            )
    if _has_builds(home):
        what = "missing" if size < 0 else "empty"
        raise StoreDamaged(
            f"the store {path} is {what}, but {home} has builds; {RESTORE}, or move "
            f"{home} away to start afresh (nothing was created)"
        )


def _copy(source: Path, target: Path) -> None:
    """SQLite's online backup of ``source`` into ``target``, a file made here, private
    (keys and sealed secrets are in it)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def backup(source: Path, target: Path) -> int:
    """Copy the store to ``target`` (0600, written whole or not at all); its size."""
    if not source.exists():
        raise CdswError(f"there is no store at {source} to back up")
    part = target.with_name(f".{target.name}.part")
    part.unlink(missing_ok=True)
    try:
        _copy(source, part)
        if (found := quick_check(part)) != "ok":
            raise CdswError(f"the copy of {source} is not sound ({found}); nothing written")
        os.replace(part, target)
    except sqlite3.Error as exc:
        raise CdswError(f"cannot back up {source}: {exc}") from None
    except OSError as exc:
        raise CdswError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        part.unlink(missing_ok=True)
    return target.stat().st_size


def restore(backup_file: Path, target: Path) -> Path | None:
    """Put ``backup_file`` in the store's place; what was there is kept beside it
    (returned), never deleted. The caller makes sure no controller runs."""
    found = quick_check(backup_file) if backup_file.is_file() else "not a file"
    if found != "ok":
        raise CdswError(f"{backup_file} is not a sound store ({found}); nothing restored")
    con = sqlite3.connect(backup_file)
    try:
        ours = con.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone()
    finally:
        con.close()
    if not ours:
        raise CdswError(f"{backup_file} is an SQLite file, but not a cdsw-tui store")
    kept = None
    if target.exists():
        kept = target.with_name(f"{target.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(target, kept)
    for suffix in ("-wal", "-shm"):  # the old file's journal must not meet the new one
        side = target.with_name(target.name + suffix)
        if side.exists():
            if kept is not None:
                os.replace(side, kept.with_name(kept.name + suffix))
            else:
                side.unlink()
    _copy(backup_file, target)
    return kept
