"""Snapshots of a project's code into a repository of our own under CDSW_TUI_HOME.

The user's directory is only read: git runs with our ``--git-dir`` and a per-project
index file, so the user's own repository (if any) sees no commit, index or config change.
What goes in is what ``git add -A`` would commit in the project's own repository: every
file its git tracks, whatever ``.gitignore`` says, and untracked files unless a
``.gitignore`` (nested ones too) matches them. The project's index is read from a
private copy with our git and our config, never by running git in the project (its
config could name programs to run). A nested repository's files are taken the same way,
without its ``.git``, with a warning. The home, if it lies inside the project, never goes
in. Files over the size limit stop the snapshot before anything is written.
"""

from __future__ import annotations

import fcntl
import io
import os
import stat
import subprocess
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


@dataclass
class _Scan:
    """What one snapshot learns while walking the project: the project's own tracked
    files per repository (by prefix below the top), the home's path if the project holds
    it, and warnings."""

    top: Path
    keep: list[str]
    tracked: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def excluded(self, full: str) -> bool:
        """The home (and what is under it) when the project holds it."""
        return any(full == k or full.startswith(k + "/") for k in self.keep)


class SnapshotTooLarge(CdswError):
    pass


class SnapshotOutside(CdswError):
    """A link in the project leads out of it."""


def _loops(link: Path) -> bool:
    try:
        link.resolve()
    except (RuntimeError, OSError):
        return True
    return False


def _fmt_mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


