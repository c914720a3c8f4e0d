"""The Python of a local build: which interpreter, the key of what a step runs with, the
virtual environment (made from a base copied once per interpreter), and the variables
``cdsw-build.sh`` sees.

A jailed environment is made at /home/cdsw/.venv inside its jail (so every path in it
is that one, whichever build mounts it); an unjailed one at its own folder.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cdsw_tui.engine import process
from cdsw_tui.engine.backends.local import sandbox
from cdsw_tui.engine.builder import BUILD_SCRIPT, BuildFailed, BuildJob, build_marker
from cdsw_tui.resources import PYLIB

PASSTHROUGH = (
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "USER",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_CONSTRAINT",
    "PIP_CERT",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
)


@dataclass(frozen=True)
class Python:
    executable: str  # the real interpreter (not a shim)
    version: str
    prefix: str  # its installation, which a jail binds back in


def interpreter(job: BuildJob) -> Python:
    """The build's Python (the project's, else the controller's)."""
    return interpreter_of(job.python)


def interpreter_of(python: str) -> Python:
    """The interpreter ``python`` names ("": the controller's own)."""
    if not python:
        return Python(sys.executable, sys.version, sys.base_prefix)
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(sys.executable); print(sys.base_prefix); "
             "print(sys.version)"],
            capture_output=True,
            text=True,
            timeout=20,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildFailed(f"the project's Python {python} does not run: {exc}") from None
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or len(lines) < 3:
        raise BuildFailed(f"the project's Python {python} does not run")
    return Python(lines[0], " ".join(lines[2:]), lines[1])


def step_key(home: Path) -> bytes:
    """The home's key for secret build variables in a step's key (a digest of a secret
    is never written where a guess could be checked against it)."""
    return process.private_key(home / "run" / "step.key", lambda: secrets.token_hex(32).encode())


def variables_digest(job: BuildJob) -> str:
    key = step_key(job.home)
    items = sorted(
        (k, hmac.new(key, v.encode(), "sha256").hexdigest() if k in job.secret_names else v)
        for k, v in job.variables.items()
    )
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def environment_key(job: BuildJob, python: Python, jailed: bool, has_script: bool) -> str:
    """Everything outside the project that a local step runs with."""
    h = hashlib.sha256()
    h.update(f"local {'jail' if jailed else 'plain'} script={has_script}\n".encode())
    h.update(f"python {python.version}\nexe {python.executable}\npylib {PYLIB}\n".encode())
    h.update(variables_digest(job).encode())
    bundle = Path(job.ca_bundle) if job.ca_bundle else None
    h.update(bundle.read_bytes() if bundle and bundle.is_file() else b"")
    return h.hexdigest()[:24]


EDITABLE_REQUIREMENT = re.compile(r"^\s*(-e|--editable)(\s+|=)(?!\S*\+|https?:)", re.MULTILINE)
EDITABLE_SCRIPT = re.compile(r"\binstall\b[^\n]*\s(-e|--editable)\b")


def installs_editable(root: Path, deps: dict[str, str]) -> bool:
    """Whether a requirements file or cdsw-build.sh installs a local folder editable."""
    for rel in deps:
        pattern = EDITABLE_SCRIPT if rel == BUILD_SCRIPT else EDITABLE_REQUIREMENT
        if rel == BUILD_SCRIPT or rel.endswith(".txt"):
            try:
                text = (root / rel).read_text(errors="replace")
            except OSError:
                continue
            if pattern.search(text):
                return True
    return False


def venv_python(env_path: str) -> str:
    """Where a build's environment has its Python, as the replica sees it."""
    if Path(env_path).name == sandbox.MOUNTED_ENV:
        return f"{sandbox.VENV}/bin/python"
    return str(Path(env_path) / "bin" / "python")


def r_library(env_path: str) -> str:
    """Where R packages that ``cdsw-build.sh`` installs go (``R_LIBS_USER``), as the
    process sees it: in the build's environment, never the host's site library."""
    if Path(env_path).name == sandbox.MOUNTED_ENV:
        return f"{sandbox.VENV}/R-library"
    return str(Path(env_path).parent / "R-library")


def link_pylib(venv: Path) -> None:
    """``import cdsw`` and ``import cml`` in the environment's Python (the model, the
    project's scripts, cdsw-build.sh): a .pth naming this installation's pylib."""
    for site in venv.glob("lib/python3*/site-packages"):
        pth = site / "cdsw-tui.pth"
        if pth.is_symlink() or not pth.exists() or pth.read_text().strip() != str(PYLIB):
            pth.unlink(missing_ok=True)
            fd = os.open(pth, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{PYLIB}\n")


def variables(job: BuildJob, venv_bin: str, r_lib: str, jailed: bool) -> dict[str, str]:
    """What ``cdsw-build.sh`` runs with."""
    env = {k: os.environ[k] for k in PASSTHROUGH if k in os.environ}
    env["PATH"] = f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    env["VIRTUAL_ENV"] = str(Path(venv_bin).parent)
    env["R_LIBS_USER"] = r_lib
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if jailed:  # the project is at /home/cdsw; pip's cache in the jail's /tmp, not the tree
        env.update(HOME=sandbox.HOME, USER="cdsw", TMPDIR="/tmp", PIP_CACHE_DIR="/tmp/pip-cache")
    if job.ca_bundle:
        for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
            env[name] = job.ca_bundle
    env.update(job.workbench)
    env.update(job.variables)
    key, _, value = build_marker(job.home, job.build_id).partition("=")
    env[key] = value
    env["CDSW_PROJECT"] = job.project_name
    env["CDSW_MODEL_NAME"] = job.model_name
    env["CDSW_MODEL_ID"] = str(job.model_id)
    env["CDSW_BUILD_NUMBER"] = str(job.number)
    return env


def base_tag(python: Python, jailed: bool) -> str:
    where = "jail" if jailed else "plain"
    return hashlib.sha256(f"{python.executable} {python.version} {where}".encode()).hexdigest()[:12]


def copy_base(base: Path, venv: Path, *, rewrite: bool) -> None:
    """A new environment from the base one (a venv with pip takes seconds to make, a copy
    milliseconds); an unjailed one names its own folder in its scripts."""
    shutil.copytree(base, venv, symlinks=True)
    if not rewrite:
        return  # a jailed one is at /home/cdsw/.venv wherever it is
    old, new = str(base).encode(), str(venv).encode()
    for path in (venv / "bin").iterdir():
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old in data:
            path.write_bytes(data.replace(old, new))
