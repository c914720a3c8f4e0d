"""What earlier build steps (``cdsw-build.sh``) of a project made, and when a new build
may reuse one.

Each project has its own (``<home>/envs/p<project id>/``): no build reuses what another
project's build made. An entry is named after the build that ran the step
(``b<build id>``) and records what the step depended on:

- ``environment``: a key of everything outside the project it ran with (the Python
  or the engine, the build variables, the CA bundle, what cdsw-tui puts in);
- the project's names, modes and link targets when it ran (``steptrace`` sees opens,
  not lookups, so a file added, removed or renamed runs the step again);
- the blob of every project file it opened (every file of the project when its reads
  could not be traced).

It is reused only when all three are the same, and the build log says which entry and
which files decided. Its outputs (an environment, an image, what it wrote into the
tree) sit beside its record; ``step.json`` is written last, so a step that did not
finish is never found.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cdsw_tui.engine.builder import BuildJob

RECORD = "step.json"
LINK_MODE = "120000"

Entries = dict[str, tuple[str, str]]  # path -> (git mode, blob): SnapshotRepo.entries


def names_digest(entries: Entries) -> str:
    """The project's paths, modes and link targets (not file contents)."""
    h = hashlib.sha256()
    for path in sorted(entries):
        mode, blob = entries[path]
        h.update(f"{path}\0{mode}\0{blob if mode == LINK_MODE else ''}\n".encode())
    return h.hexdigest()[:24]


def _listed(paths: list[str], limit: int = 3) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


@dataclass
class Ran:
    """What a step did to the project: the files it opened (``traced``: why that may be
    short of all), and what it wrote and deleted there."""

    opened: set[str] = field(default_factory=set)
    traced: str = ""
    written: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, record: dict) -> Ran:
        """From steptrace's record (model code's: only its strings are taken)."""

        def strings(key: str) -> list[str]:
            value = record.get(key, [])
            return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

        return cls(set(strings("opened")), str(record.get("incomplete", "")),
                   strings("written"), strings("deleted"))  # fmt: skip


@dataclass
class Step:
    entry: str
    made_by: str  # "build 3 of demo/add"
    environment: str
    names: str
    paths: list[str]
    reads: dict[str, str]  # path -> blob
    traced: str = ""  # "" when the reads were traced, else why not
    own: str = ""  # "" when another build may reuse it, else why its result is its own
    written: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)  # the backend's (env folder, image)

    def differs(self, environment: str, entries: Entries) -> str:
        """Why this step cannot serve a build of ``entries`` ("" when it can)."""
        if self.own:
            return f"{self.made_by}'s result is its own ({self.own})"
        if environment != self.environment:
            return (
                f"what it runs with changed since {self.made_by} (the Python or engine, the "
                "build variables or the CA bundle)"
            )
        if self.names and names_digest(entries) != self.names:  # "": ran no project code
            then = set(self.paths)
            added = sorted(p for p in entries if p not in then)
            gone = sorted(p for p in then if p not in entries)
            moved = [f"+{p}" for p in added] + [f"-{p}" for p in gone]
            what = f": {_listed(moved)}" if moved else " (a mode or a link)"
            return f"files were added, removed or renamed since {self.made_by}{what}"
        changed = sorted(p for p, blob in self.reads.items() if entries.get(p, ("", ""))[1] != blob)
        if changed:
            return f"{_listed(changed)} changed since {self.made_by}"
        return ""

    @classmethod
    def ran(
        cls, job: BuildJob, environment: str, entries: Entries, ran: Ran, extra: dict[str, str],
        own: str = "",
    ) -> Step:  # fmt: skip
        """The record of ``job``'s step that just ran on ``entries`` (a project without
        cdsw-build.sh ran none of its code: its names and files do not matter)."""
        script = "cdsw-build.sh" in entries
        return cls(
            entry=f"b{job.build_id}",
            made_by=f"build {job.number} of {job.project_name}/{job.model_name}",
            environment=environment,
            names=names_digest(entries) if script else "",
            paths=sorted(entries) if script else [],
            reads=recorded_reads(ran.opened, entries, ran.traced) if script else {},
            traced=ran.traced,
            own=own,
            written=ran.written,
            deleted=ran.deleted,
            extra=extra,
        )

    def outcome(self) -> list[str]:
        """What the build log says of a step that just ran."""
        lines = []
        if self.written or self.deleted:
            lines.append(
                f"cdsw-build.sh wrote {len(self.written)} and deleted {len(self.deleted)} files "
                "in the project: they are this build's"
            )
        if self.traced:
            lines.append(f"warning: {self.traced}: this result is reused only for the same code")
        return lines

    def why_reused(self) -> str:
        if self.traced:
            return (
                f"its reads could not be traced ({self.traced}), so it is reused only while "
                "every file of the project is the same, as it is"
            )
        opened = sorted(self.reads)
        files = (
            f"the {len(opened)} project files it read ({_listed(opened, 5)})"
            if opened
            else ("it read no project file")
        )
        return f"{files} are unchanged, and no file was added, removed or renamed"


