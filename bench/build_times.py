"""Cold build against code-only rebuild on the local runtime, for the quickstart template
and for a project whose only dependency file is requirements.txt (its cdsw-build.sh
pip-installs it).

Each figure is the time from asking for the build (snapshot included) to ``built``,
measured in this process through the same code the controller runs (jailed when this
runs as root). The baselines run in the same process by hand, outside cdsw-tui:

- the floor of a cold build: ``python -m venv`` then ``pip install -r requirements.txt``;
- the other reuse design the issue weighed, which runs ``cdsw-build.sh`` on every build
  over an environment keyed on the requirement files: its cost per code-only rebuild is
  at least that pip run again on the ready environment.

    python bench/build_times.py [--package numpy] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from cdsw_tui.config import load_settings
from cdsw_tui.controller import build_runner
from cdsw_tui.resources import assets_dir
from cdsw_tui.services import builds, models, projects
from cdsw_tui.services.context import Workbench


def timed_build(wb: Workbench, model, comment: str) -> tuple[float, bool]:
    start = time.perf_counter()
    build = builds.request(wb, model, comment=comment)
    claimed = build_runner.claim_next(wb, set())
    assert claimed is not None and claimed.id == build.id
    done = build_runner.run(wb, claimed)
    elapsed = time.perf_counter() - start
    if done.status != "built":
        raise SystemExit(f"build {done.number} {done.status}: {done.reason}")
    return elapsed, done.dep_reused


def by_hand(root: Path, package: str) -> tuple[float, float]:
    """(a venv and pip install -r requirements.txt, the same pip run again)."""
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-input"]
        start = time.perf_counter()
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([*pip, "--no-cache-dir", "-r", str(root / "requirements.txt")], check=True)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run([*pip, "-r", str(root / "requirements.txt")], check=True)
        return cold, time.perf_counter() - start


def shape(name: str, root: Path, package: str, model_file: str, function: str) -> None:
    """Write one project shape into ``root``."""
    if name == "quickstart":
        shutil.copytree(assets_dir() / "templates" / "quickstart", root)
        (root / "requirements.txt").write_text(f"{package}\n")
    else:
        root.mkdir()
        (root / model_file).write_text(f"def {function}(args):\n    return args\n")
        (root / "requirements.txt").write_text(f"{package}\n")
        (root / "cdsw-build.sh").write_text("pip install --no-input -r requirements.txt\n")


def measure(name: str, package: str, rounds: int) -> dict[str, float]:
    model_file, function = ("add_numbers.py", "add") if name == "quickstart" else ("model.py", "f")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        shape(name, root, package, model_file, function)
        wb = Workbench(load_settings(Path(tmp) / "home"))
        projects.create(wb, "bench", path=root)
        model = models.create(
            wb, "bench", models.ModelSpec(name="m", file=model_file, function=function)
        )
        first, reused = timed_build(wb, model, "cold, base environment made")
        assert not reused
        colds, rebuilds = [], []
        code = (root / model_file).read_text()
        for i in range(rounds):
            (root / "requirements.txt").write_text(f"{package}\n# round {i}\n")
            elapsed, reused = timed_build(wb, model, "cold")
            assert not reused
            colds.append(elapsed)
            (root / model_file).write_text(f"{code}\n# {i}\n")
            elapsed, reused = timed_build(wb, model, "code only")
            assert reused, "a code-only change ran cdsw-build.sh again"
            rebuilds.append(elapsed)
        hand_cold, hand_again = by_hand(root, package)
        wb.close()
    return {
        "first": first,
        "cold": statistics.median(colds),
        "rebuild": statistics.median(rebuilds),
        "hand_cold": hand_cold,
        "hand_again": hand_again,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--package", default="numpy")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for name in ("quickstart", "requirements.txt only"):
        f = measure(name, args.package, args.rounds)
        print(f"local runtime, {name}: cdsw-build.sh installs {args.package} "
              f"({args.rounds} rounds, medians)")  # fmt: skip
        print(f"  first cold build (makes the base env)  {f['first']:7.2f} s")
        print(f"  cold build                             {f['cold']:7.2f} s")
        print(f"  code-only rebuild                      {f['rebuild']:7.3f} s")
        print(f"  rebuild / cold                         {f['rebuild'] / f['cold']:7.1%}   "
              "(target <= 10%)")  # fmt: skip
        print(f"  baseline by hand: venv + pip install   {f['hand_cold']:7.2f} s   "
              f"cold / that {f['cold'] / f['hand_cold']:5.2f}")  # fmt: skip
        print(f"  running cdsw-build.sh on every build   {f['hand_again']:7.3f} s   "
              f"{f['hand_again'] / f['cold']:6.1%} of cold (the other design's least rebuild)")  # fmt: skip


if __name__ == "__main__":
    main()
