"""``cmlapi`` as the AMPs use it, from inside a run: create, build and deploy a model with
a CML display name, find its access key and deployment CRN the way the Monitoring and
Churn AMPs do, call it, update the project's environment, list runtimes, start a job,
create and restart an application;
and the keys that /api/v2 accepts and refuses."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx

from cdsw_tui.services import metrics, projects
from tests.conftest import Cli, write_project

MODEL = """\
def predict(args):
    return {"price": args["x"] * 10}
"""

APP = """\
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

class Page(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "9")
        self.end_headers()
        self.wfile.write(b"dashboard")

HTTPServer(("127.0.0.1", int(os.environ["CDSW_APP_PORT"])), Page).serve_forever()
"""

# the calls of CML_AMP_Continuous_Model_Monitoring's src/api.py, and the build and deploy
# steps a project script makes before them
DEPLOY = """\
import json, os, time
import cdsw
import cmlapi
from cmlapi.rest import ApiException

client = cmlapi.default_client()
pid = os.environ["CDSW_PROJECT_ID"]
assert client.get_project(pid).name == "api"
model = client.create_model(
    cmlapi.CreateModelRequest(project_id=pid, name="Price Regressor", description="demo"), pid
)
build = client.create_model_build(
    cmlapi.CreateModelBuildRequest(
        project_id=pid, model_id=model.id, file_path="model.py", function_name="predict",
        kernel="python3", comment="from cmlapi",
    ),
    pid,
    model.id,
)
for _ in range(600):
    status = client.get_model_build(pid, model.id, build.id).status
    if status in ("built", "build failed"):
        break
    time.sleep(0.2)
assert status == "built", status
deployment = client.create_model_deployment(
    {"cpu": "1", "memory": "1", "replicas": 1}, pid, model.id, build.id
)
for _ in range(600):
    status = client.get_model_deployment(pid, model.id, build.id, deployment.id).status
    if status == "deployed":
        break
    time.sleep(0.2)
assert status == "deployed", status

models = client.list_models(project_id=pid, sort="-name", async_req=True).get().to_dict()
info = [m for m in models["models"] if m["name"].startswith("Price")][0]
builds = client.list_model_builds(project_id=pid, model_id=info["id"], async_req=True).get()
latest_build = builds.to_dict()["model_builds"][-1]
deployments = client.list_model_deployments(
    project_id=pid, model_id=info["id"], build_id=latest_build["id"]
).to_dict()["model_deployments"]
answer = cdsw.call_model(info["access_key"], {"x": 3})
# the Monitoring AMP's src/inference.py: modelservice. + CDSW_API_URL's host
import urllib.parse, urllib.request
parsed = urllib.parse.urlparse(os.environ["CDSW_API_URL"])
service = urllib.request.Request(
    parsed.scheme + "://modelservice." + parsed.netloc + "/model",
    data=json.dumps({"accessKey": info["access_key"], "request": {"x": 4}}).encode(),
    headers={"Content-Type": "application/json"},
)
via_service = json.loads(urllib.request.urlopen(service, timeout=30).read())["response"]

project = client.get_project(pid)
env = json.loads(project.environment) if project.environment else {}
env["STORAGE_MODE"] = "local"
project.environment = json.dumps(env)
client.update_project(project, pid)

runtimes = client.list_runtimes(
    search_filter=json.dumps({"kernel": "Python 3", "edition": "Standard"})
).to_dict()["runtimes"]
job = client.create_job(
    cmlapi.CreateJobRequest(project_id=pid, name="Nightly Score", script="score.py"), pid
)
run = client.create_job_run(cmlapi.CreateJobRunRequest(), pid, job.id)
try:
    client.get_model(pid, "999")
    missing = None
except ApiException as exc:
    missing = exc.status
