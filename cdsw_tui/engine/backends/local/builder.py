"""The local runtime's builder: a build directory and a Python virtual environment.

The dependency environment (venv plus whatever ``cdsw-build.sh`` wrote into the build
directory) is keyed on ``cdsw-build.sh``, the ``requirements*.txt`` files, the build
variables and the Python version; an unchanged key reuses it, so a code-only
rebuild only exports the snapshot.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cdsw_tui.engine.backends.local import homedir
from cdsw_tui.engine.builder import (
    BUILD_SCRIPT,
    BuildFailed,
    BuildJob,
    BuildResult,
    build_marker,
    dependency_files,
    log_header,
    r_library,
)
from cdsw_tui.engine.buildlog import BuildLog
from cdsw_tui.engine.process import run_logged
from cdsw_tui.engine.snapshot import SnapshotRepo
from cdsw_tui.resources import PYLIB

META_FILE = ".cdsw-build.json"
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


def interpreter(job: BuildJob) -> tuple[str, str]:
    """The build's Python (the project's, else the controller's) and its full version."""
    if not job.python:
        return sys.executable, sys.version
    try:
        out = subprocess.run(
            [job.python, "-c", "import sys; print(sys.version)"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildFailed(f"the project's Python {job.python} does not run: {exc}") from None
    if out.returncode != 0 or not out.stdout.strip():
        raise BuildFailed(f"the project's Python {job.python} does not run")
    return job.python, out.stdout.strip()


def dependency_key(
    dep_files: dict[str, str],
    variables: dict[str, str],
    ca_bundle: str,
    python: tuple[str, str] = (sys.executable, sys.version),
) -> str:
    h = hashlib.sha256()
    h.update(f"python {python[1]}\nexe {python[0]}\n".encode())
    h.update(json.dumps(sorted(dep_files.items())).encode())
    h.update(json.dumps(sorted(variables.items())).encode())
    h.update(ca_bundle.encode())
    return h.hexdigest()[:20]


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


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    result = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            result[os.path.relpath(full, root)] = (st.st_size, st.st_mtime_ns)
    return result


def make_private(root: Path, *, writable: bool = True) -> None:
    """The owner's alone (no group or other bit), read-only too unless ``writable``;
    links are neither followed nor changed."""
    keep = 0o700 if writable else 0o500
    for dirpath, dirs, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, stat.S_IMODE(os.lstat(full).st_mode) & keep)
        for name in dirs:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, keep)
    os.chmod(root, keep)


def make_read_only(root: Path) -> None:
    make_private(root, writable=False)


def make_writable(root: Path) -> None:
    if not root.exists():
        return
    os.chmod(root, 0o755)
    for dirpath, dirs, names in os.walk(root):
        for name in dirs:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, 0o755)
        for name in names:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, os.lstat(full).st_mode | stat.S_IWUSR)


