"""Snapshots against real git: ignore rules, nested repositories, big files, the user's repo."""

import shutil
import subprocess
from pathlib import Path

import pytest

from cdsw_tui.engine.snapshot import SnapshotRepo, SnapshotTooLarge
from tests.conftest import write_project


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> SnapshotRepo:
    return SnapshotRepo(tmp_path / "snapshots.git")


def test_gitignore_files_are_honoured_nested_ones_too(tmp_path: Path, repo: SnapshotRepo):
    root = write_project(
        tmp_path / "p",
        {
            "model.py": "x = 1\n",
            ".gitignore": ".env\n*.log\n",
            ".env": "SECRET=1\n",
            "run.log": "x\n",
            "data/.gitignore": "raw/\n",
            "data/raw/big.csv": "1,2\n",
            "data/clean.csv": "1\n",
        },
    )
    snap = repo.take(1, root)
    assert set(repo.files(snap.commit)) == {
        "model.py",
        ".gitignore",
        "data/.gitignore",
        "data/clean.csv",
    }
    assert snap.warnings == []


def test_unchanged_code_gives_the_same_tree_and_a_change_a_new_one(
    tmp_path: Path, repo: SnapshotRepo
):
    root = write_project(tmp_path / "p", {"model.py": "x = 1\n"})
    first, second = repo.take(1, root), repo.take(1, root)
    assert first.tree == second.tree and first.commit != second.commit
    (root / "model.py").write_text("x = 2\n")
    assert repo.take(1, root).tree != first.tree
    # the older snapshot still reads as it was
    assert repo.read(first.commit, "model.py") == b"x = 1\n"


def test_the_users_repository_is_never_touched(tmp_path: Path, repo: SnapshotRepo):
    root = write_project(tmp_path / "p", {"model.py": "x = 1\n", "notes.txt": "n\n"})
    git(root, "init", "-q")
    git(
        root,
        "-c",
        "user.email=a@b",
        "-c",
        "user.name=a",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "init",
    )
    (root / "model.py").write_text("x = 2\n")
    before = {p: p.stat().st_mtime_ns for p in (root / ".git").rglob("*")}
    status_before = git(root, "status", "--porcelain")
    snap = repo.take(1, root)
    assert "model.py" in repo.files(snap.commit)
    assert not any(p.startswith(".git/") for p in repo.files(snap.commit))
    after = {p: p.stat().st_mtime_ns for p in (root / ".git").rglob("*")}
    assert before == after
    assert git(root, "status", "--porcelain") == status_before
    assert git(root, "log", "--oneline").count("\n") == 1


def test_nested_repository_is_snapshotted_without_its_git_with_a_warning(
    tmp_path: Path, repo: SnapshotRepo
):
    root = write_project(
        tmp_path / "p",
        {
            "model.py": "x\n",
            "vendor/lib/util.py": "u\n",
            "vendor/lib/.gitignore": "*.tmp\n",
            "vendor/lib/x.tmp": "t\n",
        },
    )
    git(root / "vendor" / "lib", "init", "-q")
    deeper = write_project(root / "vendor" / "lib" / "deep", {"d.py": "d\n"})
    git(deeper, "init", "-q")
    snap = repo.take(1, root)
    files = set(repo.files(snap.commit))
    assert files == {
        "model.py",
        "vendor/lib/util.py",
        "vendor/lib/.gitignore",
        "vendor/lib/deep/d.py",
    }
    assert len(snap.warnings) == 2 and "vendor/lib/" in snap.warnings[0]
    # and again, with the persistent index in place
    assert repo.take(1, root).tree == snap.tree


def test_big_unignored_file_stops_before_any_work(tmp_path: Path, repo: SnapshotRepo):
    root = write_project(tmp_path / "p", {"model.py": "x\n"})
    with open(root / "weights.bin", "wb") as fh:
        fh.truncate(60 * 1024 * 1024)
    objects_before = sorted(p.name for p in (repo.path / "objects").rglob("*"))
    with pytest.raises(SnapshotTooLarge) as err:
        repo.take(1, root)
    message = err.value.message
    assert "weights.bin (60.0 MB)" in message and ".gitignore" in message and "\n" not in message
    assert sorted(p.name for p in (repo.path / "objects").rglob("*")) == objects_before
    (root / ".gitignore").write_text("weights.bin\n")
    assert "weights.bin" not in repo.files(repo.take(1, root).commit)


