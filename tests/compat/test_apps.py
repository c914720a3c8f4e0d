"""Applications as CML runs them: a web app on CDSW_APP_PORT at a URL on 127.0.0.1, the
project at /home/cdsw, started again when it dies and when the controller comes back,
stopped, started and deleted from the command line; on both runtimes."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Cli, free_port, stop_controller, write_project

APP = """\
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Page(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/die":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.path == "/go":  # a redirect to one of its own paths
            self.send_response(302)
            self.send_header("Location", "/there")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({
            "start": os.environ["CDSW_ENGINE_ID"], "cwd": os.getcwd(),
            "greeting": os.environ.get("GREETING", ""),
            "port": os.environ["CDSW_APP_PORT"], "path": self.path,
            "prefix": self.headers.get("X-Forwarded-Prefix", ""),
            "has_file": "__file__" in globals(),
            "auth": self.headers.get("Authorization", ""),
            "cookie": self.headers.get("Cookie", ""),
            "main": sys.modules["__main__"].__dict__ is globals(),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

print("serving on", os.environ["CDSW_APP_PORT"], flush=True)
HTTPServer(("127.0.0.1", int(os.environ["CDSW_APP_PORT"])), Page).serve_forever()
"""


def page(url: str) -> dict | None:
    try:
        return json.loads(httpx.get(url, timeout=5, trust_env=False).text)
    except (httpx.HTTPError, ValueError):
        return None


def next_start(url: str, before: str, limit: float = 90) -> dict:
    """The page once a start other than ``before`` serves it."""
    deadline = time.monotonic() + limit
    while (seen := page(url)) is None or seen["start"] == before:
        assert time.monotonic() < deadline, f"no new start answered at {url}"
        time.sleep(0.2)
    return seen


def listed(cli: Cli) -> dict:
    return cli("app", "list", "p", "--json").json()[0]


@pytest.mark.parametrize("runtime", ["local", "docker"])
def test_an_application_serves_dies_comes_back_and_stops(
    cli: Cli, home: Path, tmp_path: Path, request, runtime
):
    if runtime == "docker":
        request.getfixturevalue("docker_engine")
    root = write_project(tmp_path / "p", {"apps/app.py": APP})
    cli("project", "create", "p", "--path", str(root), "--runtime", runtime)
    made = cli(
        "app", "create", "p/Drift Dashboard", "--script", "apps/app.py", "--env", "GREETING=hi",
        "--wait", timeout=600,
    )  # fmt: skip
    app = listed(cli)
    url = app["url"]
    assert f"running at {url}" in made.out and url.startswith("http://127.0.0.1:")
    assert (app["name"], app["subdomain"], app["status"]) == (
        "Drift Dashboard",
        "drift-dashboard",
        "running",
    )
    first = page(url)
    assert first is not None
    assert (first["cwd"], first["greeting"], first["port"]) == (
        "/home/cdsw",
        "hi",
        str(app["port"]),
    )
    # as CML's engine runs an application: __main__ with no __file__ (Flask's root: the
    # project folder, where the AMPs' apps keep their templates)
    assert (first["has_file"], first["main"]) == (False, True)

    # killed: started again, at the same URL, with back-off
    try:
        httpx.get(url + "die", timeout=5, trust_env=False)
    except httpx.HTTPError:
        pass  # it died answering
    second = next_start(url, first["start"])
    assert listed(cli)["restarts"] == 1
    logs = cli("app", "logs", "p/drift-dashboard").out
    assert "serving on" in logs and "start 2" in logs

    # the controller killed: its keeper starts another, which finds it and starts it again
    stop_controller(home, signal.SIGKILL)
    third = next_start(url, second["start"])
    assert third["port"] == first["port"]
    # the controller stopped: so is the application; started again: so is it, at its URL
    cli("controller", "stop")
    gone = listed(cli)
    assert gone["status"] == "stopped" and "controller" in gone["reason"], gone
    assert page(url) is None
    cli("controller", "start")
    next_start(url, third["start"])
    deadline = time.monotonic() + 30
    while listed(cli)["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)

    # stopped: nothing answers; started: it does again; deleted: gone
    cli("app", "stop", "p/Drift Dashboard", "--wait")
    assert listed(cli)["status"] == "stopped" and page(url) is None
    cli("app", "start", "p/Drift Dashboard", "--wait", timeout=300)
    assert page(url) is not None
    cli("app", "delete", "p/Drift Dashboard")
    assert cli("app", "list", "--json").json() == []
    deadline = time.monotonic() + 30
    while page(url) is not None:
        assert time.monotonic() < deadline, "the deleted application still answers"
        time.sleep(0.2)


def test_a_bad_application_says_why_in_one_line(cli: Cli, tmp_path: Path):
    root = write_project(tmp_path / "p", {"app.py": "raise SystemExit('no port for me')\n"})
    cli("project", "create", "p", "--path", str(root))
    missing = cli("app", "create", "p/web", "--script", "nope.py", check=False)
    assert missing.code != 0 and "nope.py" in missing.err and "Traceback" not in missing.err
    bad = cli("app", "create", "p/web", "--script", "app.py", "--subdomain", "-x-", check=False)
    assert bad.code != 0 and "subdomain" in bad.err
    cli("app", "create", "p/web", "--script", "app.py")
    taken = cli("app", "create", "p/web", "--script", "app.py", check=False)
    assert taken.code != 0 and "already has an application named 'web'" in taken.err
    deadline = time.monotonic() + 60
    while (app := listed(cli))["restarts"] < 2 or app["status"] != "restarting":
        assert time.monotonic() < deadline, app  # it ends at once: again, later each time
        time.sleep(0.1)
    assert "exited with status 1; starting again in" in app["reason"], app
    assert "no port for me" in cli("app", "logs", "p/web").out


def own_address() -> str | None:
    """An address of this machine that is not loopback (the route out's source)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_through_the_exposed_gateway_an_application_needs_an_api_key_off_loopback(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    address = own_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    port = free_port()
    monkeypatch.setenv("CDSW_TUI_GATEWAY_HOST", "0.0.0.0")
    monkeypatch.setenv("CDSW_TUI_GATEWAY_PORT", str(port))
    root = write_project(tmp_path / "p", {"app.py": APP})
    cli("project", "create", "p", "--path", str(root))
    cli("app", "create", "p/Web", "--script", "app.py", "--wait", timeout=300)
    key = cli("apikey", "create", "browser").out.strip()
    with httpx.Client(timeout=10, trust_env=False) as http:
        # on this machine: no key (it could open the app's port itself)
        near = http.get(f"http://127.0.0.1:{port}/apps/web/some/page?q=1")
        assert near.status_code == 200, near.text
        assert (near.json()["path"], near.json()["prefix"]) == ("/some/page?q=1", "/apps/web")
        moved = http.get(f"http://127.0.0.1:{port}/apps/web/go")
        assert (moved.status_code, moved.headers["location"]) == (302, "/apps/web/there")
        far = f"http://{address}:{port}/apps/web/"
        refused = http.get(far)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "auth.api_key_required"
        assert http.get(far, headers={"Authorization": "Bearer ak-wrong"}).status_code == 401
        keyed = http.get(far, headers={"Authorization": f"Bearer {key}", "Cookie": "theirs=1"})
        assert keyed.status_code == 200
        # the key is the gateway's to check: the app (untrusted code) never sees it
        assert (keyed.json()["auth"], keyed.json()["cookie"]) == ("", "theirs=1")
        first = http.get(far + f"?api_key={key}")  # a browser: a cookie, and the URL without it
        assert first.status_code == 302 and first.headers["location"] == "/apps/web/"
        assert "HttpOnly" in first.headers["set-cookie"]
        by_cookie = http.get(far).json()  # the cookie it set
        assert by_cookie["path"] == "/" and "cdsw_app_key" not in by_cookie["cookie"]
        assert http.get(f"http://127.0.0.1:{port}/apps/nope/").status_code == 404


def test_an_application_never_takes_the_gateways_port(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Made while no controller runs, an application's port is not the gateway's, even
    when the gateway's lies in the applications' range (8787, the default, does)."""
    monkeypatch.setenv("CDSW_TUI_GATEWAY_PORT", "8100")
    root = write_project(tmp_path / "p", {"app.py": APP})
    cli("project", "create", "p", "--path", str(root))
    from cdsw_tui.config import load_settings
    from cdsw_tui.services import apps
    from cdsw_tui.services.context import Workbench

    wb = Workbench(load_settings())
    try:
        app = apps.create(wb, "p", apps.AppSpec(name="web", script="app.py"))
        assert app.port != 8100
    finally:
        wb.close()