class SnapshotRepo:
    """The snapshot repository: one bare repository, a ref chain per project.

    ``keep_out`` is a folder no snapshot may hold (the home: its store and keys)."""

    def __init__(self, path: Path, keep_out: Path | None = None) -> None:
        self.path = path
        self.keep_out = keep_out.resolve() if keep_out is not None else None
        if not (path / "HEAD").exists():
            path.mkdir(parents=True, exist_ok=True)
            repo = git.Repo.init(path, bare=True)
            with repo.config_writer() as cfg:
                cfg.set_value("gc", "auto", "0")
                cfg.set_value("core", "quotepath", "false")
        self.git = git.Git()

    def _run(
        self,
        work_tree: Path | None,
        index: Path | None,
        *args: str,
        stdin: str | None = None,
        **kw: object,
    ) -> str:
        env = dict(_IDENTITY)
        if index is not None:
            env["GIT_INDEX_FILE"] = str(index)
        if stdin is not None:  # a NUL-separated path list, for --pathspec-from-file=-
            kw["istream"] = subprocess.PIPE
        cmd = ["git", f"--git-dir={self.path}"]
        if work_tree is not None:
            cmd.append(f"--work-tree={work_tree}")
        cmd += ["-c", "core.safecrlf=false", "-c", "advice.addEmbeddedRepo=false"]
        try:
            if stdin is not None:
                return self._feed([*cmd, *args], env, stdin)
            return self.git.execute([*cmd, *args], env=env, strip_newline_in_stdout=True, **kw)  # type: ignore[call-overload]  # GitPython overloads execute on literal flags; **kw hides them
        except git.GitCommandError as exc:
            detail = (exc.stderr or "").strip().splitlines()
            raise CdswError(f"snapshot failed: {detail[-1] if detail else exc}") from None

    def _feed(self, cmd: list[str], env: dict[str, str], stdin: str) -> str:
        done = subprocess.run(
            cmd, input=stdin.encode(), capture_output=True, env={**os.environ, **env}, check=False
        )
        if done.returncode != 0:
            raise git.GitCommandError(cmd, done.returncode, done.stderr.decode(errors="replace"))
        return done.stdout.decode(errors="surrogateescape").rstrip("\n")

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

    def _tracked(self, root: Path, scan: _Scan) -> list[str]:
        """Files the project's own git tracks at ``root`` that exist in its folder (git
        keeps them whatever .gitignore says). The index is copied without following a
        link and read by our git; one that cannot be read leaves a warning, and the
        snapshot follows .gitignore alone there."""
        where = root / ".git"
        try:
            if not stat.S_ISDIR(os.lstat(where).st_mode):
                return []  # a worktree's .git file points elsewhere: not followed
            fd = os.open(where / "index", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return []  # no repository, or one with nothing added yet
        copy = self.path / f"user-{uuid.uuid4().hex}.index"
        try:
            with os.fdopen(fd, "rb") as src:
                if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                    return []
                with open(copy, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
            out = self._run(root, copy, "ls-files", "-z", "--stage")
        except (OSError, CdswError) as exc:
            rel = os.path.relpath(where, scan.top)
            scan.warnings.append(
                f"the git index of {rel} cannot be read ({getattr(exc, 'message', exc)}): "
                "tracked files that .gitignore matches are left out there"
            )
            return []
        finally:
            copy.unlink(missing_ok=True)
        found = []
        for entry in out.split("\0"):
            meta, _, path = entry.partition("\t")
            fields = meta.split()
            if not path or len(fields) < 3 or fields[0] == "160000" or fields[2] != "0":
                continue  # nested repository links, and unmerged stages
            try:
                mode = os.lstat(root / path).st_mode
            except OSError:
                continue  # tracked but deleted in the folder: not in the snapshot
            if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
                found.append(path)
        return found

    def _check_sizes(
        self, root: Path, limit_mb: float, scan: _Scan
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
                here = root / prefix if prefix else root
                tracked = scan.tracked[prefix] = self._tracked(here, scan)
                for rel in dict.fromkeys([*self._untracked(here, scratch), *tracked]):
                    full = f"{prefix}{rel}"
                    if scan.excluded(full.rstrip("/")):
                        continue
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
                        try:
                            lands = (root / full).parent.joinpath(target).resolve()
                        except (RuntimeError, OSError):  # a loop lands nowhere: refused too
                            outside.append((full, target))
                            continue
                        if os.path.isabs(target) or (lands != root and root not in lands.parents):
                            outside.append((full, target))
                        continue
                    if st.st_size > limit:
                        big.append((full, st.st_size))
        finally:
            scratch.unlink(missing_ok=True)
        return nested, big, outside

    def _tree_of(
        self, root: Path, index: Path, nested: list[str], scan: _Scan, prefix: str = ""
    ) -> str:
        """The tree of ``root`` (``prefix`` below the project's top); nested repositories
        (paths relative to root) are grafted in from their own files, so git never
        records them as submodule links."""
        direct = [p for p in nested if not any(p.startswith(o + "/") for o in nested)]
        keep = [k[len(prefix) :] for k in scan.keep if k.startswith(prefix)]
        excludes = [f":(exclude,literal){p}" for p in [*direct, *keep]]
        self._run(root, index, "add", "-A", "--ignore-errors", "--", ".", *excludes)
        if keep:  # an index of before this rule may hold the home's files
            self._run(
                root, index, "--literal-pathspecs", "rm", "-r", "-q", "--cached",
                "--ignore-unmatch", "--", *keep,
            )  # fmt: skip
        tracked = [p for p in scan.tracked.get(prefix, []) if not scan.excluded(prefix + p)]
        if tracked:  # kept whatever .gitignore says, as the project's git keeps them
            self._run(
                root,
                index,
                "--literal-pathspecs",
                "add",
                "-f",
                "--ignore-errors",
                "--pathspec-from-file=-",
                "--pathspec-file-nul",
                stdin="".join(f"{p}\0" for p in tracked),
            )
        # what an earlier snapshot held that is now ignored and not tracked goes
        ignored = self._run(
            root, index, "ls-files", "-z", "--cached", "--ignored", "--exclude-standard"
        )
        kept = set(tracked)
        stale = [p for p in ignored.split("\0") if p and p not in kept]
        if stale:
            self._run(
                root,
                index,
                "--literal-pathspecs",
                "rm",
                "-q",
                "--cached",
                "--ignore-unmatch",
                "--pathspec-from-file=-",
                "--pathspec-file-nul",
                stdin="".join(f"{p}\0" for p in stale),
            )
        for path in direct:
            inner = [p[len(path) + 1 :] for p in nested if p.startswith(path + "/")]
            sub_index = self.path / f"nested-{uuid.uuid4().hex}.index"
            sub_index.unlink(missing_ok=True)
            try:
                subtree = self._tree_of(root / path, sub_index, inner, scan, f"{prefix}{path}/")
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
            scan = _Scan(top=root, keep=self._kept_out(root))
            nested, big, outside = self._check_sizes(root, limit_mb, scan)
            if outside:
                path, target = outside[0]
                more = f" (and {len(outside) - 1} more)" if len(outside) > 1 else ""
                if _loops(root / path):
                    raise SnapshotOutside(
                        f"{path} is a link to {target} that loops (it never reaches a file)"
                        f"{more}: remove it, or add '{path}' to .gitignore"
                    )
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
            tree = self._tree_of(root, index, nested, scan)
            warnings = [
                f"nested repository {path}/ has its own .git: its files are in the snapshot, "
                "its .git is left out"
                for path in sorted(nested)
            ] + scan.warnings
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

    def left_out(self, root: Path, rel: str) -> str:
        """Why the project file ``rel`` would not be in a snapshot of ``root``, in words
        that end a sentence; empty when it would be. Checked the way a snapshot is taken:
        the home is never taken, a file the project's git tracks always is, an untracked
        one unless a .gitignore matches it (each nested repository by its own rules)."""
        root = root.resolve()
        if self._kept_out(root) and _Scan(root, self._kept_out(root)).excluded(rel):
            return f"it is inside the cdsw-tui home {self.keep_out}, which never goes into a build"
        parts = rel.split("/")
        # the repositories the file lies in, outermost first: (their folder, the rest)
        chain = [("", rel)]
        for i in range(1, len(parts)):
            inner = "/".join(parts[:i])
            if os.path.isdir(root / inner / ".git") and not os.path.islink(root / inner / ".git"):
                chain.append((inner, "/".join(parts[i:])))
        scan = _Scan(top=root, keep=[])
        for depth, (repo_dir, rest) in enumerate(chain):
            here = root / repo_dir if repo_dir else root
            tracked = self._tracked(here, scan)
            inner = chain[depth + 1][0] if depth + 1 < len(chain) else ""
            if inner:  # in this repository, the nested one that holds the file
                subject = inner[len(repo_dir) + 1 if repo_dir else 0 :] + "/"
                if any(t.startswith(subject) for t in tracked):
                    continue
            else:
                subject = rest
                if subject in tracked:
                    continue
            hit = self._run(
                here, None, "check-ignore", "-v", "--no-index", "--", subject,
                with_exceptions=False,
            )  # fmt: skip
            if hit:
                source, _, pattern = hit.split("\t", 1)[0].rpartition(":")
                where, _, line = source.rpartition(":")
                shown = os.path.relpath(os.path.join(here, where), root) if where else ".gitignore"
                what = f"its folder {inner}/ is" if inner else "it is"
                return (
                    f"{what} matched by {shown} line {line} ('{pattern}') and not tracked by "
                    "git; a build takes what git would commit: track it (git add -f) or "
                    "change that line"
                )
        return ""

    def _kept_out(self, root: Path) -> list[str]:
        """The home's path inside ``root`` (it never goes into a snapshot), if it is there."""
        if self.keep_out is None or root not in self.keep_out.parents:
            return []
        return [self.keep_out.relative_to(root).as_posix()]

    # -- reading a snapshot ---------------------------------------------------

    def files(self, commit: str) -> dict[str, str]:
        """Path -> blob id of every file in a snapshot."""
        return {path: blob for path, (_mode, blob) in self.entries(commit).items()}

    def entries(self, commit: str) -> dict[str, tuple[str, str]]:
        """Path -> (git mode, blob id) of every file and link in a snapshot."""
        out = self._run(None, None, "ls-tree", "-r", "-z", commit)
        result: dict[str, tuple[str, str]] = {}
        for entry in out.split("\0"):
            if not entry:
                continue
            meta, path = entry.split("\t", 1)
            mode, _kind, blob = meta.split()
            result[path] = (mode, blob)
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
