"""Field validators shared by the CLI and the forms: each failure names its field."""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

from cdsw_tui.errors import ValidationError

KERNELS = ("python3", "r")
SCRIPT_KINDS = {".py": "python", ".R": "r", ".r": "r"}  # what a job or run may run
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
R_FUNCTION_RE = re.compile(
    r"""^[ \t]*(?P<name>[A-Za-z.][A-Za-z0-9._]*|`[^`]+`)[ \t]*(?:<-|<<-|=)[ \t]*function[ \t]*\(""",
    re.MULTILINE,
)


def name(value: str, field: str = "name") -> str:
    value = value.strip()
    if not value:
        raise ValidationError(f"{field} must not be empty", field=field)
    if "/" in value or not NAME_RE.fullmatch(value):
        raise ValidationError(
            f"{field} {value!r} may use letters, digits, spaces, '.', '_' and '-' "
            "(up to 64, starting with a letter or digit)",
            field=field,
        )
    return value


def slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-") or "model"


def pick_by_name(rows: list, ref: str, kind: str, where: str) -> object | None:
    """The one of ``rows`` (with ``.name``) that ``ref`` names: its display name as
    given (``Price Regressor``), else its slug (``price-regressor``), as listings show
    it. None when none does; one line when a slug names several."""
    exact = [r for r in rows if r.name == ref]
    if exact:
        return exact[0]
    by_slug = [r for r in rows if slug(r.name) == ref]
    if len(by_slug) > 1:
        names = ", ".join(sorted(repr(r.name) for r in by_slug))
        raise ValidationError(
            f"{ref!r} is the slug of several {kind}s {where}: say which ({names})"
        )
    return by_slug[0] if by_slug else None


def kernel(value: str) -> str:
    if value not in KERNELS:
        raise ValidationError(f"kernel must be python3 or r, not {value!r}", field="kernel")
    return value


def runtime(value: str) -> str:
    from cdsw_tui.engine import backends

    return backends.get(value).name


MIN_PYTHON = (3, 9)


