"""Snapshots of a project's code into a repository of our own under CDSW_TUI_HOME.

The user's directory is only read: git runs with our ``--git-dir`` and a per-project
index file, so the user's own repository (if any) sees no commit, index or config change.
``.gitignore`` files apply, nested ones too. A nested repository's files are taken
without its ``.git``, with a warning. Files over the size limit stop the snapshot
before anything is written.
"""

from __future__ import annotations

import fcntl
import io
import os
import stat
import tarfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import git

from cdsw_tui.errors import CdswError

_IDENTITY = {
    "GIT_AUTHOR_NAME": "cdsw-tui",
    "GIT_AUTHOR_EMAIL": "cdsw-tui@localhost",
    "GIT_COMMITTER_NAME": "cdsw-tui",
    "GIT_COMMITTER_EMAIL": "cdsw-tui@localhost",
}


@dataclass
class Snapshot:
    commit: str
    tree: str
    warnings: list[str] = field(default_factory=list)


class SnapshotTooLarge(CdswError):
    pass


class SnapshotOutside(CdswError):
    """A link in the project leads out of it."""


def _fmt_mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


class SnapshotRepo:
    """The snapshot repository: one bare repository, a ref chain per project."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not (path / "HEAD").exists():
            path.mkdir(parents=True, exist_ok=True)
            repo = git.Repo.init(path, bare=True)
            with repo.config_writer() as cfg:
                cfg.set_value("gc", "auto", "0")
                cfg.set_value("core", "quotepath", "false")
        self.git = git.Git()

    def _run(self, work_tree: Path | None, index: Path | None, *args: str, **kw: object) -> str:
        env = dict(_IDENTITY)
        if index is not None:
            env["GIT_INDEX_FILE"] = str(index)
        cmd = ["git", f"--git-dir={self.path}"]
        if work_tree is not None:
            cmd.append(f"--work-tree={work_tree}")
        cmd += ["-c", "core.safecrlf=false", "-c", "advice.addEmbeddedRepo=false"]
        try:
            return self.git.execute([*cmd, *args], env=env, strip_newline_in_stdout=True, **kw)  # type: ignore[call-overload]
        except git.GitCommandError as exc:
            detail = (exc.stderr or "").strip().splitlines()
            raise CdswError(f"snapshot failed: {detail[-1] if detail else exc}") from None

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        lock_path = self.path / f"{name}.lock-cdsw"
        with open(lock_path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- taking a snapshot -------------------------------------------------

    def _untracked(self, root: Path, index: Path) -> list[str]:
        out = self._run(root, index, "ls-files", "-z", "--others", "--cached", "--exclude-standard")
        return [p for p in out.split("\0") if p]

    def _check_sizes(
        self, root: Path, limit_mb: float
    ) -> tuple[list[str], list[tuple[str, int]], list[tuple[str, str]]]:
        """Walk what git would take (nested repositories too); list nested repos, big files
        and links that lead out of the project (absolute ones included: in a build they
        would point back at the host)."""
        limit = int(limit_mb * 1024 * 1024)
        nested: list[str] = []
        big: list[tuple[str, int]] = []
        outside: list[tuple[str, str]] = []
        scratch = self.path / f"scan-{os.getpid()}.index"
        pending = [""]
        try:
            while pending:
                prefix = pending.pop()
                scratch.unlink(missing_ok=True)
                for rel in self._untracked(root / prefix if prefix else root, scratch):
                    full = f"{prefix}{rel}"
                    if rel.endswith("/"):
                        nested.append(full.rstrip("/"))
                        pending.append(full)
                        continue
                    try:
                        st = os.lstat(root / full)
                    except OSError:
                        continue
                    if stat.S_ISLNK(st.st_mode):
                        target = os.readlink(root / full)
                        lands = (root / full).parent.joinpath(target).resolve()
                        if os.path.isabs(target) or (lands != root and root not in lands.parents):
                            outside.append((full, target))
                        continue
                    if st.st_size > limit:
                        big.append((full, st.st_size))
        finally:
            scratch.unlink(missing_ok=True)
        return nested, big, outside

    def _tree_of(self, root: Path, index: Path, nested: list[str]) -> str:
        """The tree of ``root``; nested repositories (paths relative to root) are grafted in
        from their own files, so git never records them as submodule links."""
        direct = [p for p in nested if not any(p.startswith(o + "/") for o in nested)]
        excludes = [f":(exclude,literal){p}" for p in direct]
        self._run(root, index, "add", "-A", "--ignore-errors", "--", ".", *excludes)
        for path in direct:
            inner = [p[len(path) + 1 :] for p in nested if p.startswith(path + "/")]
            sub_index = self.path / f"nested-{uuid.uuid4().hex}.index"
            sub_index.unlink(missing_ok=True)
            try:
                subtree = self._tree_of(root / path, sub_index, inner)
            finally:
                sub_index.unlink(missing_ok=True)
            self._run(root, index, "rm", "-q", "-r", "--cached", "--ignore-unmatch", "--", path)
            self._run(root, index, "read-tree", f"--prefix={path}/", subtree)
        return self._run(None, index, "write-tree")

    def take(
        self, project_id: int, root: Path, *, limit_mb: float = 50.0, message: str = ""
    ) -> Snapshot:
        root = root.resolve()
        if not root.is_dir():
            raise CdswError(f"the project directory {root} does not exist")
        with self._locked(f"p{project_id}"):
            nested, big, outside = self._check_sizes(root, limit_mb)
            if outside:
                path, target = outside[0]
                more = f" (and {len(outside) - 1} more)" if len(outside) > 1 else ""
                raise SnapshotOutside(
                    f"{path} is a link to {target}, outside the project{more}: nothing outside "
                    f"the project goes into a build; copy the file in, or add '{path}' to "
                    ".gitignore"
                )
            if big:
                big.sort(key=lambda item: -item[1])
                names = ", ".join(f"{p} ({_fmt_mb(s)})" for p, s in big[:5])
                more = f" and {len(big) - 5} more" if len(big) > 5 else ""
                raise SnapshotTooLarge(
                    f"files over {limit_mb:g} MB would go into the snapshot: {names}{more}; "
                    f"add them to the project's .gitignore (e.g. a line '{big[0][0]}') and build again"
                )
            index = self.path / f"p{project_id}.index"
            tree = self._tree_of(root, index, nested)
            warnings = [
                f"nested repository {path}/ has its own .git: its files are in the snapshot, "
                "its .git is left out"
                for path in sorted(nested)
            ]
            ref = f"refs/snapshots/p{project_id}"
            parent = self._run(
                None, None, "rev-parse", "-q", "--verify", ref, with_exceptions=False
            )
            args = ["commit-tree", tree, "-m", message or "snapshot"]
            if parent:
                args += ["-p", parent]
            commit = self._run(None, None, *args)
            self._run(None, None, "update-ref", ref, commit)
            return Snapshot(commit=commit, tree=tree, warnings=warnings)

    # -- reading a snapshot ---------------------------------------------------

    def files(self, commit: str) -> dict[str, str]:
        """Path -> blob id of every file in a snapshot."""
        out = self._run(None, None, "ls-tree", "-r", "-z", commit)
        result: dict[str, str] = {}
        for entry in out.split("\0"):
            if not entry:
                continue
            meta, path = entry.split("\t", 1)
            result[path] = meta.split()[2]
        return result

    def export(self, commit: str, dest: Path) -> None:
        """Write the snapshot's files into ``dest`` (which must exist)."""
        repo = git.Repo(self.path)
        data = io.BytesIO()
        repo.archive(data, commit, format="tar")
        data.seek(0)
        with tarfile.open(fileobj=data) as tar:
            tar.extractall(dest, filter="tar")

    def read(self, commit: str, path: str) -> bytes:
        return git.Repo(self.path).git.execute(
            ["git", f"--git-dir={self.path}", "cat-file", "blob", f"{commit}:{path}"],
            stdout_as_string=False,
            strip_newline_in_stdout=False,
        )
