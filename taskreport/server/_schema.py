"""The OpenAPI document this server serves: the reference schema of the task API plus this server's extensions.

The shipped ``openapi.yaml`` and ``openapi.json`` are generated from the reference, never edited by hand::

    python -m taskreport.server._schema ../shared/spec/taskbadger-openapi.yaml   # needs PyYAML

The extensions: a task's ``ref`` (and the ``ref`` list filter), ``queue`` and ``external_id`` marked nullable
(as the API has always answered them), the ``Idempotency-Key`` header of creates, a replayed create's ``200``,
the other list filters, and the batch operation (``POST .../tasks/batch/``). The corrections: ids in paths as
they are (the reference calls them UUIDs), and the errors each operation answers, in their one shape.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

FEATURES = ("batch", "refs")
REF_PATTERN = "^[A-Za-z0-9_-]{16,64}$"
TASKS = "/api/{organization_slug}/{project_slug}/tasks/"
ACTIONS = "/api/{organization_slug}/{project_slug}/tasks/{task_id}/actions/"
BATCH = "/api/{organization_slug}/{project_slug}/tasks/batch/"
ACTION = "/api/{organization_slug}/{project_slug}/tasks/{task_id}/actions/{id}/"

_ERROR = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["client_error", "server_error", "validation_error"]},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "detail": {"type": "string"},
                    "attr": {"type": "string", "nullable": True},
                },
                "required": ["code", "detail", "attr"],
            },
        },
    },
    "required": ["type", "errors"],
}
_BATCH_OPERATION = {
    "type": "object",
    "properties": {
        "op": {"type": "string", "enum": ["create", "update"]},
        "ref": {"type": "string", "pattern": REF_PATTERN, "description": "The task's reference."},
        "id": {"type": "string", "description": "The task's id (an update by id)."},
        "parent_ref": {
            "type": "string",
            "pattern": REF_PATTERN,
            "description": "The parent by its reference; made as a placeholder if unknown, flattened to one level.",
        },
        "fields": {
            "type": "object",
            "description": "As the body of POST .../tasks/ (create) or PATCH .../tasks/{id}/ (update).",
        },
        "merge": {
            "type": "boolean",
            "default": False,
            "description": "An update's data and tags merged key by key into what is there, instead of replacing it.",
        },
    },
    "required": ["op"],
}
_BATCH_RESULT = {
    "type": "object",
    "description": "status 200 or 201 with the task's id and ref, or an error body with its status.",
    "properties": {
        "status": {"type": "integer"},
        "id": {"type": "string"},
        "ref": {"type": "string", "nullable": True},
        "type": {"type": "string"},
        "errors": _ERROR["properties"]["errors"],  # type: ignore[index]
    },
    "required": ["status"],
}


def _path_params(reference: dict[str, Any]) -> list[dict[str, Any]]:
    create = reference["paths"][TASKS]["post"]
    return [p for p in create["parameters"] if p["in"] == "path"]


def _query(name: str, description: str, schema: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema, **more}


def _idempotency_key(what: str) -> dict[str, Any]:
    return {
        "in": "header",
        "name": "Idempotency-Key",
        "required": False,
        "schema": {"type": "string", "maxLength": 255},
        "description": f"A key chosen by the client: a repeat with the same key returns the {what} the first made.",
    }


def _batch_path(reference: dict[str, Any]) -> dict[str, Any]:
    json_body = {"application/json": {"schema": {"$ref": "#/components/schemas/TaskBatchRequest"}}}
    return {
        "post": {
            "operationId": "task_batch",
            "summary": "Create and Update Tasks in a Batch",
            "description": "Several creates and updates in one request (a taskreport extension). Each operation "
            "succeeds or fails alone; the answer holds one result per operation, in order.",
            "parameters": _path_params(reference),
            "tags": ["Task Endpoints"],
            "requestBody": {"content": json_body, "required": True},
            "security": [{"projectKeyAuth": []}, {"bearerAuth": []}],
            "responses": {
                "200": {
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TaskBatchResponse"}}},
                    "description": "",
                }
            },
        }
    }


#: the errors every operation of the API can answer, in the ``Error`` shape (the status table in docs/server.md)
_ERRORS = {
    "400": "Invalid input: a field or parameter (named by `attr`), or a body that is not valid JSON.",
    "401": "No credentials, or wrong ones.",
    "404": "No such organization, project, task or action for this token.",
    "406": "An `Accept` header JSON can not satisfy.",
    "429": "Over the token's rate limit: `Retry-After` says how many seconds to wait.",
}
#: and those of an operation with a request body
_BODY_ERRORS = {
    "408": "The request body stalled.",
    "413": "A request body over 1 MiB.",
    "415": "A body that is not JSON.",
}
#: and those of a write
_WRITE_ERRORS = {"503": "The server is stopping: send it again later."}


def _error_response(status: str, description: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if status == "429":
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}
    return response


def _error_refs(operation: dict[str, Any], method: str) -> dict[str, Any]:
    errors = list(_ERRORS)
    if "requestBody" in operation:
        errors += list(_BODY_ERRORS)
    if method != "get":
        errors += list(_WRITE_ERRORS)
    return {status: {"$ref": f"#/components/responses/Error{status}"} for status in sorted(errors)}


def build(reference: dict[str, Any]) -> dict[str, Any]:
    """The served schema, from the reference's."""
    schema = copy.deepcopy(reference)
    schema["info"]["x-taskreport-features"] = list(FEATURES)
    components = schema["components"]["schemas"]
    for name in ("Task", "TaskRequest", "PatchedTaskRequest"):
        for field in ("queue", "external_id"):
            components[name]["properties"][field]["nullable"] = True
    components["Task"]["properties"]["ref"] = {
        "type": "string",
        "nullable": True,
        "readOnly": True,
        "description": "The reference the client gave the task when it created it (a taskreport extension).",
    }
    components["Error"] = _ERROR
    components["TaskBatchOperation"] = _BATCH_OPERATION
    components["TaskBatchRequest"] = {
        "type": "object",
        "properties": {
            "operations": {
                "type": "array",
                "maxItems": 1000,
                "items": {"$ref": "#/components/schemas/TaskBatchOperation"},
            }
        },
        "required": ["operations"],
    }
    components["TaskBatchResult"] = _BATCH_RESULT
    components["TaskBatchResponse"] = {
        "type": "object",
        "properties": {"results": {"type": "array", "items": {"$ref": "#/components/schemas/TaskBatchResult"}}},
        "required": ["results"],
    }
    tasks = schema["paths"][TASKS]
    tasks["get"]["parameters"] += [
        _query("ref", "Only the task with this reference.", {"type": "string"}),
        _query("name", "Only tasks with this name.", {"type": "string"}),
        _query("external_id", "Only tasks with this external id.", {"type": "string"}),
        _query("status", "One status, or several separated by commas.", {"type": "string"}),
        _query(
            "tag",
            "namespace:value; repeat it to require several tags.",
            {"type": "array", "items": {"type": "string", "pattern": "^[^:]+:"}, "maxItems": 20},
            style="form",
            explode=True,
        ),
    ]
    create = tasks["post"]
    create["parameters"].append(_idempotency_key("task"))
    create["responses"]["200"] = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Task"}}},
        "description": "A replay: the Idempotency-Key was used before, and this is the task it made, unchanged.",
    }
    schema["paths"][ACTIONS]["post"]["parameters"].append(_idempotency_key("action"))
    # before the task paths in the document, as in the router: "batch" is never a task id
    schema["paths"] = {BATCH: _batch_path(reference), **schema["paths"]}
    # ids are not UUIDs (a task's is 22 letters and digits, an action's a number): a client that checked the
    # reference's format would refuse every real one
    for path_name, path in schema["paths"].items():
        for operation in path.values():
            for param in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if param["in"] == "path" and param["name"] == "id":
                    param["schema"] = {"type": "integer"} if path_name == ACTION else {"type": "string"}
    # the reference documents only success; a client needs the errors' shape too
    schema["components"]["responses"] = {
        f"Error{status}": _error_response(status, description)
        for status, description in sorted({**_ERRORS, **_BODY_ERRORS, **_WRITE_ERRORS}.items())
    }
    for path in schema["paths"].values():
        for method, operation in path.items():
            if isinstance(operation, dict) and "responses" in operation:
                for status, ref in _error_refs(operation, method).items():
                    operation["responses"].setdefault(status, ref)
    return schema


def main(argv: list[str]) -> int:  # pragma: no cover - run by hand when the reference changes
    import yaml  # type: ignore[import-untyped]  # PyYAML: only to regenerate the files, by hand

    reference = yaml.safe_load(Path(argv[0]).read_text())
    schema = build(reference)
    here = Path(__file__).parent
    (here / "openapi.json").write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")
    (here / "openapi.yaml").write_text(yaml.safe_dump(schema, sort_keys=False, allow_unicode=True, width=120))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