def python(value: str) -> str:
    """An interpreter for the local runtime's environments: it must run, have venv, and be
    Python 3.9 or newer (what the replica runner needs)."""
    import shutil
    import subprocess

    value = value.strip()
    found = shutil.which(value) if "/" not in value else value
    if not found or not Path(found).is_file() or not os.access(found, os.X_OK):
        raise ValidationError(f"no Python interpreter at {value!r}", field="python")
    try:
        out = subprocess.run(
            [found, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValidationError(f"{value} does not run: {exc}", field="python") from None
    try:
        version = tuple(int(x) for x in out.stdout.strip().split("."))
    except ValueError:
        version = ()
    if out.returncode != 0 or not version:
        raise ValidationError(
            f"{value} is not a Python with the venv module (Debian: python3-venv)",
            field="python",
        )
    if version < MIN_PYTHON:
        raise ValidationError(
            f"{value} is Python {'.'.join(map(str, version))}; the local runtime needs 3.9 or newer",
            field="python",
        )
    return str(Path(found).absolute())


CONSTRAINT_RE = re.compile(r"[A-Za-z][\w.\-]*\s*(==|!=)\s*[^\s=!]+")


def placement(values: list[str] | tuple[str, ...]) -> str:
    """Placement constraints as Swarm spells them (``node.labels.gpu==true``), one a line."""
    kept = []
    for value in values:
        value = value.strip()
        if not CONSTRAINT_RE.fullmatch(value):
            raise ValidationError(
                f"constraint {value!r} is not 'attribute==value' or 'attribute!=value' "
                "(e.g. node.labels.gpu==true)",
                field="placement",
            )
        kept.append(value)
    return "\n".join(kept)


def replicas(value: int | str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValidationError(
            f"replicas must be a whole number, not {value!r}", field="replicas"
        ) from None
    if not 1 <= n <= 9:
        raise ValidationError(f"replicas must be between 1 and 9, not {n}", field="replicas")
    return n


def cpu(value: float | str) -> float:
    try:
        c = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"cpu must be a number, not {value!r}", field="cpu") from None
    if not c > 0 or c != c or c == float("inf"):
        raise ValidationError(f"cpu must be greater than 0, not {value}", field="cpu")
    return c


def memory(value: int | str) -> int:
    try:
        m = int(value)
    except (TypeError, ValueError):
        raise ValidationError(
            f"memory must be a whole number of MB, not {value!r}", field="memory"
        ) from None
    if m < 128:
        raise ValidationError(f"memory must be at least 128 MB, not {m}", field="memory")
    return m


def gpu(value: int | str) -> int:
    try:
        g = int(value)
    except (TypeError, ValueError):
        raise ValidationError(f"gpu must be a whole number, not {value!r}", field="gpu") from None
    if g < 0:
        raise ValidationError(f"gpu must be 0 or more, not {g}", field="gpu")
    return g


def json_text(value: str, field: str) -> str:
    """Valid JSON or empty; returned unchanged so the user's formatting is kept."""
    if value is None or not value.strip():
        return ""
    try:
        json.loads(value)
    except ValueError as exc:
        label = field.replace("_", " ")
        raise ValidationError(f"{label} is not valid JSON: {exc}", field=field) from None
    return value


def env_key(value: str) -> str:
    if not isinstance(value, str) or not ENV_KEY_RE.fullmatch(value):
        raise ValidationError(
            f"environment variable name {value!r} must be letters, digits and '_', "
            "not starting with a digit",
            field="env",
        )
    return value


def env_pairs(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValidationError(f"environment variable {pair!r} must be written K=V", field="env")
        key, value = pair.split("=", 1)
        result[env_key(key)] = value
    return result


def model_file(project_root: Path, value: str) -> Path:
    """The file, resolved inside the project; escaping the project is refused."""
    if not value or not value.strip():
        raise ValidationError("file must not be empty", field="file")
    root = project_root.resolve()
    path = (root / value).resolve()
    if root != path and root not in path.parents:
        raise ValidationError(f"file {value!r} is outside the project", field="file")
    if not path.is_file():
        raise ValidationError(f"file {value!r} does not exist in the project", field="file")
    return path


def python_functions(source: str) -> dict[str, str | None]:
    """Top-level functions of a Python file: name -> None if callable with one argument,
    else why not."""
    tree = ast.parse(source)
    found: dict[str, str | None] = {}
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef):
            found[node.name] = "is async; a model function must be a plain def"
        elif isinstance(node, ast.FunctionDef):
            a = node.args
            positional = [*a.posonlyargs, *a.args]
            required = len(positional) - len(a.defaults)
            required_kw = [k for k, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is None]
            if required_kw:
                found[node.name] = (
                    f"needs keyword arguments {', '.join(k.arg for k in required_kw)}"
                )
            elif required > 1:
                found[node.name] = (
                    f"takes {required} required arguments; a model function takes one"
                )
            elif not positional and a.vararg is None:
                found[node.name] = "takes no argument; a model function takes one"
            else:
                found[node.name] = None
    return found


def r_functions(source: str) -> dict[str, str | None]:
    return {m.group("name").strip("`"): None for m in R_FUNCTION_RE.finditer(source)}


def functions_in(path: Path, kernel_name: str) -> dict[str, str | None]:
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read {path.name}: {exc}", field="file") from None
    if kernel_name == "r":
        return r_functions(source)
    try:
        return python_functions(source)
    except SyntaxError as exc:
        raise ValidationError(
            f"{path.name} has a syntax error on line {exc.lineno}: {exc.msg}", field="file"
        ) from None


def function(path: Path, kernel_name: str, value: str) -> str:
    if not value or not value.strip():
        raise ValidationError("function must not be empty", field="function")
    found = functions_in(path, kernel_name)
    if value not in found:
        listing = ", ".join(sorted(found)) or "none"
        raise ValidationError(
            f"function {value!r} is not defined at the top level of {path.name} "
            f"(functions found: {listing})",
            field="function",
        )
    problem = found[value]
    if problem:
        raise ValidationError(f"function {value!r} {problem}", field="function")
    return value


_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"{_LABEL}(?:\.{_LABEL})*"
IMAGE_RE = re.compile(
    rf"(?:{_HOST}(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)


def engine(value: str) -> str:
    """An engine image reference as Docker spells one (``name[:tag][@digest]``)."""
    value = value.strip()
    if not value:
        raise ValidationError(
            "engine must not be empty (e.g. cdsw-tui/engine:latest)", field="engine"
        )
    if len(value) > 255 or not IMAGE_RE.fullmatch(value):
        raise ValidationError(
            f"engine {value!r} is not an image reference (lowercase name[:tag], "
            "e.g. cdsw-tui/engine:latest)",
            field="engine",
        )
    return value


def script(project_root: Path, value: str) -> str:
    """A ``.py`` or ``.R`` file inside the project, as a path relative to it."""
    path = model_file(project_root, value)
    if path.suffix not in SCRIPT_KINDS:
        raise ValidationError(
            f"script {value!r} must be a Python (.py) or R (.R) file", field="script"
        )
    return path.relative_to(project_root.resolve()).as_posix()


def timeout(value: float | str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"timeout must be seconds, not {value!r}", field="timeout") from None
    if seconds < 0:
        raise ValidationError("timeout must not be negative (0: none)", field="timeout")
    return seconds
