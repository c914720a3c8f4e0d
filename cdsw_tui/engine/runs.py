"""The run contract: how a backend runs a project script (a job's run, a one-off run)
with the project folder itself read-write at /home/cdsw, as CDSW's sessions and jobs do.

One implementation per backend folder (``engine/backends/<name>/runs.py``). A run is
blocking: the controller calls ``run`` in a worker thread, which returns the script's
exit status, or raises ``BuildFailed`` with status ``cancelled`` or ``timedout`` after
stopping all of it. The script's environment is the project's own (``env_dir``), made
on its first run and kept for the next ones, which may install into it; it is never a
build's.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cdsw_tui.engine.builder import BuildFailed
from cdsw_tui.engine.buildlog import BuildLog

# where the project's environment is inside a run (outside /home/cdsw: never snapshotted)
ENV_MOUNT = "/opt/cdsw-env"
PYLIB_MOUNT = "/usr/local/lib/cdsw-pylib"
GATEWAY_MOUNT = "/run/cdsw-gateway"  # the gateway's socket folder, in a container
OURS = "[cdsw-tui] "  # a run log's lines that cdsw-tui wrote, not the script


@dataclass
class RunJob:
    run_id: int
    label: str  # "job train, run 3" for the log's first line
    project_name: str
    project_id: int
    project_dir: str
    script: str  # relative to the project
    args: list[str]
    kind: str  # python, ipython or r
    env_dir: Path  # the project's environment (host folder, ours)
    scratch: Path  # a new folder of ours for this run (its /tmp where the backend can)
    home: Path
    variables: dict[str, str]
    secret_names: frozenset[str] = frozenset()
    engine: str = ""  # the image a container runs (docker)
    python: str = ""  # the project's interpreter (local; "": the controller's)
    cpu: float = 1.0
    memory: int = 2048
    uid: int = -1  # REPLICA_UID; -1: the backend's default
    timeout: float = 0.0  # seconds, 0: none
    ca_bundle: str = ""
    app_port: int = 0  # an application's CDSW_APP_PORT (127.0.0.1 of the host), 0: none
    extra: dict[str, str] = field(default_factory=dict)


class Runner(Protocol):
    def run(self, job: RunJob, log: BuildLog, cancelled: Callable[[], bool]) -> int: ...

    def reconcile(self, home: Path) -> list[str]:
        """Stop whatever runs of this home outlived their controller; their names."""


def run_marker(home: Path, run_id: int) -> str:
    """``K=V`` in the environment of every process of a run (daemons included)."""
    return f"CDSW_TUI_RUN={home}:{run_id}"


def r_library_step(env: str, pylib: str) -> str:
    """Shell that installs ``library(cdsw)`` (pylib/R/cdsw, R code only) into the
    project's R library, once per version of it."""
    q = shlex.quote
    source, lib = f"{pylib}/R/cdsw", f"{env}/R-library"
    stamp = f"{lib}/.cdsw-DESCRIPTION"
    return (
        f"if ! cmp -s {q(source)}/DESCRIPTION {q(stamp)}; then R CMD INSTALL --no-docs "
        f"--no-html --no-multiarch --no-test-load -l {q(lib)} {q(source)} >/dev/null 2>&1 "
        f"&& cp {q(source)}/DESCRIPTION {q(stamp)} || echo '{OURS}library(cdsw) could not be "
        "installed'; fi"
    )


