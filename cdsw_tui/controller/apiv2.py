"""``/api/v2/``, the CML API v2 subset (services/cmlv2.py), on the gateway's port: each
route checks the caller's API key, then runs its operation in a thread (a build request
takes a snapshot; the event loop keeps serving calls). Errors have SPEC's shape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from cdsw_tui.errors import CdswError, Conflict, NotFound
from cdsw_tui.services import cmlv2, metrics
from cdsw_tui.services import cmlv2_work as work
from cdsw_tui.services.context import Workbench
from cdsw_tui.serving.gateway import BodyTooLarge, error_response, read_limited

MAX_BODY = 1 << 20
P = "/api/v2/projects/{project_id}"
M = P + "/models/{model_id}"
B = M + "/builds/{build_id}"
D = B + "/deployments/{deployment_id:[^{}/:]+}"
A = P + "/applications/{application_id:[^{}/:]+}"

# (method, path, operation(wb, scope, path params, query, body) -> JSON answer)
Operation = Callable[[Workbench, str, dict[str, str], dict[str, str], dict[str, Any]], Any]


def _project(wb: Workbench, scope: str, p: dict[str, str]) -> Any:
    return cmlv2.project_of(wb, scope, p["project_id"])


def _model(wb: Workbench, scope: str, p: dict[str, str]) -> Any:
    return cmlv2.model_of(wb, _project(wb, scope, p), p["model_id"])


def _build(wb: Workbench, scope: str, p: dict[str, str]) -> tuple[Any, Any]:
    model = _model(wb, scope, p)
    return model, cmlv2.build_of(wb, model, p["build_id"])


def _deployment(wb: Workbench, scope: str, p: dict[str, str]) -> tuple[Any, Any]:
    model, build = _build(wb, scope, p)
    return model, cmlv2.deployment_of(wb, build, p["deployment_id"])


def _job(wb: Workbench, scope: str, p: dict[str, str]) -> Any:
    return work.job_of(wb, _project(wb, scope, p), p["job_id"])


def _app(wb: Workbench, scope: str, p: dict[str, str]) -> Any:
    return work.application_of(wb, _project(wb, scope, p), p["application_id"])


ROUTES: list[tuple[str, str, Operation]] = [
    ("GET", "/api/v2/projects", lambda wb, s, p, q, b: cmlv2.list_projects(wb, s, q)),
    ("GET", P, lambda wb, s, p, q, b: cmlv2.project_dict(wb, _project(wb, s, p))),
    ("PATCH", P, lambda wb, s, p, q, b: cmlv2.update_project(wb, _project(wb, s, p), b)),
    ("PUT", P, lambda wb, s, p, q, b: cmlv2.update_project(wb, _project(wb, s, p), b)),
    ("GET", P + "/models", lambda wb, s, p, q, b: cmlv2.list_models(wb, _project(wb, s, p), q)),
    ("POST", P + "/models", lambda wb, s, p, q, b: cmlv2.create_model(wb, _project(wb, s, p), b)),
    ("GET", M, lambda wb, s, p, q, b: cmlv2.model_dict(wb, _model(wb, s, p))),
    ("GET", M + "/builds", lambda wb, s, p, q, b: cmlv2.list_builds(wb, _model(wb, s, p), q)),
    ("POST", M + "/builds", lambda wb, s, p, q, b: cmlv2.create_build(wb, _model(wb, s, p), b)),
    ("GET", B, lambda wb, s, p, q, b: cmlv2.build_dict(_build(wb, s, p)[1])),
    (
        "GET",
        B + "/deployments",
        lambda wb, s, p, q, b: cmlv2.list_deployments(wb, _build(wb, s, p)[1], q),
    ),
    (
        "POST",
        B + "/deployments",
        lambda wb, s, p, q, b: cmlv2.create_deployment(wb, *_build(wb, s, p), b),
    ),
    ("GET", D, lambda wb, s, p, q, b: cmlv2.deployment_dict(wb, _deployment(wb, s, p)[1])),
    ("POST", D + ":stop", lambda wb, s, p, q, b: cmlv2.stop_deployment(wb, *_deployment(wb, s, p))),
    (
        "POST",
        D + ":restart",
        lambda wb, s, p, q, b: cmlv2.restart_deployment(wb, *_deployment(wb, s, p)),
    ),
    ("GET", "/api/v2/runtimes", lambda wb, s, p, q, b: cmlv2.list_runtimes(wb, q)),
    ("GET", P + "/jobs", lambda wb, s, p, q, b: work.list_jobs(wb, _project(wb, s, p), q)),
    ("POST", P + "/jobs", lambda wb, s, p, q, b: work.create_job(wb, _project(wb, s, p), b)),
    ("GET", P + "/jobs/{job_id}", lambda wb, s, p, q, b: work.job_dict(wb, _job(wb, s, p))),
    (
        "GET",
        P + "/jobs/{job_id}/runs",
        lambda wb, s, p, q, b: work.list_job_runs(wb, _job(wb, s, p), q),
    ),
    (
        "POST",
        P + "/jobs/{job_id}/runs",
        lambda wb, s, p, q, b: work.create_job_run(wb, _job(wb, s, p)),
    ),
    (
        "GET",
        P + "/applications",
        lambda wb, s, p, q, b: work.list_applications(wb, _project(wb, s, p), q),
    ),
    (
        "POST",
        P + "/applications",
        lambda wb, s, p, q, b: work.create_application(wb, _project(wb, s, p), b),
    ),
    ("GET", A, lambda wb, s, p, q, b: work.application_dict(wb, _app(wb, s, p))),
    ("DELETE", A, lambda wb, s, p, q, b: work.delete_application(wb, _app(wb, s, p))),
    ("POST", A + ":restart", lambda wb, s, p, q, b: work.restart_application(wb, _app(wb, s, p))),
    ("POST", A + ":stop", lambda wb, s, p, q, b: work.stop_application(wb, _app(wb, s, p))),
]


def _handler(wb: Workbench, operation: Operation) -> Callable:
    async def handle(request: web.Request) -> web.Response:
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        body: Any = {}
        if request.method in ("POST", "PATCH", "PUT") and request.can_read_body:
            try:
                raw = await read_limited(request, MAX_BODY)
                body = json.loads(raw) if raw.strip() else {}
            except BodyTooLarge:
                return error_response(413, "request.too_large", "an API call is at most 1 MB")
            except (ValueError, UnicodeDecodeError, RecursionError):
                return error_response(400, "request.invalid", "the body is not JSON")
            if not isinstance(body, dict):
                return error_response(400, "request.invalid", "the body must be a JSON object")
        params = dict(request.match_info)
        query = dict(request.query)

        def work() -> Any:
            scope = cmlv2.scope_of(wb, bearer)
            return operation(wb, scope, params, query, body)

        try:
            answer = await asyncio.to_thread(work)
        except metrics.Unauthorized as exc:
            return error_response(401, "auth.invalid_key", exc.message)
        except cmlv2.Forbidden as exc:
            return error_response(403, "auth.invalid_key", exc.message)
        except NotFound as exc:
            return error_response(404, "request.invalid", exc.message)
        except Conflict as exc:
            return error_response(409, "request.invalid", exc.message)
        except NotImplementedError as exc:
            return error_response(501, "request.invalid", str(exc))
        except CdswError as exc:
            return error_response(400, "request.invalid", exc.message)
        return web.json_response(answer)

    return handle


def routes(wb: Workbench) -> list[tuple[str, str, Callable]]:
    return [(method, path, _handler(wb, op)) for method, path, op in ROUTES]
