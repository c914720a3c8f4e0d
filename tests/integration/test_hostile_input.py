"""Secrets and hostile input on the local runtime: a private home, secrets sealed at rest,
no key in any log, clients that talk only to our gateway, builds that read only the
project, and bounds on what a caller or a model can make the controller hold."""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path

import httpx
import pytest

from cdsw_tui.services import models, projects
from tests.conftest import Cli, write_project
from tests.helpers import JSON, call, create_model

CODE = """\
import os


def add(args):
    return args["a"] + args["b"]


def env(args):
    return {k: v for k, v in os.environ.items() if k.endswith(("TOKEN", "PASSWORD"))}


def big(args):
    return "x" * (args["mb"] * 1024 * 1024)
"""


@pytest.fixture
def project(wb, tmp_path: Path) -> Path:
    root = write_project(tmp_path / "proj", {"m.py": CODE})
    projects.create(wb, "p", path=root)
    return root


def test_the_home_is_private(cli: Cli, wb, project, home: Path):
    create_model(cli, "add", "add")
    assert call(wb, "p/add", {"a": 1, "b": 2}).status_code == 200
    cli("build", "p/add", "--wait")
    time.sleep(0.3)
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    opened = []
    # a jailed replica's /tmp is its own (model code's, REPLICA_UID's, 0700): what is in it
    # is no file of ours, and nobody else can reach it
    jail_tmp = [p for p in (home / "run" / "local").glob("*.tmpdir") if p.stat().st_uid != 0]
    for path in home.rglob("*"):
        if path.is_symlink() or any(t in path.parents for t in jail_tmp):
            continue
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        if mode & 0o077:
            opened.append(f"{path.relative_to(home)} {mode:o}")
    assert opened == []
    for name in ("cdsw.db", "cdsw.db-wal", "logs/controller.log"):
        if (home / name).exists():
            assert stat.S_IMODE(os.stat(home / name).st_mode) == 0o600, name
    if os.geteuid() == 0:  # another user cannot read a single key from the store
        import subprocess
        import sys

        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "import os, sys; os.setgid(65534); os.setuid(65534); open(sys.argv[1]).read(1)",
                str(home / "cdsw.db"),
            ],
            capture_output=True,
            text=True,
        )
        assert probe.returncode != 0 and "PermissionError" in probe.stderr


def test_a_loose_home_is_tightened_with_a_warning(cli: Cli, home: Path):
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    result = cli("project", "list")
    assert "warning:" in result.err and "now 0700" in result.err
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700


def test_secret_variables_are_sealed_at_rest(cli: Cli, wb, project, home: Path):
    cli("env", "set", "API_TOKEN=tok-1234567890-global", "PLAIN=visible")
    cli(
        "model",
        "create",
        "p/env",
        "--file",
        "m.py",
        "--function",
        "env",
        "--env",
        "MODEL_TOKEN=tok-0987654321-model",
        "--no-deploy",
    )
    cli("build", "p/env", "--wait")
    cli("deploy", "p/env", "--env", "DB_PASSWORD=pw-5555-deployment", "--wait")
    seen = call(wb, "p/env", {}).json()["response"]
    assert seen.pop("CDSW_METRICS_TOKEN").startswith(f"{models.resolve(wb, 'p/env').id}:")
    assert seen == {
        "API_TOKEN": "tok-1234567890-global",
        "MODEL_TOKEN": "tok-0987654321-model",
        "DB_PASSWORD": "pw-5555-deployment",
    }
    con = sqlite3.connect(home / "cdsw.db")
    con.execute("PRAGMA wal_checkpoint(FULL)")
    con.close()
    raw = b"".join(p.read_bytes() for p in home.glob("cdsw.db*"))
    for secret in (b"tok-1234567890-global", b"tok-0987654321-model", b"pw-5555-deployment"):
        assert secret not in raw
    assert b"visible" in raw  # only secret-looking names are sealed
    listed = cli("env", "list", "--show-secrets").out
    assert "tok-1234567890-global" in listed


def raw_exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)  # no half-close: a real client waits for the answer
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


MALFORMED = [
    # HTTP/1.0 with a body and no Content-Length
    b'POST /model HTTP/1.0\r\nHost: localhost\r\n\r\n{"accessKey": "%(key)s", "request": {}}',
    # a broken chunked body
    b"POST /model HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n%(key)s\r\n",
    # a bad header line carrying the key
    b"POST /model HTTP/1.1\r\nHost: localhost\r\nX-Key %(key)s\r\nContent-Length: 2\r\n\r\n{}",
    # a request line that is not HTTP
    b"%(key)s %(key)s %(key)s\r\n\r\n",
    # a method it does not allow, and a path it does not know
    b"GET /model HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 32\r\n\r\n%(key)s",
    b"POST /nowhere HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 32\r\n\r\n%(key)s",
]


