"""Engine images made locally from Debian packages: there is no registry to pull from."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cdsw_tui.errors import CdswError

PACKAGES = ["python3", "python3-venv", "python3-pip", "ca-certificates", "passwd"]
R_PACKAGES = ["r-base-core", "r-cran-jsonlite"]
SUITES = {"bullseye": "3.9", "bookworm": "3.11", "trixie": "3.13"}  # Debian's python3


def docker_client(timeout: int = 120) -> Any:
    """A Docker client, or one clear line saying why there is none."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except Exception as exc:  # any failure to reach the engine reads the same
        raise CdswError(
            f"no Docker engine answers ({type(exc).__name__}); install docker.io and start dockerd, "
            "or use the local runtime"
        ) from None


def debian_mirror() -> str:
    """The host's own Debian mirror (or CDSW_TUI_DEBIAN_MIRROR): never a name written in code."""
    if os.environ.get("CDSW_TUI_DEBIAN_MIRROR"):
        return os.environ["CDSW_TUI_DEBIAN_MIRROR"]
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for line in Path(path).read_text().splitlines():
            if line.startswith("URIs:"):
                for uri in line.split()[1:]:
                    if "security" not in uri:
                        return uri
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            match = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", line)
            if match and "security" not in match.group(1):
                return match.group(1)
    raise CdswError("no Debian mirror found in /etc/apt; set CDSW_TUI_DEBIAN_MIRROR")


def suite() -> str:
    text = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    match = re.search(r"^VERSION_CODENAME=(\S+)", text, re.MULTILINE)
    return match.group(1) if match else "bookworm"


def default_tag(base: str, *, with_r: bool, suite_name: str | None) -> str:
    """``base`` (the ENGINE_IMAGE setting) for this machine's suite; another suite's or an
    R engine's name is derived from it (cdsw-tui/engine-bullseye-r:latest)."""
    repository, _, version = base.rpartition(":") if ":" in base.split("/")[-1] else (base, "", "")
    extra = "".join(
        (f"-{suite_name}" if suite_name and suite_name != suite() else "", "-r" if with_r else "")
    )
    return f"{repository}{extra}:{version or 'latest'}"


def check_suite(name: str) -> str:
    if name not in SUITES:
        raise CdswError(
            f"suite must be one of {', '.join(f'{k} (Python {v})' for k, v in SUITES.items())}, "
            f"not {name!r}"
        )
    return name


def build_engine(
    tag: str,
    *,
    with_r: bool = False,
    suite_name: str | None = None,
    log: Callable[[str], None] = print,
) -> str:
    """debootstrap a minimal Debian ``suite_name`` (default: this machine's) with Python
    (and R), import it as ``tag``; returns the image id."""
    if shutil.which("debootstrap") is None:
        raise CdswError("debootstrap is not installed (apt-get install -y debootstrap)")
    chosen = check_suite(suite_name or suite())
    client = docker_client()
    packages = PACKAGES + (R_PACKAGES if with_r else [])
    with tempfile.TemporaryDirectory(prefix="cdsw-engine-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(packages)}",
            chosen,
            str(rootfs),
            debian_mirror(),
        ]
        log(f"debootstrap {chosen} with {', '.join(packages)}")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise CdswError(f"debootstrap failed with status {proc.returncode}: {tail[0]}")
        subprocess.run(
            ["chroot", str(rootfs), "useradd", "--create-home", "--uid", "1000", "cdsw"],
            check=False,
        )
        python_version = subprocess.run(
            [
                "chroot",
                str(rootfs),
                "python3",
                "-c",
                "import sys; print('%d.%d' % sys.version_info[:2])",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
        shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
        repository, _, version = (
            tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
        )
        log(f"importing {tarball.stat().st_size / 1e6:.0f} MB as {tag}")
        client.api.import_image_from_file(
            str(tarball),
            repository=repository,
            tag=version,
            changes=[
                "ENV LANG=C.UTF-8",
                'CMD ["/bin/bash"]',
                f"LABEL cdsw.engine=1 cdsw.r={int(with_r)} cdsw.suite={chosen} "
                f"cdsw.python={python_version or '?'}",
            ],
        )
    image = client.images.get(tag)
    return image.id


def list_engines() -> list[dict]:
    client = docker_client()
    rows = []
    for image in client.images.list(filters={"label": "cdsw.engine=1"}):
        if "cdsw.model_id" in image.labels or not image.tags:
            continue  # a build (or a build's cached step) inherits its engine's labels
        rows.append(
            {
                "tags": image.tags,
                "id": image.short_id,
                "r": image.labels.get("cdsw.r") == "1",
                "suite": image.labels.get("cdsw.suite", ""),
                "python": image.labels.get("cdsw.python", ""),
                "size_mb": round(image.attrs.get("Size", 0) / 1e6),
            }
        )
    return rows


def require_engine(client: Any, tag: str) -> Any:
    """The engine image (a docker Image), or a one-line CdswError saying how to make it."""
    import docker

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        raise CdswError(
            f"engine image {tag} does not exist here (there is no registry to pull it from); "
            "make it with 'cdsw-tui engine build' or name another with --engine"
        ) from None
