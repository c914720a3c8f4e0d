"""Runs on the local runtime: the script as a process of this machine.

Under a root controller a run is jailed as a replica is (``sandbox``), as REPLICA_UID,
with an id-mapped view of the project folder itself read-write at /home/cdsw (``idmap``:
what it writes lands as the project owner's), the project's environment read-write at
ENV_MOUNT, its own /tmp, and its memory bounded by a cgroup. Otherwise it runs as the
controller's user in the project folder, and its log says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from cdsw_tui.engine import idmap
from cdsw_tui.engine.backends.local import environment as envs
from cdsw_tui.engine.backends.local import sandbox
from cdsw_tui.engine.backends.local.cgroup import Cgroups
from cdsw_tui.engine.builder import BuildFailed
from cdsw_tui.engine.buildlog import BuildLog
from cdsw_tui.engine.process import kill_tree, private_dir, run_logged
from cdsw_tui.engine.runs import (
    ENV_MOUNT,
    OURS,
    SYSTEM_PATH,
    RunJob,
    base_variables,
    by_domain,
    clean_scratch,
    env_folder,
    run_marker,
    script_command,
)
from cdsw_tui.resources import PYLIB


def _variables(job: RunJob, env: str, pylib: str, home: str) -> dict[str, str]:
    passed = {k: v for k, v in os.environ.items() if k in envs.PASSTHROUGH or k == "PATH"}
    path = passed.pop("PATH", "") or SYSTEM_PATH
    values = {**passed, **base_variables(job, env, pylib, path), "HOME": home}
    if job.ca_bundle:
        values.setdefault("PIP_CERT", job.ca_bundle)
    values.update(job.variables)
    key, _, value = run_marker(job.home, job.run_id).partition("=")
    values[key] = value
    return values


class LocalRunner:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.cgroups = Cgroups(home)

    def run(self, job: RunJob, log: BuildLog, cancelled: Callable[[], bool]) -> int:
        python = envs.interpreter_of(job.python)
        deadline = time.monotonic() + job.timeout if job.timeout else float("inf")
        why_not = sandbox.unavailable()
        private_dir(job.scratch.parent)
        private_dir(job.scratch)
        if why_not:
            log.line(
                f"{OURS}this run is not jailed ({why_not}): it runs as uid "
                f"{os.geteuid()} in {job.project_dir}, not at /home/cdsw"
            )
            env = str(env_folder(job.env_dir, -1))
            text = script_command(job, python.executable, env, system_site=False, pylib=str(PYLIB))
            variables = _variables(job, env, str(PYLIB), job.project_dir)
            return self._logged(["/bin/sh", "-c", text], Path(job.project_dir), variables,
                                job, log, cancelled, deadline)  # fmt: skip
        view = job.scratch / "project"
        view.mkdir(mode=0o700)
        try:
            idmap.mount(job.project_dir, view, job.uid)
        except OSError as exc:
            view.rmdir()
            raise BuildFailed(
                f"the project folder cannot be given to the run read-write: {exc}"
            ) from None
        name = f"run-{job.run_id}"
        try:
            tmp = sandbox.private_folder(job.scratch / "tmp", job.uid)
            env_folder(job.env_dir, job.uid)
            jail = sandbox.Jail(
                project=str(view),
                env=str(job.env_dir),
                env_at=ENV_MOUNT,
                tmp=str(tmp),
                uid=job.uid,
                writable=True,
                cgroup_procs=self.cgroups.make(name, job.memory),
                expose=(python.prefix, *sandbox.runner_exposes()),
                hide=(str(self.home),),
                hosts=sandbox.hosts_file(self.home, job.uid),
            )
            text = script_command(
                job, python.executable, ENV_MOUNT, system_site=False, pylib=str(PYLIB)
            )
            variables = by_domain(_variables(job, ENV_MOUNT, str(PYLIB), sandbox.HOME))
            variables.update(USER="cdsw", TMPDIR="/tmp")
            command = sandbox.wrap(jail, ["/bin/sh", "-c", text, "cdsw-run"])
            return self._logged(command, job.scratch, variables, job, log, cancelled, deadline)
        finally:
            idmap.unmount(view)
            self.cgroups.remove(name)
            clean_scratch(job.scratch)

    def _logged(
        self,
        command: list[str],
        cwd: Path,
        variables: dict[str, str],
        job: RunJob,
        log: BuildLog,
        cancelled: Callable[[], bool],
        deadline: float,
    ) -> int:
        try:
            return run_logged(
                command,
                cwd=cwd,
                env=variables,
                log=log,
                cancelled=cancelled,
                deadline=deadline,
                on_pid=lambda _pid: None,
                marker=run_marker(job.home, job.run_id),
            )
        except BuildFailed as exc:
            if exc.status == "timedout":
                raise BuildFailed(
                    f"the run passed its timeout of {job.timeout:g} s", "timedout"
                ) from None
            raise

    def reconcile(self, home: Path) -> list[str]:
        """Processes of runs whose controller died, found by their marker, and the views
        and scratch folders they left."""
        stopped = []
        root = home / "run" / "runs"
        if not root.is_dir():
            return []
        for scratch in sorted(root.iterdir()):
            if not scratch.name.isdigit():
                continue
            kill_tree(0, run_marker(home, int(scratch.name)).encode(), grace=0)
            view = scratch / "project"
            idmap.unmount(view)
            self.cgroups.remove(f"run-{scratch.name}")
            clean_scratch(scratch)
            stopped.append(scratch.name)
        return stopped


def make_runner(home: Path) -> LocalRunner:
    return LocalRunner(home)
