"""The local runtime's builder: a build folder and a Python virtual environment.

The build folder is the snapshot as exported, with what ``cdsw-build.sh`` made laid
over it. The step (a fresh environment, then ``cdsw-build.sh`` with the project at
/home/cdsw) runs in a jail as the replicas' unprivileged uid (``sandbox``), its reads of
the project traced (``steptrace``). A later build of the same project reuses its
result (the environment, and what it wrote into the tree) only when nothing it read
has changed (``stepcache``); the build log says which build's result, and why.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cdsw_tui.engine import steptrace
from cdsw_tui.engine.accounts import replica_identity
from cdsw_tui.engine.backends.local import environment as envs
from cdsw_tui.engine.backends.local import sandbox
from cdsw_tui.engine.builder import (
    BUILD_SCRIPT,
    BuildFailed,
    BuildJob,
    BuildResult,
    build_marker,
    dependency_files,
    log_header,
)
from cdsw_tui.engine.buildlog import BuildLog
from cdsw_tui.engine.process import run_logged
from cdsw_tui.engine.snapshot import SnapshotRepo
from cdsw_tui.engine.stepcache import Ran, Step, StepCache, lay_over

META_FILE = ".cdsw-build.json"
SKIP = (".venv",)  # the environment's mount point in the tree: not the project's


def make_private(root: Path, *, writable: bool = True) -> None:
    """The owner's alone (no group or other bit), read-only too unless ``writable``;
    links are neither followed nor changed. For folders of the controller's own user."""
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


@dataclass
class _Run:
    """One build's step, as its parts need it."""

    job: BuildJob
    log: BuildLog
    cancelled: Callable[[], bool]
    on_pid: Callable[[int | None], None]
    deadline: float
    python: envs.Python
    jailed: bool

    def command(self, cmd: list[str], cwd: Path, env: dict[str, str], marker: str = "") -> int:
        return run_logged(cmd, cwd=cwd, env=env, log=self.log, cancelled=self.cancelled,
                          deadline=self.deadline, on_pid=self.on_pid, marker=marker)  # fmt: skip

    def jail(self, project: Path, venv: Path, tmp: Path, expose: tuple[str, ...]) -> sandbox.Jail:
        """A writable jail for a step of this build (the home hidden)."""
        return sandbox.Jail(project=str(project), env=str(venv), tmp=str(tmp), uid=self.job.uid,
                            writable=True, expose=(self.python.prefix, *expose),
                            hide=(str(self.job.home),),
                            hosts=sandbox.hosts_file(self.job.home, self.job.uid))  # fmt: skip


