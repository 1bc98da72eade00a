"""GET /v1/openapi.json: the gateway's endpoints, with request schemas from the validators,
the shapes of their answers and of every error they may give."""

import re

from django.http import HttpRequest, HttpResponse, JsonResponse

from gateway.http import STRING_OR_NULL, Operation, endpoint

_SCHEMAS: dict[str, dict] = {
    "Error": {
        "type": "object",
        "properties": {
            "detail": {"type": "string"},
            "error": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "code": STRING_OR_NULL,
                },
                "required": ["message", "type"],
            },
        },
        "required": ["detail", "error"],
    },
    "AnthropicError": {
        "type": "object",
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                "required": ["type", "message"],
            },
            "detail": {"type": "string"},
        },
        "required": ["type", "error", "detail"],
    },
}

# Why each status is given, and which operations can give it.
_ERRORS = {
    400: "The request is invalid; `detail` names the field.",
    401: "No key, or a key that is unknown, revoked, disabled or expired.",
    402: "The balance or a budget cannot cover the call.",
    403: "The key may not use this product, model or the account API.",
    404: "Not found: a key of this workspace, or what the upstream was asked for.",
    409: "The job has finished already: it cannot be cancelled.",
    413: "The body or a file in it is over its limit (2 MiB of JSON; more where files are taken).",
    422: "The upstream found the request invalid.",
    429: "A rate limit was reached, or the upstream is busy; see Retry-After.",
    502: "The upstream failed.",
    503: "No upstream node is available.",
    504: "The upstream did not answer in time.",
}
# One Server-Sent Event of a stream: its data (a JSON object, or `[DONE]`), and a name for
# the Responses and Anthropic events.
_SSE_EVENT = {
    "type": "object",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
    "required": ["data"],
}

_REQUEST_ID = {
    "x-request-id": {
        "description": "The request's id, also in the usage records.",
        "required": True,
        "schema": {"type": "string", "pattern": "^req_[0-9a-f]+$"},
    }
}


def _json(schema: str | dict) -> dict:
    return {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema


def _responses(operation: Operation) -> dict:
    success: dict = {"description": "Success", "headers": _REQUEST_ID}
    if operation.success is not None:
        content = {kind: {"schema": _json(operation.success)} for kind in operation.produces}
        if operation.streams:
            content["text/event-stream"] = {"schema": _SSE_EVENT}
        success["content"] = content
    error = {"schema": _json("AnthropicError" if operation.anthropic else "Error")}
    return {str(operation.status): success} | {
        str(code): {
            "description": _ERRORS[code],
            "headers": _REQUEST_ID,
            "content": {"application/json": error},
        }
        for code in sorted(operation.errors)
    }


def document(server_url: str = "/v1") -> dict:
    from gateway.products import MODULES

    paths: dict = {}
    schemas = dict(_SCHEMAS)
    for module in MODULES:
        schemas |= getattr(module, "SCHEMAS", {})
    for op in (op for module in MODULES for op in module.OPERATIONS):
        operation: dict = {
            "summary": op.summary,
            "operationId": f"{op.method}_{op.path.removeprefix('/v1/').replace('/', '_')}",
            "security": [{"bearer": []}, {"apiKey": []}],
            "responses": _responses(op),
        }
        names = re.findall(r"{(\w+)}", op.path)
        if names:
            operation["parameters"] = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in names
            ]
        if op.query:
            operation["parameters"] = list(op.query)
        if op.request is not None:
            name = op.request.__name__
            schemas[name] = op.request.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            for sub_name, sub in schemas[name].pop("$defs", {}).items():
                schemas[sub_name] = sub
            operation["requestBody"] = {
                "required": True,
                "content": {
                    op.content_type: {
                        "schema": {"$ref": f"#/components/schemas/{name}"},
                        "example": op.example,
                    }
                },
            }
        paths.setdefault(op.path.removeprefix("/v1"), {})[op.method] = operation
    paths["/openapi.json"] = {
        "get": {
            "summary": "This document",
            "operationId": "get_openapi",
            "security": [],
            "responses": {
                "200": {
                    "description": "The OpenAPI document",
                    "headers": _REQUEST_ID,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Mira Console API",
            "version": "1",
            "description": "The console's /v1 API. Authenticate with `Authorization: Bearer <key>` or `x-api-key`.",
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }


@endpoint("GET", auth=False)
async def openapi(request: HttpRequest) -> HttpResponse:
    return JsonResponse(document(request.build_absolute_uri("/v1")))
