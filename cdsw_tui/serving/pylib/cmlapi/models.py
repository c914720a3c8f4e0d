"""What ``cmlapi`` calls return and take: records with attribute access and
``to_dict()``, and the request classes the AMPs build (``CreateModelRequest(...)``)."""

from __future__ import annotations

from typing import Any


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return Record(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class Record:
    """One object of the API (a project, a model, a list of builds...)."""

    def __init__(self, data: dict[str, Any] | None = None, **fields: Any) -> None:
        values = dict(data or {})
        values.update(fields)
        object.__setattr__(self, "_data", {k: _wrap(v) for k, v in values.items()})

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_data"][name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._data[name] = _wrap(value)

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in self._data.items()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"


class _Request(Record):
    FIELDS: tuple = ()

    def __init__(self, **fields: Any) -> None:
        unknown = sorted(set(fields) - set(self.FIELDS))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected fields {unknown}")
        super().__init__({k: fields.get(k) for k in self.FIELDS if k in fields})


class CreateModelRequest(_Request):
    FIELDS = ("project_id", "name", "description", "disable_authentication", "registered_model_id",
              "visibility", "auth_enabled")  # fmt: skip


class CreateModelBuildRequest(_Request):
    FIELDS = ("project_id", "model_id", "comment", "file_path", "function_name", "kernel",
              "runtime_identifier", "runtime_addon_identifiers", "auto_build_model",
              "auto_deployment_config", "model_root_dir")  # fmt: skip


class CreateModelDeploymentRequest(_Request):
    FIELDS = ("project_id", "model_id", "build_id", "cpu", "memory", "nvidia_gpus", "replicas",
              "environment")  # fmt: skip


class CreateJobRequest(_Request):
    FIELDS = ("project_id", "name", "script", "kernel", "cpu", "memory", "nvidia_gpu", "arguments",
              "schedule", "parent_job_id", "timeout", "environment", "runtime_identifier",
              "attachments", "recipients", "kill_on_timeout")  # fmt: skip


class CreateJobRunRequest(_Request):
    FIELDS = ("project_id", "job_id", "environment", "arguments")


class CreateApplicationRequest(_Request):
    FIELDS = ("project_id", "name", "description", "subdomain", "script", "kernel", "cpu",
              "memory", "nvidia_gpu", "environment", "runtime_identifier", "bypass_authentication",
              "runtime_addon_identifiers")  # fmt: skip


class UpdateProjectRequest(_Request):
    FIELDS = ("name", "description", "environment", "default_engine_type", "visibility")