def test_export_writes_the_files(tmp_path: Path, repo: SnapshotRepo):
    root = write_project(tmp_path / "p", {"a.py": "a\n", "pkg/b.py": "b\n", "run.sh": "echo\n"})
    snap = repo.take(1, root)
    dest = tmp_path / "out"
    dest.mkdir()
    repo.export(snap.commit, dest)
    assert (dest / "pkg" / "b.py").read_text() == "b\n"
    assert (dest / "run.sh").stat().st_mode & 0o100


def commit_all(root: Path, *paths: str) -> None:
    git(root, "init", "-q")
    git(root, "add", "-f", *paths)
    git(root, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "c")


def test_a_tracked_file_is_taken_whatever_gitignore_says(tmp_path: Path, repo: SnapshotRepo):
    # Cloudera's AMPs ignore 'R' (the R library); a tracked code/R/model.py stays, as in git
    root = write_project(
        tmp_path / "p",
        {".gitignore": "R\n*.log\n", "code/R/model.py": "x = 1\n", "code/R/cache.py": "c\n"},
    )
    commit_all(root, ".gitignore", "code/R/model.py")
    (root / "run.log").write_text("untracked and ignored\n")
    snap = repo.take(1, root)
    assert set(repo.files(snap.commit)) == {".gitignore", "code/R/model.py"}
    assert repo.left_out(root, "code/R/model.py") == ""
    why = repo.left_out(root, "code/R/cache.py")
    assert "matched by .gitignore line 1 ('R')" in why and "not tracked" in why
    # untracked again: the persistent index lets it go at the next snapshot
    git(root, "rm", "-q", "--cached", "code/R/model.py")
    assert set(repo.files(repo.take(1, root).commit)) == {".gitignore"}
    # tracked but deleted in the folder: not there, as git add -A would record it
    git(root, "add", "-f", "code/R/model.py")
    (root / "code" / "R" / "model.py").unlink()
    assert set(repo.files(repo.take(1, root).commit)) == {".gitignore"}


def test_a_nested_repositorys_tracked_files_follow_its_own_git(tmp_path: Path, repo: SnapshotRepo):
    root = write_project(
        tmp_path / "p",
        {"m.py": "m\n", "vendor/lib/.gitignore": "build\n", "vendor/lib/build/gen.py": "g\n"},
    )
    commit_all(root / "vendor" / "lib", ".gitignore", "build/gen.py")
    (root / "vendor" / "lib" / "build" / "other.py").write_text("o\n")
    files = set(repo.files(repo.take(1, root).commit))
    assert files == {"m.py", "vendor/lib/.gitignore", "vendor/lib/build/gen.py"}
    assert repo.left_out(root, "vendor/lib/build/gen.py") == ""
    assert "vendor/lib/.gitignore line 1" in repo.left_out(root, "vendor/lib/build/other.py")


def test_a_project_git_index_that_is_a_link_is_not_followed(tmp_path: Path, repo: SnapshotRepo):
    secret = write_project(tmp_path / "elsewhere", {"index": "not an index"})
    root = write_project(tmp_path / "p", {"m.py": "m\n", ".gitignore": "m.py\n"})
    (root / ".git").mkdir()
    (root / ".git" / "index").symlink_to(secret / "index")
    snap = repo.take(1, root)
    assert set(repo.files(snap.commit)) == {".gitignore"} and snap.warnings == []


def test_a_damaged_project_index_warns_and_follows_gitignore(tmp_path: Path, repo: SnapshotRepo):
    root = write_project(tmp_path / "p", {"m.py": "m\n"})
    (root / ".git").mkdir()
    (root / ".git" / "index").write_bytes(b"DIRC garbage")
    snap = repo.take(1, root)
    assert set(repo.files(snap.commit)) == {"m.py"}
    assert len(snap.warnings) == 1 and "git index of .git cannot be read" in snap.warnings[0]


def test_the_home_never_goes_into_a_snapshot(tmp_path: Path):
    # a project made before the rule (or at a folder above the home): its store stays out
    root = write_project(tmp_path / "p", {"m.py": "m\n", "home/cdsw.db": "keys\n"})
    (root / "home" / "secret.key").write_text("k\n")
    commit_all(root, "m.py", "home/cdsw.db")  # even tracked by the project's git
    repo = SnapshotRepo(root / "home" / "snapshots.git", keep_out=root / "home")
    snap = repo.take(1, root)
    assert set(repo.files(snap.commit)) == {"m.py"}
    assert "never goes into a build" in repo.left_out(root, "home/cdsw.db")
    # an index written by an older snapshot with the home in it loses it too
    plain = SnapshotRepo(tmp_path / "old.git")
    index = plain.path / "p1.index"
    plain.take(1, root)
    shutil.copy(index, repo.path / "p1.index")
    assert set(repo.files(repo.take(1, root).commit)) == {"m.py"}