def test_malformed_requests_get_spec_json_and_no_key_reaches_a_log(
    cli: Cli, wb, project, home: Path
):
    import json

    create_model(cli, "add", "add")
    key = models.resolve(wb, "p/add").access_key
    for template in MALFORMED:
        answer = raw_exchange(wb.settings.gateway_port, template % {b"key": key.encode()})
        head, _, body = answer.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:200]
        error = json.loads(body)  # SPEC's failure shape, whatever broke
        assert error["success"] is False and error["error"]["code"], body
        assert key.encode() not in answer
    time.sleep(0.5)
    for path in home.rglob("*"):
        if path.is_file() and not path.name.startswith("cdsw.db"):
            assert key.encode() not in path.read_bytes(), f"{path} holds the access key"


def test_slow_headers_are_timed_out(cli: Cli, wb, project, home: Path):
    (home / "config.toml").write_text("header_timeout = 2\n")
    create_model(cli, "add", "add")
    import json
    import socket

    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", wb.settings.gateway_port), timeout=15) as s:
        s.sendall(b"POST /model HTTP/1.1\r\nHost: localhost\r\n")  # and the rest never comes
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    waited = time.monotonic() - start
    assert 1.5 < waited < 6
    head, _, body = answer.partition(b"\r\n\r\n")
    assert (
        head.startswith(b"HTTP/1.1 408") and json.loads(body)["error"]["code"] == "request.invalid"
    )


class Listener:
    """A plain HTTP server on 127.0.0.1 that records what it is sent (a proxy, or an
    impostor on the gateway port) and answers every request 200 with ``{}``."""

    def __init__(self, port: int = 0) -> None:
        import socket
        import threading

        self.seen: list[bytes] = []
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", port))
        self.server.listen()
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    self.seen.append(conn.recv(65536))
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
                    )
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.server.close()


def test_call_does_not_go_through_a_proxy(cli: Cli, wb, project):
    create_model(cli, "add", "add")
    proxy = Listener()
    try:
        env = {
            "HTTP_PROXY": f"http://127.0.0.1:{proxy.port}",
            "http_proxy": f"http://127.0.0.1:{proxy.port}",
            "NO_PROXY": "",
            "no_proxy": "",
        }
        result = cli("call", "p/add", '{"a": 2, "b": 2}', env=env)
    finally:
        proxy.close()
    assert '"response": 4' in result.out
    assert proxy.seen == []


def test_call_sends_no_key_to_whatever_holds_the_gateway_port(cli: Cli, wb, project, home: Path):
    from tests.conftest import free_port, stop_controller

    create_model(cli, "add", "add")
    key = models.resolve(wb, "p/add").access_key
    stop_controller(home)
    impostor = Listener(free_port())
    try:
        result = cli(
            "call", "p/add", check=False, env={"CDSW_TUI_GATEWAY_PORT": str(impostor.port)}
        )
    finally:
        impostor.close()
    assert result.code == 1
    assert "not this home's controller" in result.err and len(result.err.strip().splitlines()) == 1
    assert impostor.seen and not any(key.encode() in request for request in impostor.seen)


def test_call_can_send_an_api_key(cli: Cli, wb, project):
    create_model(cli, "add", "add")
    cli("model", "auth", "p/add", "on")
    api_key = cli("apikey", "create", "ci").out.strip()
    refused = cli("call", "p/add", check=False)
    assert refused.code == 1 and "auth.api_key_required" in refused.out
    assert '"response": 8' in cli("call", "p/add", '{"a": 4, "b": 4}', "--api-key", api_key).out
    by_env = cli("call", "p/add", '{"a": 1, "b": 7}', env={"CDSW_TUI_API_KEY": api_key})
    assert '"response": 8' in by_env.out


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"accessKey": "%(key)s", "request": {"a": NaN, "b": 1}}', "NaN, which is not JSON"),
        (b'{"accessKey": "%(key)s", "request": {"a": Infinity, "b": 1}}', "Infinity"),
        (b'{"accessKey": "%(key)s", "request": {"a": -Infinity, "b": 1}}', "-Infinity"),
        (
            b'{"accessKey": "%(key)s", "request": {"a": 1' + b"1" * 5000 + b', "b": 1}}',
            "more than 4300 digits",
        ),
    ],
    ids=["nan", "infinity", "minus-infinity", "5001-digits"],
)
def test_what_python_takes_but_json_does_not_is_400(cli: Cli, wb, project, raw, message):
    create_model(cli, "add", "add")
    key = models.resolve(wb, "p/add").access_key.encode()
    r = httpx.post(
        wb.settings.gateway_url + "/model", content=raw % {b"key": key}, timeout=30, headers=JSON
    )
    assert r.status_code == 400, r.text
    assert (
        r.json()["error"]["code"] == "request.invalid" and message in r.json()["error"]["message"]
    )


