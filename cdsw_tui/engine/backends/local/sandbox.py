"""Where model code runs on the local runtime, and as whom.

Under a root controller every replica and every ``cdsw-build.sh`` runs in a jail:

- its own mount, PID and IPC namespaces (``unshare``): its build folder at /home/cdsw
  (its working directory and ``HOME``, as in CDSW) and its environment at
  /home/cdsw/.venv, both read-only for a replica; /tmp and /var/tmp are a folder of its
  own, /dev/shm a tmpfs that ends with it, /proc shows its own processes only;
- folders on the way that others may not enter (/root, the home itself) are covered by
  an empty tmpfs there, and only what the command needs (its Python, cdsw-tui's runner)
  is bound back, read-only: the store and the keys are not even visible;
- a replica whose project allows no egress: a network namespace with loopback alone
  (the gateway's socket folder is bound read-only at GATEWAY_AT, and the runner
  forwards the gateway's port on its loopback there, as in a container);
- a uid and gid no host account has (REPLICA_UID), no capabilities, ``no_new_privs``,
  umask 077 (what it writes stays its own);
- its processes live and die together: the namespace's first process is a small
  ``sh`` that forwards SIGTERM to the command and exits with its status; when it ends,
  the kernel kills whatever else is in the namespace, daemons included.

Otherwise (the controller is not root, util-linux is missing, or
``CDSW_TUI_NO_HOME_MOUNT`` is set) model code runs as the controller's user in its
build folder, as CDSW's models run "with the permissions of the user that creates the
model", and callers say so.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from cdsw_tui.config import DOMAIN, MODEL_SERVICE
from cdsw_tui.resources import PACKAGE

HOME = "/home/cdsw"
VENV = f"{HOME}/.venv"
MOUNTED_ENV = "home-venv"  # an environment made at /home/cdsw/.venv, mounted there
GATEWAY_AT = "/dev/shm/.cdsw-gateway"  # in the jail's own tmpfs: nothing made on the host
SHM_MB = 64  # /dev/shm of a build (a replica's is its memory)

# $1.. as named below, then "--" and the command. Lists are one argument each, one
# path a line. Programs by absolute path: the command's PATH may lack them.
SCRIPT = r"""set -eu
umask 022
given_path=${PATH:-}
PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount=$1 setpriv=$2 uid=$3 mode=$4 shm=$5 project=$6 env=$7 tmp=$8 procs=$9
shift 9
covers=$1 exposes=$2 envat=$3 hosts=$4 lo=$5 gateway=$6
shift 7
IFS='
'
for f in $procs; do echo 0 > "$f"; done
# a network of its own: loopback up (by ioctl, as iproute2 may be missing), nothing else
[ -z "$lo" ] || "$lo" -I -S -c 'import fcntl, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH22x", fcntl.ioctl(s, 0x8913, struct.pack("16sH22x", b"lo", 0)))[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", flags | 1))'
bind() { "$mount" --bind "$1" "$2"; "$mount" -o "remount,bind,nosuid,nodev$3" "$2"; }
ro=; [ "$mode" = ro ] && ro=,ro
"$mount" -t tmpfs -o "size=${shm}m,mode=1777,nosuid,nodev" cdsw-shm /dev/shm
[ -z "$gateway" ] || { mkdir /dev/shm/.cdsw-gateway; bind "$gateway" /dev/shm/.cdsw-gateway ,ro; }
# first (the home may lie under /tmp), and read-only: the file is the jail uid's to read
[ -z "$hosts" ] || { "$mount" --bind "$hosts" /etc/hosts; "$mount" -o remount,bind,ro,nosuid,nodev /etc/hosts; }
i=0
for p in $exposes; do i=$((i+1)); mkdir "/dev/shm/.cdsw-$i"; "$mount" --bind "$p" "/dev/shm/.cdsw-$i"; done
bind "$project" /home/cdsw "$ro"
[ -z "$env" ] || { [ "$envat" = /home/cdsw/.venv ] || mkdir -p "$envat"; bind "$env" "$envat" "$ro"; }
bind "$tmp" /tmp ""
bind /tmp /var/tmp ""
for c in $covers; do "$mount" -t tmpfs -o mode=0755,size=1m,nosuid,nodev cdsw-cover "$c"; done
i=0
for p in $exposes; do
  i=$((i+1)); mkdir -p "$p"; "$mount" --move "/dev/shm/.cdsw-$i" "$p"
  "$mount" -o remount,bind,ro,nosuid,nodev "$p"; rmdir "/dev/shm/.cdsw-$i"
