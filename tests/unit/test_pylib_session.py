"""What a CML session script finds in pylib beside the metrics API: ``cdsw.track_file``
says in one line where the file is, ``cml.data_v1`` imports and names what it needs, and
cmlapi's records and requests behave as the generated client's do."""

from __future__ import annotations

import subprocess
import sys

from cdsw_tui.resources import PYLIB


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(PYLIB), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )


def test_track_file_says_one_line():
    done = run("import cdsw; cdsw.track_file('out/model.pkl')")
    assert done.returncode == 0
    assert done.stderr.strip().splitlines() == [
        "cdsw.track_file: out/model.pkl stays in the project (no separate copy is kept)"
    ]


def test_cml_data_v1_imports_and_each_call_names_what_it_needs():
    done = run("import cml.data_v1 as d; d.get_connection('spark')")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "cml.data_v1.DataConnectionError: cml.data_v1 needs CML's data connections (Spark, "
        "Hive, Impala), which cdsw-tui does not have; read the data from files in the "
        "project instead"
    )


def test_cmlapi_records_and_requests():
    done = run(
        "import cmlapi\n"
        "r = cmlapi.Record({'id': '1', 'owner': {'username': 'me'}, 'tags': [{'a': 1}]})\n"
        "assert r.owner.username == 'me' and r.tags[0].a == 1\n"
        "r.environment = '{}'\n"
        "assert r.to_dict() == {'id': '1', 'owner': {'username': 'me'}, 'tags': [{'a': 1}],"
        " 'environment': '{}'}\n"
        "assert cmlapi.CreateModelRequest(name='Price Regressor').to_dict() == "
        "{'name': 'Price Regressor'}\n"
        "try:\n    cmlapi.CreateModelRequest(nme='x')\nexcept TypeError as e:\n    print(e)\n"
        "try:\n    cmlapi.default_client()\nexcept ValueError as e:\n    print(e)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "CreateModelRequest got unexpected fields ['nme']",
        "no CML API URL: CDSW_API_URL is not set (runs, builds and replicas of cdsw-tui have "
        "it; elsewhere pass url=, e.g. default_client('http://127.0.0.1:8787', key))",
    ]
