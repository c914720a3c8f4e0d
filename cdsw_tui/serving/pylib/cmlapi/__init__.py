"""``import cmlapi``: the CML API v2 client, for the calls Cloudera's AMPs make, against
this workbench's ``/api/v2``. Standard library only, Python 3.9 syntax.

``cmlapi.default_client()`` is a ``CMLServiceApi`` for ``CDSW_API_URL``'s host with the
key in ``CDSW_APIV2_KEY`` (runs, builds and replicas are given both). Calls take the
arguments of Cloudera's generated client (``list_models(project_id, sort="-name")``,
``create_model_build(body, project_id, model_id)``); ``async_req=True`` returns an
object whose ``.get()`` waits for the answer; answers have attribute access and
``.to_dict()``; an error answer raises ``cmlapi.rest.ApiException``.

Reference: Cloudera, "CML API v2",
https://docs.cloudera.com/machine-learning/cloud/api/topics/ml-api-v2.html, and the API
reference each CML workspace serves at ``/api/v2/swagger.html``. What is supported is
listed in this project's docs/compat.md.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from cmlapi import rest
from cmlapi.models import (
    CreateApplicationRequest,
    CreateJobRequest,
    CreateJobRunRequest,
    CreateModelBuildRequest,
    CreateModelDeploymentRequest,
    CreateModelRequest,
    Record,
    UpdateProjectRequest,
)
from cmlapi.rest import ApiException

__all__ = [
    "ApiClient", "ApiException", "CMLServiceApi", "Configuration", "CreateApplicationRequest",
    "CreateJobRequest", "CreateJobRunRequest", "CreateModelBuildRequest",
    "CreateModelDeploymentRequest", "CreateModelRequest", "Record", "UpdateProjectRequest",
    "default_client",
]  # fmt: skip

LIST_OPTIONS = ("search_filter", "sort", "page_size", "page_token", "include_public_projects")


class Configuration:
    def __init__(self, host: str = "", api_key: dict[str, str] | None = None) -> None:
        self.host = host.rstrip("/")
        self.api_key = dict(api_key or {})
        self.api_key_prefix: dict[str, str] = {}
        self.verify_ssl = True


class ApiClient:
    def __init__(self, configuration: Configuration | None = None) -> None:
        self.configuration = configuration or Configuration()


class _Pending:
    """What a call with ``async_req=True`` returns: ``.get()`` waits for its answer."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._answer: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self._answer = call()
        except BaseException as exc:  # handed to whoever waits
            self._error = exc

    def get(self, timeout: float | None = None) -> Any:
        self._thread.join(timeout)
        if self._error is not None:
            raise self._error
        return self._answer

    def ready(self) -> bool:
        return not self._thread.is_alive()


def _body(value: Any) -> Any:
    return value.to_dict() if isinstance(value, Record) else dict(value or {})