def script_command(
    job: RunJob, python: str, env: str, *, system_site: bool, pylib: str = ""
) -> str:
    """The shell text a run executes at /home/cdsw: make the project's environment on
    the first run (``python -m venv``; for IPython lines, IPython and requests from PyPI
    into it, as a CML session has them),
    then the script with its arguments, through python, IPython or Rscript."""
    q = shlex.quote
    lines = ["set -e"]
    if job.kind == "r":
        lines.append(f"mkdir -p {q(env)}/R-library")
        if pylib:
            lines.append(r_library_step(env, pylib))
        command = ["Rscript", job.script, *job.args]
    else:
        flag = " --system-site-packages" if system_site else ""
        # made whole or made again: a run stopped halfway leaves no marker
        lines.append(
            f"if [ ! -e {q(env)}/.cdsw-made ]; then echo '{OURS}making the project "
            f"environment (once, kept for its runs)'; {q(python)} -m venv --clear{flag} "
            f"{q(env)}; : > {q(env)}/.cdsw-made; fi"
        )
        if job.kind == "ipython":  # what a CML session has: IPython, and requests with it
            lines.append(
                f"if ! {q(env)}/bin/python -c 'import IPython, requests' 2>/dev/null; then echo "
                f"'{OURS}installing IPython and requests into the project environment (once)'; "
                f"{q(env)}/bin/python -m pip install -q --disable-pip-version-check ipython "
                "requests; fi"
            )
        session = ["-m", "cdsw_session"]
        if job.app_port:  # as CML's engine runs an application: no __file__ (cdsw_session)
            command = [f"{env}/bin/python", "-u", *session, "--app", job.script, *job.args]
        elif job.kind == "ipython":
            # IPython's own transformer turns the lines into Python (pylib/cdsw_session)
            command = [f"{env}/bin/python", "-u", *session, job.script, *job.args]
        else:
            command = [f"{env}/bin/python", "-u", job.script, *job.args]
    lines.append("exec " + " ".join(q(part) for part in command))
    return "\n".join(lines)


SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def base_variables(job: RunJob, env: str, pylib: str, path: str = SYSTEM_PATH) -> dict[str, str]:
    """What every run's process sees besides the user's and CDSW's variables: the
    project's environment first on PATH (``!pip3 install`` installs there, as in CML)."""
    return {
        "PATH": f"{env}/bin:{path}",
        "HOME": "/home/cdsw",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": pylib,  # cdsw, cml and cmlapi, as in a CML session
        "R_LIBS_USER": f"{env}/R-library",
        "VIRTUAL_ENV": env,
        "MPLBACKEND": "Agg",
    }


def by_domain(variables: dict[str, str]) -> dict[str, str]:
    """CDSW_API_URL and CDSW_PROJECT_URL at the gateway's name (CDSW_DOMAIN) rather than
    127.0.0.1, where the run's hosts file names it (a jail, a container): scripts build
    ``modelservice.`` + that URL's host, as CML's Monitoring AMP does, which only a name
    can take. Over HTTPS the address stays (the certificate names it)."""
    from urllib.parse import urlsplit, urlunsplit

    from cdsw_tui.config import DOMAIN

    changed = dict(variables)
    for key in ("CDSW_API_URL", "CDSW_PROJECT_URL"):
        parts = urlsplit(variables.get(key, ""))
        if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost"):
            netloc = f"{DOMAIN}:{parts.port}" if parts.port else DOMAIN
            changed[key] = urlunsplit(parts._replace(netloc=netloc))
    return changed


def env_folder(path: Path, uid: int) -> Path:
    """The project's environment folder: made empty for ``uid`` the first time (-1: ours),
    then only checked (a folder, not a link); nothing in it is followed or changed."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise BuildFailed(f"the project environment {path} is not a folder") from None
    else:
        if uid >= 0:
            os.chown(path, uid, uid)
    return path


def clean_scratch(scratch: Path) -> None:
    """Remove a run's scratch folder; its view of the project only once it is unmounted,
    and then only as the empty mount point: nothing of the project is ever removed."""
    from cdsw_tui.engine.idmap import mounted

    view = scratch / "project"
    if mounted(view):
        return  # still mounted: left for the next reconcile rather than risk the project
    try:
        view.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        return
    tmp = scratch / "tmp"
    if tmp.is_symlink():
        tmp.unlink()
    elif tmp.exists():
        shutil.rmtree(tmp, ignore_errors=True)  # a run wrote here: nothing is followed
    try:
        scratch.rmdir()
    except OSError:
        pass
