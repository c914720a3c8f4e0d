"""An OpenAPI 3.1 description of one model's call (SPEC §2), for clients and tools.

The request and response schemas are inferred from the model's example input and
output (JSON Schema 2020-12, which OpenAPI 3.1 uses as is); a model without examples
gets an open schema. The document never holds an access key: its example shows where
the key goes.
"""

from __future__ import annotations

import json
from typing import Any

CALL_PATHS = ("/model", "/api/altus-ds-1/models/call-model")
ERRORS = (
    (400, "request.invalid", "the body is not JSON, not an object, or has no request"),
    (401, "auth.invalid_key", "accessKey missing or unknown, or an API key required"),
    (413, "request.too_large", "the body is over the size limit"),
    (429, "model.busy", "no replica became free in time"),
    (500, "model.error", "the function raised, or returned something that is not JSON"),
    (502, "replica.failed", "the replica died while handling the call, or answered too much"),
    (503, "model.not_deployed", "the model has no deployed replica"),
    (504, "model.timeout", "the function ran past the request timeout"),
)
KEY_PLACEHOLDER = "<access key>"


def schema_of(value: Any) -> dict[str, Any]:
    """The JSON Schema a value is an instance of (objects list their keys as required)."""
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        if not value:
            return {"type": "array"}
        kinds = [schema_of(item) for item in value]
        first = kinds[0]
        return {"type": "array", "items": first if all(k == first for k in kinds) else {}}
    if isinstance(value, dict):
        return {
            "type": "object",
            "properties": {str(k): schema_of(v) for k, v in value.items()},
            "required": [str(k) for k in value],
        }
    return {}


def _example(text: str) -> tuple[bool, Any]:
    if not text.strip():
        return False, None
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None


def document(
    *,
    project: str,
    model: str,
    description: str,
    function: str,
    kernel: str,
    example_input: str,
    example_output: str,
    server: str,
    api_key_required: bool = False,
) -> dict[str, Any]:
    has_input, given_input = _example(example_input)
    has_output, given_output = _example(example_output)
    request_schema = schema_of(given_input) if has_input else {}
    response_schema = schema_of(given_output) if has_output else {}
    call_body: dict[str, Any] = {
        "type": "object",
        "required": ["accessKey", "request"],
        "properties": {
            "accessKey": {"type": "string", "description": "the model's access key"},
            "request": request_schema,
        },
    }
    success: dict[str, Any] = {
        "type": "object",
        "required": ["success", "response", "ReplicaID"],
        "properties": {
            "success": {"const": True},
            "response": response_schema,
            "ReplicaID": {"type": "string", "description": "the replica that answered"},
        },
    }
    example_body = {"accessKey": KEY_PLACEHOLDER, "request": given_input if has_input else {}}
    ok: dict[str, Any] = {"schema": {"$ref": "#/components/schemas/Success"}}
    if has_output:
        ok["example"] = {
            "success": True,
            "response": given_output,
            "ReplicaID": f"{model}-1-1-abcde",
        }
    responses: dict[str, Any] = {
        "200": {"description": "the function's answer", "content": {"application/json": ok}}
    }
    for status, code, when in ERRORS:
        entry = responses.setdefault(
            str(status),
            {
                "description": "",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Failure"}}
                },
            },
        )
        entry["description"] = "; ".join(filter(None, [entry["description"], f"{code}: {when}"]))
    operation: dict[str, Any] = {
        "operationId": f"call_{project}_{model}".replace("-", "_").replace(".", "_"),
        "summary": f"Call {project}/{model} ({kernel} function {function})",
        "description": description or f"The {function} function of {project}/{model}.",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/Call"},
                    "example": example_body,
                }
            },
        },
        "responses": responses,
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": f"{project}/{model}", "version": "1", "description": description},
        "servers": [{"url": server}],
        "paths": {
            path: {"post": dict(operation, operationId=f"{operation['operationId']}_{i}")}
            for i, path in enumerate(CALL_PATHS)
        },
        "components": {
            "schemas": {
                "Call": call_body,
                "Success": success,
                "Failure": {
                    "type": "object",
                    "required": ["success", "error"],
                    "properties": {
                        "success": {"const": False},
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {
                                    "type": "string",
                                    "enum": sorted(
                                        {c for _, c, _ in ERRORS} | {"auth.api_key_required"}
                                    ),
                                },
                                "message": {"type": "string"},
                            },
                        },
                        "ReplicaID": {"type": ["string", "null"]},
                    },
                },
            }
        },
    }
    doc["paths"]["/model"]["post"]["operationId"] = operation["operationId"]
    if api_key_required:
        doc["components"]["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"apiKey": []}]
    return doc