class LocalBuilder:
    def __init__(self, snapshots: SnapshotRepo) -> None:
        self.snapshots = snapshots
        self.python = (sys.executable, sys.version)

    def build(
        self,
        job: BuildJob,
        log: BuildLog,
        cancelled: Callable[[], bool],
        on_pid: Callable[[int | None], None],
    ) -> BuildResult:
        deadline = time.monotonic() + job.timeout
        log_header(job, log, "local")
        dest = job.build_dir
        if dest.exists():
            make_writable(dest)
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        self.snapshots.export(job.snapshot, dest)
        files = self.snapshots.files(job.snapshot)
        log.line(f"exported {len(files)} files to {dest}")
        if cancelled():
            raise BuildFailed("cancelled by the user", status="cancelled")

        deps = dependency_files(files)
        self.python = interpreter(job)
        key = dependency_key(deps, job.variables, job.ca_bundle, self.python)
        if job.clean:  # a fresh environment of its own; the shared one may be serving replicas
            key = f"{key[:12]}-clean-{job.build_id}"
        elif homedir.unavailable() and installs_editable(dest, deps):
            # an editable install links to the folder it ran in: without /home/cdsw that
            # is this build's own, so the environment cannot serve another build
            key = f"{key[:12]}-build-{job.build_id}"
            log.line(
                "an editable install (-e) without /home/cdsw links to this build's folder: "
                "this build gets an environment of its own"
            )
        env_root = job.envs_dir / key
        job.envs_dir.mkdir(parents=True, exist_ok=True)
        with open(job.envs_dir / f"{key}.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            reused = (env_root / "complete").exists()
            if reused:
                log.line(
                    f"reusing dependency environment {key}: {BUILD_SCRIPT} and requirements "
                    "files are unchanged"
                )
                overlay = env_root / "overlay"
                if overlay.is_dir():
                    shutil.copytree(overlay, dest, dirs_exist_ok=True, symlinks=True)
            else:
                self._make_environment(job, log, cancelled, on_pid, deadline, env_root, deps)
        venv = env_root / "venv"
        link_pylib(venv)  # environments made before cdsw-tui shipped cml get it too
        (dest / META_FILE).write_text(
            json.dumps(
                {
                    "file": job.file,
                    "function": job.function,
                    "kernel": job.kernel,
                    "python": str(venv / "bin" / "python"),
                    "snapshot": job.snapshot,
                    "build": job.number,
                },
                indent=2,
            )
        )
        make_read_only(dest)
        log.line(f"build {job.number} built")
        return BuildResult(artifact=str(dest), env_path=str(venv), dep_key=key, dep_reused=reused)

    def _make_environment(
        self,
        job: BuildJob,
        log: BuildLog,
        cancelled: Callable[[], bool],
        on_pid: Callable[[int | None], None],
        deadline: float,
        env_root: Path,
        deps: dict[str, str],
    ) -> None:
        if env_root.exists():
            shutil.rmtree(env_root)
        env_root.mkdir(parents=True)
        venv = env_root / "venv"
        r_library(env_root).mkdir()  # R installs into the first library that exists
        script = job.build_dir / BUILD_SCRIPT
        log.line(
            f"creating the Python environment {env_root.name} "
            f"(Python {self.python[1].split()[0]}, {self.python[0]})"
        )
        env = self._environment(job, venv)
        self._new_venv(job, log, cancelled, on_pid, deadline, venv, with_pip=script.is_file())
        link_pylib(venv)
        if script.is_file():
            log.line(f"running {BUILD_SCRIPT}")
            before = _listing(job.build_dir)
            command = ["bash", BUILD_SCRIPT]
            if homedir.unavailable():
                log.line(f"warning: {homedir.warning(str(job.build_dir))}")
            else:  # the project at /home/cdsw, as in CDSW
                command = homedir.wrap(str(job.build_dir), command)
                env["HOME"] = homedir.HOME
            code = run_logged(
                command,
                cwd=job.build_dir,
                env=env,
                log=log,
                cancelled=cancelled,
                deadline=deadline,
                on_pid=on_pid,
                marker=build_marker(job.home, job.build_id),
            )
            if code != 0:
                shutil.rmtree(env_root, ignore_errors=True)
                raise BuildFailed(f"{BUILD_SCRIPT} exited with status {code}")
            after = _listing(job.build_dir)
            changed = [p for p, sig in after.items() if before.get(p) != sig and p != BUILD_SCRIPT]
            overlay = env_root / "overlay"
            for rel in changed:
                target = overlay / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(job.build_dir / rel, target, follow_symlinks=False)
            if changed:
                log.line(
                    f"{BUILD_SCRIPT} wrote {len(changed)} files into the build; kept for reuse"
                )
        else:
            log.line(f"no {BUILD_SCRIPT} in the project: nothing to install")
        (env_root / "deps.json").write_text(json.dumps(deps, indent=2))
        make_private(env_root)  # venv writes its scripts 0644 whatever the umask
        (env_root / "complete").write_text("")

    def _new_venv(
        self,
        job: BuildJob,
        log: BuildLog,
        cancelled: Callable[[], bool],
        on_pid: Callable[[int | None], None],
        deadline: float,
        venv: Path,
        *,
        with_pip: bool,
    ) -> None:
        """A venv without pip is instant; one with pip is copied from a base made once,
        because ensurepip takes seconds and would dominate every cold build."""
        if not with_pip:
            self._run_venv(job, log, cancelled, on_pid, deadline, [str(venv), "--without-pip"])
            return
        tag = hashlib.sha256(" ".join(self.python).encode()).hexdigest()[:12]
        base_root = job.envs_dir / f"base-{tag}"
        base = base_root / "venv"
        with open(job.envs_dir / f"base-{tag}.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (base_root / "complete").exists():
                shutil.rmtree(base_root, ignore_errors=True)
                log.line("making the base Python environment with pip (once per Python)")
                self._run_venv(job, log, cancelled, on_pid, deadline, [str(base)])
                make_private(base_root)
                (base_root / "complete").write_text("")
        shutil.copytree(base, venv, symlinks=True)
        old, new = str(base).encode(), str(venv).encode()
        for path in (venv / "bin").iterdir():
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            if old in data:
                path.write_bytes(data.replace(old, new))

    def _run_venv(
        self,
        job: BuildJob,
        log: BuildLog,
        cancelled: Callable[[], bool],
        on_pid: Callable[[int | None], None],
        deadline: float,
        args: list[str],
    ) -> None:
        code = run_logged(
            [self.python[0], "-m", "venv", *args],
            cwd=job.build_dir,
            env={k: v for k, v in os.environ.items() if k in PASSTHROUGH or k == "PATH"},
            log=log,
            cancelled=cancelled,
            deadline=deadline,
            on_pid=on_pid,
        )
        if code != 0:
            raise BuildFailed(f"creating the Python environment failed with status {code}")

    def _environment(self, job: BuildJob, venv: Path) -> dict[str, str]:
        env = {k: os.environ[k] for k in PASSTHROUGH if k in os.environ}
        env["PATH"] = f"{venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        env["VIRTUAL_ENV"] = str(venv)
        env["R_LIBS_USER"] = str(r_library(venv.parent))
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
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


def link_pylib(venv: Path) -> None:
    """``import cdsw`` and ``import cml`` in the environment's Python (the model, the
    project's scripts, cdsw-build.sh): a .pth naming this installation's pylib."""
    for site in venv.glob("lib/python3*/site-packages"):
        pth = site / "cdsw-tui.pth"
        if not pth.exists() or pth.read_text().strip() != str(PYLIB):
            pth.write_text(f"{PYLIB}\n")


def make_builder(snapshots: SnapshotRepo) -> LocalBuilder:
    return LocalBuilder(snapshots)