# the Monitoring AMP's deploy_monitoring_application and restart_running_application
name = "Price Regressor Monitoring Dashboard"
client.create_application(
    cmlapi.CreateApplicationRequest(
        name=name, description="drift", project_id=pid, subdomain="abcdef",
        script="apps/app.py", kernel="python3", cpu=1, memory=2,
    ),
    project_id=pid,
)
app = client.list_applications(
    project_id=pid, search_filter=json.dumps({"name": name})
).to_dict()["applications"][0]
client.restart_application(project_id=pid, application_id=app["id"])
print(json.dumps({
    "name": info["name"], "crn": info["crn"], "deployment_crn": deployments[-1]["crn"],
    "build_status": latest_build["status"], "answer": answer["response"],
    "via_service": via_service,
    "runtimes": [r["kernel"] for r in runtimes], "job": job.name, "run": run.status,
    "missing": missing, "app": [app["name"], app["subdomain"], app["url"]],
}))
"""


def test_a_run_creates_builds_deploys_and_calls_a_model_through_cmlapi(cli: Cli, tmp_path: Path):
    root = write_project(
        tmp_path / "api",
        {
            "model.py": MODEL,
            "deploy.py": DEPLOY,
            "score.py": "print('scored')\n",
            "apps/app.py": APP,
        },
    )
    cli("project", "create", "api", "--path", str(root))
    out = cli("run", "api", "deploy.py", timeout=900).out
    found = json.loads(out.strip().splitlines()[-1])
    assert found["name"] == "Price Regressor"  # kept as given, spaces and capitals
    assert found["crn"].startswith("crn:") and found["deployment_crn"].startswith("crn:")
    assert found["build_status"] == "built"
    assert found["answer"] == {"price": 30}
    assert found["via_service"] == {"price": 40}  # a name, so modelservice. + it resolves
    assert found["runtimes"] and all(k.startswith("Python 3") for k in found["runtimes"])
    assert (found["job"], found["missing"]) == ("Nightly Score", 404)
    assert found["run"] in ("ENGINE_SCHEDULING", "ENGINE_RUNNING", "ENGINE_SUCCEEDED")
    # the application it created (and restarted) runs, and answers at its URL
    name, subdomain, url = found["app"]
    assert (name, subdomain) == ("Price Regressor Monitoring Dashboard", "abcdef")
    deadline = time.monotonic() + 120
    while (listed := cli("app", "list", "api", "--json").json()[0])["status"] != "running":
        assert time.monotonic() < deadline, listed
        time.sleep(0.3)
    assert listed["url"] == url and listed["name"] == name
    assert httpx.get(url, timeout=10, trust_env=False).text == "dashboard"
    # what the run did is what the CLI sees
    assert re.search(r"STORAGE_MODE +local", cli("env", "list", "--project", "api").out)
    listed = {m["name"]: m["status"] for m in cli("model", "list", "--json").json()}
    assert listed == {"Price Regressor": "deployed"}
    called = json.loads(cli("call", "api/Price Regressor", '{"x": 1}').out)
    assert called["response"] == {"price": 10}
    listed_jobs = cli("jobs", "api", "--json").json()
    assert [(j["name"], j["slug"]) for j in listed_jobs] == [("Nightly Score", "nightly-score")]
    # the slugs the listings show name them too
    assert json.loads(cli("call", "api/price-regressor", '{"x": 2}').out)["response"] == {
        "price": 20
    }
    assert cli("job", "runs", "api/nightly-score", "--json").json()[0]["number"] == 1
    assert "price-regressor" in cli("model", "list").out


def test_api_v2_keys_reach_their_own_project_only(cli: Cli, wb, tmp_path: Path):
    for name in ("one", "two"):
        cli(
            "project",
            "create",
            name,
            "--path",
            str(write_project(tmp_path / name, {"m.py": MODEL})),
        )
    cli("controller", "start")
    url = cli("status", "--json").json()["gateway"]
    one, two = projects.get(wb, "one"), projects.get(wb, "two")
    key = metrics.token(wb, metrics.project_scope(one.id))  # the CDSW_APIV2_KEY of one's runs
    with httpx.Client(base_url=url, trust_env=False, timeout=30) as http:
        mine = http.get(f"/api/v2/projects/{one.id}", headers={"Authorization": f"Bearer {key}"})
        assert mine.status_code == 200 and mine.json()["name"] == "one"
        theirs = http.get(
            f"/api/v2/projects/{two.id}/models", headers={"Authorization": f"Bearer {key}"}
        )
        assert theirs.status_code == 403
        assert theirs.json()["error"]["message"] == f"this API key is not for project {two.id}"
        listed = http.get("/api/v2/projects", headers={"Authorization": f"Bearer {key}"}).json()
        assert [p["name"] for p in listed["projects"]] == ["one"]
        for bad in ("", "Bearer nope", f"Bearer {key[:-1]}x"):
            refused = http.get("/api/v2/projects", headers={"Authorization": bad} if bad else {})
            assert refused.status_code == 401 and refused.json()["success"] is False
        user_key = cli("apikey", "create", "me").out.strip().split()[-1]
        every = http.get("/api/v2/projects", headers={"Authorization": f"Bearer {user_key}"})
        assert sorted(p["name"] for p in every.json()["projects"]) == ["one", "two"]
        assert key not in every.text and user_key not in every.text