def test_an_answer_over_the_limit_is_502_and_not_held(cli: Cli, wb, project, home: Path):
    (home / "config.toml").write_text("max_response_bytes = 10485760\n")  # 10 MB
    create_model(cli, "big", "big", "--memory", "1024")
    from cdsw_tui.services.lock import state

    def rss_mb() -> float:
        for line in Path(f"/proc/{state(home).pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    assert call(wb, "p/big", {"mb": 1}).status_code == 200
    before = rss_mb()
    r = call(wb, "p/big", {"mb": 120})
    assert r.status_code == 502 and r.json()["error"]["code"] == "model.invalid_response"
    assert "over the 10 MB limit" in r.json()["error"]["message"]
    assert rss_mb() - before < 40  # the 120 MB answer was never read into the controller
    assert call(wb, "p/big", {"mb": 1}).status_code == 200  # and the replica serves on


def test_a_variable_name_with_a_newline_is_refused(cli: Cli):
    result = cli("env", "set", "FOO\n=bar", check=False)
    assert result.code == 1 and "FOO" in result.err and len(result.err.strip().splitlines()) == 1
    assert cli("env", "list", "--json").out.strip() == "[]"


def test_a_full_disk_on_deploy_is_one_line(cli: Cli, wb, tmp_path: Path):
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        home = disk / "home"
        home.mkdir()
        (home / "config.toml").write_text("min_free_mb = 1\n")  # the disk is 24 MB in all
        small = Cli(home, tmp_path)
        root = write_project(tmp_path / "p", {"m.py": CODE})
        small("project", "create", "p", "--path", str(root))
        small("model", "create", "p/add", "--file", "m.py", "--function", "add", "--no-deploy")
        small("build", "p/add", "--wait")
        subprocess.run(["dd", "if=/dev/zero", f"of={disk}/filler", "bs=64k"], capture_output=True)
        result = small("deploy", "p/add", check=False)
        assert result.code == 1
        assert len(result.err.strip().splitlines()) == 1, result.err
        assert "disk is full" in result.err and "Traceback" not in result.err
    finally:
        from tests.conftest import stop_controller, stop_replicas

        stop_controller(disk / "home")
        stop_replicas(disk / "home")
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_a_link_out_of_the_project_never_reaches_a_build(
    cli: Cli, wb, project: Path, tmp_path: Path, how: str
):
    secret = tmp_path / "outside" / "host-secret.txt"
    secret.parent.mkdir()
    secret.write_text("numpy  # from outside the project\n")
    target = str(secret) if how == "absolute" else os.path.relpath(secret, project)
    (project / "requirements.txt").symlink_to(target)
    (project / "inside.txt").write_text("fine\n")
    (project / "alias.txt").symlink_to("inside.txt")  # a link within the project is kept
    cli("model", "create", "p/add", "--file", "m.py", "--function", "add", "--no-deploy")
    result = cli("build", "p/add", check=False)
    assert result.code == 1 and len(result.err.strip().splitlines()) == 1
    assert "requirements.txt is a link to" in result.err and "outside the project" in result.err
    (project / "requirements.txt").unlink()
    cli("build", "p/add", "--wait")
    build_dir = wb.build_dir(models.resolve(wb, "p/add").id, 1)
    assert os.readlink(build_dir / "alias.txt") == "inside.txt"
    assert not any("host-secret" in os.readlink(p) for p in build_dir.rglob("*") if p.is_symlink())


def test_a_link_that_loops_is_one_line(cli: Cli, wb, project: Path):
    """loop1 -> loop2 -> loop1 in a project: one line naming the link (before: an
    "unexpected RuntimeError: Symlink loop")."""
    (project / "loop2").symlink_to("loop1")
    (project / "loop1").symlink_to("loop2")
    cli("model", "create", "p/add", "--file", "m.py", "--function", "add", "--no-deploy")
    result = cli("build", "p/add", check=False)
    assert result.code == 1 and len(result.err.strip().splitlines()) == 1, result.err
    assert "is a link to loop" in result.err and "that loops" in result.err
    assert "unexpected" not in result.err
    (project / "loop1").unlink()
    (project / "loop2").unlink()
    cli("build", "p/add", "--wait")


PEAK = (  # VmHWM starts again at exec (ru_maxrss would carry the parent's over)
    "import atexit, sys\n"
    "hwm = lambda: next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
    "atexit.register(lambda: print('PEAK', hwm(), file=sys.stderr))\n"
    "from cdsw_tui.cli import main\n"
    "main(sys.argv[1:], prog_name='cdsw-tui')\n"
)


def peak_mb(home: Path, *args: str) -> tuple[float, str]:
    """Run the CLI; its peak resident memory (MB) and its output."""
    import subprocess
    import sys

    env = dict(os.environ, CDSW_TUI_HOME=str(home))
    proc = subprocess.run(
        [sys.executable, "-c", PEAK, *args], capture_output=True, text=True, env=env, timeout=120
    )
    peak = int(proc.stderr.rsplit("PEAK", 1)[1].split()[0])
    return peak / 1024, proc.stdout


def test_logs_are_read_from_the_end_and_streamed(cli: Cli, wb, project, home: Path):
    create_model(cli, "add", "add")
    call(wb, "p/add", {"a": 1, "b": 2})
    model = models.resolve(wb, "p/add")
    [log] = list(home.glob(f"logs/replicas/m{model.id}/d*/*.log"))
    line = "2026-01-01T00:00:00.000Z stdout " + "y" * 200 + "\n"
    with open(log, "a") as fh:  # 60 MB of old output
        for _ in range(6):
            fh.write(line * 50_000)
        fh.write("2026-01-01T00:00:01.000Z stdout the very last line\n")
    peak, out = peak_mb(home, "logs", "p/add", "--tail", "3")
    assert out.strip().splitlines()[-1].endswith("the very last line")
    assert len(out.strip().splitlines()) == 3
    assert peak < 100, f"logs --tail 3 on 60 MB took {peak:.0f} MB"
    build_log = wb.build_log_path(model.id, 1)
    with open(build_log, "a") as fh:
        for _ in range(6):
            fh.write(line * 50_000)
    peak, out = peak_mb(home, "build-log", "p/add", "1")
    assert out.count("\n") > 300_000
    assert peak < 100, f"build-log of 60 MB took {peak:.0f} MB"


def test_build_and_replica_logs_rotate_at_their_limit(cli: Cli, wb, project: Path, home: Path):
    (home / "config.toml").write_text("log_max_mb = 2\n")
    (project / "cdsw-build.sh").write_text(
        "python3 -c \"import sys\nfor i in range(60000): print('z' * 100)\"\necho the end\n"
    )
    (project / "chatty.py").write_text(
        "def f(args):\n    print(('w' * 100 + '\\n') * 20000)\n    return 'ok'\n"
    )
    cli("model", "create", "p/chatty", "--file", "chatty.py", "--function", "f", "--wait")
    model = models.resolve(wb, "p/chatty")
    build_log = wb.build_log_path(model.id, 1)
    assert build_log.stat().st_size <= 2.1 * 1024 * 1024
    assert (build_log.parent / (build_log.name + ".1")).exists()
    assert cli("build-log", "p/chatty", "1").out.strip().splitlines()[-1].endswith("built")
    for _ in range(4):  # 8 MB of replica output
        assert call(wb, "p/chatty", {}).status_code == 200
    time.sleep(0.5)
    [log] = list(home.glob(f"logs/replicas/m{model.id}/d*/*.log"))
    assert log.stat().st_size <= 2.1 * 1024 * 1024
    assert (log.parent / (log.name + ".1")).exists()


def test_output_without_newlines_does_not_stall_the_model(cli: Cli, wb, project: Path, home: Path):
    (project / "flood.py").write_text(
        "import sys\n\ndef f(args):\n    sys.stdout.write('q' * (100 * 1024 * 1024))\n"
        "    sys.stdout.flush()\n    return 'done'\n"
    )
    cli("model", "create", "p/flood", "--file", "flood.py", "--function", "f", "--wait")
    start = time.monotonic()
    r = call(wb, "p/flood", {})
    assert r.status_code == 200 and r.json()["response"] == "done"
    assert time.monotonic() - start < 20


def test_a_local_replicas_spool_is_emptied_as_it_is_filed(cli: Cli, wb, project: Path, home: Path):
    (home / "config.toml").write_text("log_max_mb = 100\n")  # one log file to count lines in
    (project / "talk.py").write_text(
        "def f(args):\n    for i in range(args['n']):\n        print(f'line {i:07d} ' + 'v' * 90)\n"
        "    return args['n']\n"
    )
    cli("model", "create", "p/talk", "--file", "talk.py", "--function", "f", "--wait")
    for _ in range(3):  # 3 x 10 MB of output
        assert call(wb, "p/talk", {"n": 100_000}).status_code == 200
    model = models.resolve(wb, "p/talk")
    [log] = list(home.glob(f"logs/replicas/m{model.id}/d*/*.log"))
    deadline = time.monotonic() + 20
    while log.read_text().count(" line 0099999 ") < 3:
        assert time.monotonic() < deadline, "not every line reached the log"
        time.sleep(0.2)
    assert log.read_text().count(" stdout line ") == 300_000  # none lost, none twice
    [spool] = list((home / "run" / "local").glob("talk-*.out"))
    assert spool.stat().st_size < 12 * 1024 * 1024  # emptied as it went, not 30 MB