class LocalBuilder:
    def __init__(self, snapshots: SnapshotRepo) -> None:
        self.snapshots = snapshots

    def build(
        self,
        job: BuildJob,
        log: BuildLog,
        cancelled: Callable[[], bool],
        on_pid: Callable[[int | None], None],
    ) -> BuildResult:
        deadline = time.monotonic() + job.timeout
        log_header(job, log, "local")
        jailed = not sandbox.unavailable()
        if job.uid < 0:
            job.uid = replica_identity().uid
        dest = job.build_dir
        if dest.exists():
            if not jailed:
                make_writable(dest)
            sandbox.remove(dest)
        dest.mkdir(parents=True)
        self.snapshots.export(job.snapshot, dest)
        if jailed:  # the jail's uid reads it (and cdsw-build.sh writes in it)
            sandbox.own(dest, job.uid)
        entries = self.snapshots.entries(job.snapshot)
        log.line(f"exported {len(entries)} files to {dest}")
        if any(p == ".venv" or p.startswith(".venv/") for p in entries):
            log.line("warning: the project's own .venv/ is hidden by the build's environment")
        if cancelled():
            raise BuildFailed("cancelled by the user", status="cancelled")

        run = _Run(job, log, cancelled, on_pid, deadline, envs.interpreter(job), jailed)
        has_script = BUILD_SCRIPT in entries
        key = envs.environment_key(job, run.python, jailed, has_script)
        cache = StepCache(job.envs_dir / f"p{job.project_id}")
        step, why = None, "--no-cache asks for a fresh run"
        if not job.clean:
            step, why = cache.find(key, entries)
        what = BUILD_SCRIPT if has_script else "the environment (no cdsw-build.sh)"
        if step is not None:
            changed = lay_over(cache.entry_dir(step.entry) / "tree", step.deleted, dest)
            if jailed:
                sandbox.own(dest, job.uid)  # what was laid over is the jail's to read too
            log.line(
                f"reusing {what} from {step.made_by} (step {step.entry}, environment "
                f"{key[:12]}): {step.why_reused()}"
                + (f"; laid {changed} files it wrote over the project" if changed else "")
            )
        else:
            log.line(f"running {what}: {why}")
            entry = f"b{job.build_id}"
            with cache.making(entry) as folder:  # a step that fails leaves nothing
                step = self._run_step(run, key, entries, entry, folder)
            cache.save(step)
        env_path = step.extra["env"]
        envs.link_pylib(Path(env_path))  # in case cdsw-build.sh removed it
        if jailed:
            (dest / ".venv").mkdir(exist_ok=True)  # where the replica's jail mounts it
        self._write_meta(job, dest, env_path)
        if not jailed:
            make_private(dest, writable=False)
        log.line(f"build {job.number} built")
        reused = step.entry != f"b{job.build_id}"
        return BuildResult(str(dest), env_path=env_path, dep_key=step.entry, dep_reused=reused)

    def _write_meta(self, job: BuildJob, dest: Path, env_path: str) -> None:
        """A note of what the folder is, written without following what the step left."""
        path = dest / META_FILE
        if path.is_symlink() or path.is_file():
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as fh:
            json.dump(
                {
                    "file": job.file,
                    "function": job.function,
                    "kernel": job.kernel,
                    "python": envs.venv_python(env_path),
                    "snapshot": job.snapshot,
                    "build": job.number,
                },
                fh,
                indent=2,
            )

    def _run_step(
        self, run: _Run, key: str, entries: dict[str, tuple[str, str]], entry: str, folder: Path
    ) -> Step:
        """A fresh environment in ``folder``, then cdsw-build.sh traced; its record."""
        job, log, jailed = run.job, run.log, run.jailed
        dest = job.build_dir
        has_script = BUILD_SCRIPT in entries
        own = ""
        if not jailed and installs_editable_here(dest, entries):
            # an editable install links to the folder it ran in: without /home/cdsw that
            # is this build's own, so its environment cannot serve another build
            own = (
                f"an editable install (-e) links to its build folder: {sandbox.warning(str(dest))}"
            )
            log.line(
                "an editable install (-e) without /home/cdsw links to this build's folder: "
                "this build gets an environment of its own"
            )
        venv = folder / (sandbox.MOUNTED_ENV if jailed else "venv")
        log.line(f"creating the Python environment (Python {run.python.version.split()[0]}, "
                 f"{run.python.executable})")  # fmt: skip
        self._new_venv(run, venv, with_pip=has_script)
        envs.link_pylib(venv)
        ran = Ran()
        if has_script:
            ran = self._script(run, venv, entry)
            steptrace.keep_outputs(str(dest), ran.written, str(folder / "tree"), move=False)
        else:
            log.line(f"no {BUILD_SCRIPT} in the project: nothing to install")
        layout = "jail" if jailed else "plain"
        extra = {"env": str(venv), "python_prefix": run.python.prefix, "layout": layout}
        step = Step.ran(job, key, entries, ran, extra, own=own)
        for line in step.outcome():
            log.line(line)
        if not jailed:
            make_private(folder)  # venv writes its scripts 0644 whatever the umask
        return step

    def _script(self, run: _Run, venv: Path, entry: str) -> Ran:
        """cdsw-build.sh, its reads of the project traced, and what it did there."""
        job, dest = run.job, run.job.build_dir
        tmp = job.home / "run" / "builds" / entry
        if run.jailed:
            (dest / ".venv").mkdir(exist_ok=True)
            os.chown(dest / ".venv", job.uid, job.uid)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            sandbox.private_folder(tmp, job.uid)
        else:
            run.log.line(f"warning: {sandbox.warning(str(dest))}")
        inside = sandbox.VENV if run.jailed else str(venv)
        env = envs.variables(job, f"{inside}/bin", envs.r_library(str(venv)), run.jailed)
        command = ["bash", BUILD_SCRIPT]
        if run.jailed:
            command = sandbox.wrap(run.jail(dest, venv, tmp, sandbox.runner_exposes()), command)
        before = steptrace.listing(str(dest), SKIP)
        watcher = steptrace.Watcher(str(dest), SKIP, before)
        run.log.line(f"running {BUILD_SCRIPT}")
        try:
            code = run.command(command, dest, env, build_marker(job.home, job.build_id))
        finally:
            opened, traced = watcher.stop()
            if run.jailed:
                sandbox.remove(tmp)
        if code != 0:
            raise BuildFailed(f"{BUILD_SCRIPT} exited with status {code}")
        written, deleted = steptrace.changes(before, steptrace.listing(str(dest), SKIP))
        return Ran(opened, traced, written, deleted)

    def _new_venv(self, run: _Run, venv: Path, *, with_pip: bool) -> None:
        """A venv without pip is instant; one with pip is copied from a base made once per
        Python, because ensurepip takes seconds and would dominate every cold build."""
        if not with_pip:
            self._make_venv(run, venv, ["--without-pip"])
            return
        envs_dir = run.job.envs_dir
        base_root = envs_dir / f"base-{envs.base_tag(run.python, run.jailed)}"
        base = base_root / (sandbox.MOUNTED_ENV if run.jailed else "venv")
        with open(envs_dir / f"{base_root.name}.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (base_root / "complete").exists():
                sandbox.remove(base_root)
                base_root.mkdir(parents=True)
                run.log.line("making the base Python environment with pip (once per Python)")
                self._make_venv(run, base, [])
                (base_root / "complete").write_text("")
        envs.copy_base(base, venv, rewrite=not run.jailed)
        if run.jailed:
            sandbox.own(venv, run.job.uid)

    def _make_venv(self, run: _Run, venv: Path, args: list[str]) -> None:
        job, python = run.job, run.python
        env = {k: v for k, v in os.environ.items() if k in envs.PASSTHROUGH or k == "PATH"}
        scratch = venv.parent / f"{venv.name}.make"
        if not run.jailed:
            command, cwd = [python.executable, "-m", "venv", *args, str(venv)], job.build_dir
        else:  # made where every jail mounts it, by the jail's uid, from an empty project
            venv.mkdir(parents=True, exist_ok=True)
            os.chown(venv, job.uid, job.uid)
            for folder in (scratch / "p", scratch / "t"):
                folder.mkdir(parents=True, exist_ok=True)
                os.chown(folder, job.uid, job.uid)
            (scratch / "p" / ".venv").mkdir(exist_ok=True)
            jail = run.jail(scratch / "p", venv, scratch / "t", ())
            command = sandbox.wrap(jail, [python.executable, "-m", "venv", *args, sandbox.VENV])
            cwd = venv.parent
            env["HOME"] = sandbox.HOME
        try:
            code = run.command(command, cwd, env)
        finally:
            if run.jailed:
                sandbox.remove(scratch)
        if code != 0:
            raise BuildFailed(f"creating the Python environment failed with status {code}")
        r_lib = venv / "R-library" if run.jailed else venv.parent / "R-library"
        r_lib.mkdir(exist_ok=True)  # R installs into the first library that exists
        if run.jailed:  # only venv ran in that jail, on an empty project: private, the uid's
            sandbox.own(venv, job.uid)


def installs_editable_here(root: Path, entries: dict[str, tuple[str, str]]) -> bool:
    deps = dependency_files({p: blob for p, (_m, blob) in entries.items()})
    return envs.installs_editable(root, deps)


def make_builder(snapshots: SnapshotRepo) -> LocalBuilder:
    return LocalBuilder(snapshots)