class CMLServiceApi:
    """The calls of Cloudera's ``CMLServiceApi`` that cdsw-tui serves."""

    def __init__(self, api_client: ApiClient | None = None) -> None:
        self.api_client = api_client or ApiClient()

    # -- the one way out ------------------------------------------------------------------

    def _call(self, method: str, path: str, kwargs: dict[str, Any], body: Any = None) -> Any:
        async_req = bool(kwargs.pop("async_req", False))
        query = {k: kwargs.pop(k) for k in LIST_OPTIONS if k in kwargs}
        kwargs.pop("_request_timeout", None)
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        config = self.api_client.configuration
        key = config.api_key.get("Authorization", "").removeprefix("Bearer ").strip()
        url = f"{config.host}/api/v2{path}"

        def call() -> Any:
            return Record(rest.request(method, url, key, query, body))

        return _Pending(call) if async_req else call()

    # -- projects -------------------------------------------------------------------------

    def list_projects(self, **kwargs: Any) -> Any:
        return self._call("GET", "/projects", kwargs)

    def get_project(self, project_id: str, **kwargs: Any) -> Any:
        return self._call("GET", f"/projects/{project_id}", kwargs)

    def update_project(self, body: Any, project_id: str, **kwargs: Any) -> Any:
        return self._call("PATCH", f"/projects/{project_id}", kwargs, _body(body))

    # -- models, builds, deployments --------------------------------------------------------

    def list_models(self, project_id: str, **kwargs: Any) -> Any:
        return self._call("GET", f"/projects/{project_id}/models", kwargs)

    def get_model(self, project_id: str, model_id: str, **kwargs: Any) -> Any:
        return self._call("GET", f"/projects/{project_id}/models/{model_id}", kwargs)

    def create_model(self, body: Any, project_id: str, **kwargs: Any) -> Any:
        return self._call("POST", f"/projects/{project_id}/models", kwargs, _body(body))

    def list_model_builds(self, project_id: str, model_id: str, **kwargs: Any) -> Any:
        return self._call("GET", f"/projects/{project_id}/models/{model_id}/builds", kwargs)

    def create_model_build(self, body: Any, project_id: str, model_id: str, **kwargs: Any) -> Any:
        path = f"/projects/{project_id}/models/{model_id}/builds"
        return self._call("POST", path, kwargs, _body(body))

    def get_model_build(self, project_id: str, model_id: str, build_id: str, **kwargs: Any) -> Any:
        path = f"/projects/{project_id}/models/{model_id}/builds/{build_id}"
        return self._call("GET", path, kwargs)

    def list_model_deployments(
        self, project_id: str, model_id: str, build_id: str, **kwargs: Any
    ) -> Any:
        path = f"/projects/{project_id}/models/{model_id}/builds/{build_id}/deployments"
        return self._call("GET", path, kwargs)

    def create_model_deployment(
        self, body: Any, project_id: str, model_id: str, build_id: str, **kwargs: Any
    ) -> Any:
        path = f"/projects/{project_id}/models/{model_id}/builds/{build_id}/deployments"
        return self._call("POST", path, kwargs, _body(body))

    def _deployment(self, project_id: str, model_id: str, build_id: str, deployment_id: str) -> str:
        return (
            f"/projects/{project_id}/models/{model_id}/builds/{build_id}"
            f"/deployments/{deployment_id}"
        )

    def get_model_deployment(
        self, project_id: str, model_id: str, build_id: str, deployment_id: str, **kwargs: Any
    ) -> Any:
        return self._call(
            "GET", self._deployment(project_id, model_id, build_id, deployment_id), kwargs
        )

    def stop_model_deployment(
        self, project_id: str, model_id: str, build_id: str, deployment_id: str, **kwargs: Any
    ) -> Any:
        path = self._deployment(project_id, model_id, build_id, deployment_id) + ":stop"
        return self._call("POST", path, kwargs, {})

    def restart_model_deployment(
        self, project_id: str, model_id: str, build_id: str, deployment_id: str, **kwargs: Any
    ) -> Any:
        path = self._deployment(project_id, model_id, build_id, deployment_id) + ":restart"
        return self._call("POST", path, kwargs, {})

    # -- runtimes, jobs, runs ---------------------------------------------------------------

    def list_runtimes(self, **kwargs: Any) -> Any:
        return self._call("GET", "/runtimes", kwargs)

    def list_jobs(self, project_id: str, **kwargs: Any) -> Any:
        return self._call("GET", f"/projects/{project_id}/jobs", kwargs)

    def get_job(self, project_id: str, job_id: str, **kwargs: Any) -> Any:
        return self._call("GET", f"/projects/{project_id}/jobs/{job_id}", kwargs)

    def create_job(self, body: Any, project_id: str, **kwargs: Any) -> Any:
        return self._call("POST", f"/projects/{project_id}/jobs", kwargs, _body(body))

    def create_job_run(self, body: Any, project_id: str, job_id: str, **kwargs: Any) -> Any:
        path = f"/projects/{project_id}/jobs/{job_id}/runs"
        return self._call("POST", path, kwargs, _body(body))

    def list_job_runs(self, project_id: str, job_id: str, **kwargs: Any) -> Any:
        return self._call("GET", f"/projects/{project_id}/jobs/{job_id}/runs", kwargs)

    # -- applications -----------------------------------------------------------------------

    def list_applications(self, project_id: str, **kwargs: Any) -> Any:
        return self._call("GET", f"/projects/{project_id}/applications", kwargs)

    def create_application(self, body: Any, project_id: str, **kwargs: Any) -> Any:
        return self._call("POST", f"/projects/{project_id}/applications", kwargs, _body(body))

    def get_application(self, project_id: str, application_id: str, **kwargs: Any) -> Any:
        return self._call("GET", f"/projects/{project_id}/applications/{application_id}", kwargs)

    def delete_application(self, project_id: str, application_id: str, **kwargs: Any) -> Any:
        path = f"/projects/{project_id}/applications/{application_id}"
        return self._call("DELETE", path, kwargs)

    def restart_application(self, project_id: str, application_id: str, **kwargs: Any) -> Any:
        path = f"/projects/{project_id}/applications/{application_id}:restart"
        return self._call("POST", path, kwargs, {})

    def stop_application(self, project_id: str, application_id: str, **kwargs: Any) -> Any:
        path = f"/projects/{project_id}/applications/{application_id}:stop"
        return self._call("POST", path, kwargs, {})


def default_client(url: str | None = None, cml_api_key: str | None = None) -> CMLServiceApi:
    """A client for this workbench: ``url`` (default: ``CDSW_API_URL``'s scheme and host)
    and ``cml_api_key`` (default: ``CDSW_APIV2_KEY``)."""
    base = url or os.environ.get("CDSW_API_URL", "")
    if not base:
        raise ValueError(
            "no CML API URL: CDSW_API_URL is not set (runs, builds and replicas of cdsw-tui "
            "have it; elsewhere pass url=, e.g. default_client('http://127.0.0.1:8787', key))"
        )
    for tail in ("/api/v1", "/api/v2"):
        if base.rstrip("/").endswith(tail):
            base = base.rstrip("/")[: -len(tail)]
    key = cml_api_key or os.environ.get("CDSW_APIV2_KEY") or os.environ.get("CDSW_API_KEY") or ""
    if not key:
        raise ValueError("no CML API key: CDSW_APIV2_KEY is not set (pass cml_api_key=)")
    config = Configuration(host=base, api_key={"Authorization": f"Bearer {key}"})
    return CMLServiceApi(ApiClient(config))
