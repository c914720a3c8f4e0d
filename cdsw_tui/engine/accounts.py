"""The identity model code runs as (REPLICA_UID): a uid and gid no account of this host
has, so no user here can read a replica's environment, signal it or reach its files
through /proc, and no file of anyone's is its own.

``auto`` (the default) takes the first uid from ``AUTO_FIRST`` on that neither
/etc/passwd, /etc/group (through NSS) nor a subordinate-id range (/etc/subuid,
/etc/subgid: a rootless container's users) holds, checked when the controller
starts. A number is taken as given; if a host account has it, the controller says so.
"""

from __future__ import annotations

import grp
import pwd
import threading
from dataclasses import dataclass
from pathlib import Path

from cdsw_tui.errors import CdswError

# above adduser's ranges (normal users end at 59999, Debian's on-demand ones at 64999)
# and nobody (65534), below the usual subordinate ranges (100000 and up)
AUTO_FIRST = 65600
AUTO_LAST = 99999


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    warning: str = ""  # set when a host account holds it (a REPLICA_UID given by hand)


def _subordinate(path: Path) -> list[tuple[int, int]]:
    ranges = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            ranges.append((int(parts[1]), int(parts[1]) + int(parts[2])))
    return ranges


def holder(number: int) -> str:
    """Who on this host has ``number`` as a uid or gid, in words ("" for nobody)."""
    try:
        return f"the host account {pwd.getpwuid(number).pw_name}"
    except KeyError:
        pass
    try:
        return f"the host group {grp.getgrgid(number).gr_name}"
    except KeyError:
        pass
    for path in (Path("/etc/subuid"), Path("/etc/subgid")):
        if any(low <= number < high for low, high in _subordinate(path)):
            return f"a subordinate id range in {path}"
    return ""


_lock = threading.Lock()
_chosen: dict[str, Identity] = {}


def replica_identity(setting: str = "auto") -> Identity:
    """The uid/gid for model code under the REPLICA_UID ``setting``; chosen once per
    process (so every replica and build of one controller agrees)."""
    with _lock:
        if setting not in _chosen:
            _chosen[setting] = _choose(setting.strip().lower())
        return _chosen[setting]


def _choose(setting: str) -> Identity:
    if setting in ("", "auto"):
        for number in range(AUTO_FIRST, AUTO_LAST + 1):
            if not holder(number):
                return Identity(number, number)
        raise CdswError(
            f"every uid from {AUTO_FIRST} to {AUTO_LAST} is a host account: set REPLICA_UID"
        )
    if not setting.isdigit() or not 0 < int(setting) < 2**31:
        raise CdswError(f"setting REPLICA_UID must be auto or a uid above 0, not {setting!r}")
    number = int(setting)
    who = holder(number)
    warning = (
        f"REPLICA_UID {number} is {who}: that account can read replicas' environment and "
        "reach their files; leave REPLICA_UID to auto for a uid no account has"
        if who
        else ""
    )
    return Identity(number, number, warning)
