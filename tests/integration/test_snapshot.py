"""Snapshots against real git: ignore rules, nested repositories, big files, the user's repo."""

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