done
unset IFS
cd /home/cdsw
umask 077
PATH=$given_path
"$setpriv" --reuid="$uid" --regid="$uid" --clear-groups --inh-caps=-all \
  --bounding-set=-all --no-new-privs -- "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || :' TERM INT HUP
status=0
while :; do
  wait "$child" && status=0 || status=$?
  kill -0 "$child" 2>/dev/null || break
done
exit "$status"
"""


@dataclass(frozen=True)
class Jail:
    """One jailed command: host folders for /home/cdsw, /home/cdsw/.venv and /tmp."""

    project: str
    tmp: str
    uid: int
    env: str = ""
    writable: bool = False
    shm_mb: int = SHM_MB
    cgroup_procs: tuple[str, ...] = ()  # cgroup.procs files it joins first
    expose: tuple[str, ...] = ()  # host folders the command needs (an interpreter's prefix)
    hide: tuple[str, ...] = ()  # folders it must not see at all (the home)
    env_at: str = VENV  # where ``env`` is mounted (a run's project environment: elsewhere)
    hosts: str = ""  # a hosts file for /etc/hosts (the gateway's model service name in it)
    network: bool = True  # the host's network; False: a namespace of its own, loopback alone
    gateway: str = ""  # the gateway's socket folder, bound read-only at GATEWAY_AT


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/bin/{name}"


def _closed_ancestor(path: str) -> str:
    """The outermost folder above or at ``path`` that others may not enter ("" if none)."""
    parts = Path(path).parts
    for i in range(2, len(parts) + 1):
        folder = os.path.join(*parts[:i])
        try:
            mode = os.stat(folder).st_mode
        except OSError:
            return ""
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return folder
    return ""


def plan(expose: tuple[str, ...], hide: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(covers, exposes): the folders to cover with an empty tmpfs, outermost only, and
    the needed folders inside them to bind back. The jail's own /tmp and /var/tmp hide
    the host's as a cover would; a cover above a place the jail mounts on (/home/cdsw,
    /tmp) is never made."""
    needed = sorted({os.path.realpath(p) for p in expose})
    needed = [p for p in needed if not any(p.startswith(q + "/") for q in needed)]
    covers = {c for c in (_closed_ancestor(p) for p in needed) if c}
    covers |= {os.path.realpath(h) for h in hide if os.path.isdir(h)}
    mounted = (HOME, "/tmp", "/var/tmp", "/dev/shm", "/proc")
    covers = {
        c
        for c in covers
        if not any(m == c or m.startswith(c + "/") or c.startswith(m + "/") for m in mounted)
    }
    covers = {c for c in covers if not any(c.startswith(o + "/") for o in covers)}
    hidden = [*covers, "/tmp", "/var/tmp"]
    inside = [p for p in needed if any(p == c or p.startswith(c + "/") for c in hidden)]
    return sorted(covers), inside


def wrap(jail: Jail, command: list[str]) -> list[str]:
    """``command`` run in ``jail`` (see the module's docstring)."""
    covers, exposes = plan(jail.expose, jail.hide)
    lists = (jail.cgroup_procs, covers, exposes)
    if (
        any("\n" in p for group in lists for p in group)
        or "\n" in jail.project + jail.tmp + jail.env_at + jail.hosts + jail.gateway
    ):
        raise ValueError("a path with a newline cannot be jailed")
    return [
        _tool("unshare"),
        "--mount",
        "--pid",
        "--ipc",
        *([] if jail.network else ["--net"]),
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--propagation",
        "private",
        "--",
        _tool("sh"),
        "-c",
        SCRIPT,
        "cdsw-jail",
        _tool("mount"),
        _tool("setpriv"),
        str(jail.uid),
        "rw" if jail.writable else "ro",
        str(max(1, jail.shm_mb)),
        jail.project,
        jail.env,
        jail.tmp,
        "\n".join(jail.cgroup_procs),
        "\n".join(covers),
        "\n".join(exposes),
        jail.env_at,
        jail.hosts,
        "" if jail.network else sys.executable,  # what brings its loopback up
        jail.gateway,
        "--",
        *command,
    ]


