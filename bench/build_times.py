"""Cold build against code-only rebuild on the local runtime.

The project's cdsw-build.sh pip-installs a real PyPI package (numpy, as the quickstart
does). Each figure is the time from asking for the build (snapshot included) to
``built``, measured in this process through the same code the controller runs.

    python bench/build_times.py [--package numpy] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from cdsw_tui.config import load_settings
from cdsw_tui.controller import build_runner
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--package", default="numpy")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        root.mkdir()
        (root / "model.py").write_text("def predict(args):\n    return args\n")
        (root / "requirements.txt").write_text(f"{args.package}\n")
        (root / "cdsw-build.sh").write_text("pip install --no-input -r requirements.txt\n")
        wb = Workbench(load_settings(Path(tmp) / "home"))
        projects.create(wb, "bench", path=root)
        model = models.create(
            wb, "bench", models.ModelSpec(name="m", file="model.py", function="predict")
        )

        cold_first, reused = timed_build(wb, model, "cold, base environment made")
        assert not reused
        colds, rebuilds = [], []
        for i in range(args.rounds):
            (root / "requirements.txt").write_text(f"{args.package}\n# round {i}\n")
            elapsed, reused = timed_build(wb, model, "cold")
            assert not reused
            colds.append(elapsed)
            (root / "model.py").write_text(f"def predict(args):\n    return args  # {i}\n")
            elapsed, reused = timed_build(wb, model, "code only")
            assert reused
            rebuilds.append(elapsed)
        wb.close()

    cold = statistics.median(colds)
    rebuild = statistics.median(rebuilds)
    print(f"local runtime, cdsw-build.sh installs {args.package} ({args.rounds} rounds, medians)")
    print(f"  first cold build (makes the base env)  {cold_first:7.2f} s")
    print(f"  cold build                             {cold:7.2f} s")
    print(f"  code-only rebuild                      {rebuild:7.3f} s")
    print(
        f"  rebuild / cold                         {rebuild / cold:7.1%}   (target <= 10%, rebuild < 1.5 s)"
    )


if __name__ == "__main__":
    main()