class StepCache:
    """The step entries of one project."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def entry_dir(self, entry: str) -> Path:
        return self.folder / entry

    def steps(self) -> list[Step]:
        """Complete entries, newest first."""
        found = []
        if not self.folder.is_dir():
            return []
        for record in self.folder.glob(f"b*/{RECORD}"):
            try:
                found.append(Step(**json.loads(record.read_text())))
            except (OSError, ValueError, TypeError):
                continue  # an entry of an older layout, or damaged: never reused
        return sorted(found, key=lambda s: -int(s.entry[1:]) if s.entry[1:].isdigit() else 0)

    def find(self, environment: str, entries: Entries) -> tuple[Step | None, str]:
        """The newest entry a build of ``entries`` may reuse, or None and why none."""
        steps = self.steps()
        for step in steps:
            if not step.differs(environment, entries):
                return step, ""
        if not steps:
            return None, "no earlier build of this project ran it"
        near = next((s for s in steps if s.environment == environment), steps[0])
        return None, near.differs(environment, entries)

    def save(self, step: Step) -> None:
        folder = self.entry_dir(step.entry)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{RECORD}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(step), fh)
        os.replace(tmp, folder / RECORD)

    @contextmanager
    def making(self, entry: str) -> Iterator[Path]:
        """A fresh folder for the entry a step is making; a step that fails, is
        cancelled or times out leaves nothing of it."""
        if self.entry_dir(entry).exists():
            self.drop(entry)
        self.entry_dir(entry).mkdir(parents=True)
        try:
            yield self.entry_dir(entry)
        except BaseException:
            self.drop(entry)
            raise

    def drop(self, entry: str) -> None:
        """Remove an entry (its processes are gone): its record first, then its files."""
        folder = self.entry_dir(entry)
        (folder / RECORD).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)


def lay_over(tree: Path, deleted: list[str], dest: Path) -> int:
    """Put a step's outputs (its ``tree`` folder, its deletions) over a new build's
    export in ``dest``, as if it had just run there; the number of paths changed."""
    from cdsw_tui.engine.steptrace import keep_outputs, listing

    for rel in deleted:
        _clear(dest / rel)
    written = sorted(
        rel
        for rel, entry in listing(str(tree)).items()
        if entry[0] in "fl" or entry[0] == "d" and not any((tree / rel).iterdir())
    )
    for rel in written:
        if (dest / rel).is_symlink() or (dest / rel).is_file():
            _clear(dest / rel)
    keep_outputs(str(tree), written, str(dest), move=False)
    return len(written) + len(deleted)


def _clear(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def recorded_reads(opened: set[str], entries: Entries, traced: str) -> dict[str, str]:
    """What a step's record keys on: the blob of each project file it opened, or of every
    file when its reads were not traced."""
    if traced:
        return {path: blob for path, (_mode, blob) in entries.items()}
    return {path: entries[path][1] for path in sorted(opened) if path in entries}