def hosts_file(home: Path, uid: int) -> str:
    """This machine's /etc/hosts with the gateway's names added (``modelservice.`` and
    the domain of CDSW_DOMAIN, on 127.0.0.1): a jail's /etc/hosts, mounted read-only.
    Written by us, in our own folder, again only when it changed; readable by the jail's
    uid alone (it owns it, but a read-only mount lets it change nothing)."""
    try:
        base = Path("/etc/hosts").read_text()
    except OSError:
        base = "127.0.0.1\tlocalhost\n"
    text = f"{base.rstrip()}\n127.0.0.1\t{MODEL_SERVICE} {DOMAIN}\n"
    folder = home / "run"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"hosts-{uid}"
    try:
        if os.lstat(path).st_uid == uid and path.read_text() == text:
            return str(path)
    except OSError:
        pass
    tmp = folder / f"hosts-{uid}.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.chown(tmp, uid, uid)
    os.chmod(tmp, 0o400)
    os.replace(tmp, path)
    return str(path)


def own(path: Path, uid: int) -> None:
    """Give a folder we made (an export, a copy: nothing model code wrote) to the jail's
    uid alone: no group or other bits, as every file of the home."""
    for full in [str(path), *_walk(path)]:
        info = os.lstat(full)
        if not stat.S_ISLNK(info.st_mode):
            os.chmod(full, stat.S_IMODE(info.st_mode) & 0o700)
        os.chown(full, uid, uid, follow_symlinks=False)


def _walk(path: Path) -> list[str]:
    found: list[str] = []
    for dirpath, dirs, names in os.walk(path):
        found.extend(os.path.join(dirpath, name) for name in dirs + names)
    return found


def private_folder(path: Path, uid: int) -> Path:
    """A new, empty folder for the jail's uid alone (a replica's or a build's /tmp)."""
    if path.exists() or path.is_symlink():
        remove(path)
    os.mkdir(path, 0o700)
    os.chown(path, uid, uid)
    return path


def remove(path: Path) -> None:
    """Remove a folder model code wrote in (its processes are gone): nothing followed."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


_lock = threading.Lock()
_verdict: str | None = None  # "" when jails work here, else why not


def unavailable() -> str:
    """Why model code cannot be jailed here, in one line; empty when it can (checked once
    per process, by jailing ``true``)."""
    global _verdict
    with _lock:
        if _verdict is None:
            _verdict = _check()
        return _verdict


def _check() -> str:
    if os.environ.get("CDSW_TUI_NO_HOME_MOUNT"):
        return "turned off by CDSW_TUI_NO_HOME_MOUNT"
    missing = [t for t in ("unshare", "mount", "setpriv") if shutil.which(t) is None]
    if missing:
        return f"{' and '.join(missing)} (util-linux) {'is' if len(missing) == 1 else 'are'} not installed"
    if os.geteuid() != 0:
        return f"a jail needs a root controller (this one runs as uid {os.geteuid()})"
    try:
        os.makedirs(HOME, mode=0o755, exist_ok=True)
        info = os.lstat(HOME)
    except OSError as exc:
        return f"{HOME} cannot be made: {exc.strerror or exc}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{HOME} is not a folder"
    with tempfile.TemporaryDirectory(prefix="cdsw-jail-check-") as tmp:
        os.chmod(tmp, 0o755)
        project, scratch = Path(tmp, "p"), Path(tmp, "t")
        project.mkdir()
        scratch.mkdir()
        probe = [_tool("sh"), "-c", f'[ "$(id -u)" = 65534 ] && [ "$PWD" = {HOME} ]']
        try:
            done = subprocess.run(
                wrap(Jail(str(project), str(scratch), 65534, network=False), probe),
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unshare failed: {exc}"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"status {done.returncode}"]
        return f"a jail could not be made: {lines[-1]}"
    return ""


def warning(folder: str) -> str:
    return (
        f"model code is not jailed ({unavailable()}): it runs as uid {os.geteuid()} in "
        f"{folder}, not at {HOME}, so code that opens {HOME}/... paths will not find them"
    )


# a build from before jails: its folder at /home/cdsw in a bare mount namespace, as root
LEGACY_SCRIPT = '"$1" --bind -- "$2" /home/cdsw && cd /home/cdsw && shift 2 && exec "$@"'


def legacy_wrap(folder: str, command: list[str]) -> list[str]:
    return [
        _tool("unshare"), "--mount", "--propagation", "private", "--", _tool("sh"), "-c",
        LEGACY_SCRIPT, "cdsw-home", _tool("mount"), folder, *command,
    ]  # fmt: skip


def runner_exposes() -> tuple[str, ...]:
    """What every jailed command of ours needs of cdsw-tui itself: the runner and pylib."""
    return (str(PACKAGE),)
