"""GET /v1/openapi.json: the gateway's endpoints, with request schemas from the validators,
the shapes of their answers and of every error they may give."""

from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse, JsonResponse
from pydantic import BaseModel

from gateway.account import CreateKeyRequest
from gateway.chat import ChatCompletionRequest
from gateway.embeddings import EmbeddingsRequest
from gateway.extras import TokenCountRequest
from gateway.http import endpoint
from gateway.messages import CountTokensRequest, MessagesRequest
from gateway.responses import ResponsesRequest

_STRING_OR_NULL = {"type": ["string", "null"]}
_INTEGER_OR_NULL = {"type": ["integer", "null"]}

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
                    "code": _STRING_OR_NULL,
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
    "ModelList": {
        "type": "object",
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"id": {"type": "string"}},
                    "required": ["id"],
                },
            },
        },
        "required": ["object", "data"],
    },
    "ChatCompletion": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "message": {"type": "object"},
                        "finish_reason": _STRING_OR_NULL,
                    },
                    "required": ["index", "message"],
                },
            },
            "usage": {
                "type": "object",
                "properties": {
                    "prompt_tokens": {"type": "integer"},
                    "completion_tokens": {"type": "integer"},
                },
                "required": ["prompt_tokens", "completion_tokens"],
            },
        },
        "required": ["id", "object", "model", "choices", "usage"],
    },
    "Response": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "response"},
            "status": {"type": "string"},
            "output": {"type": "array"},
            "usage": {
                "type": ["object", "null"],
                "properties": {
                    "input_tokens": {"type": "integer"},
                    "output_tokens": {"type": "integer"},
                },
            },
        },
        "required": ["id", "object", "status", "output"],
    },
    "EmbeddingList": {
        "type": "object",
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "embedding": {"type": ["array", "string"]},
                    },
                    "required": ["index", "embedding"],
                },
            },
            "usage": {"type": "object"},
        },
        "required": ["object", "data"],
    },
    "Message": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "type": {"const": "message"},
            "role": {"const": "assistant"},
            "content": {"type": "array", "items": {"type": "object"}},
            "stop_reason": _STRING_OR_NULL,
            "usage": {
                "type": "object",
                "properties": {
                    "input_tokens": {"type": "integer"},
                    "output_tokens": {"type": "integer"},
                },
                "required": ["input_tokens", "output_tokens"],
            },
        },
        "required": ["id", "type", "role", "content", "usage"],
    },
    "MessageTokenCount": {
        "type": "object",
        "properties": {"input_tokens": {"type": "integer"}},
        "required": ["input_tokens"],
    },
    "TokenCount": {
        "type": "object",
        "properties": {"tokens": {"type": "integer"}},
        "required": ["tokens"],
    },
    "ApiKey": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "name": {"type": "string"},
            "key_prefix": {"type": "string"},
            "last_four": {"type": "string"},
            "is_active": {"type": "boolean"},
            "status": {"type": "string"},
            "scopes": {"type": "array", "items": {"type": "string"}},
            "allowed_models": {"type": "array", "items": {"type": "string"}},
            "rpm_limit": _INTEGER_OR_NULL,
            "tpm_limit": _INTEGER_OR_NULL,
            "monthly_budget_micros": _INTEGER_OR_NULL,
            "total_requests": {"type": "integer"},
            "total_tokens": {"type": "integer"},
            "last_used_at": _STRING_OR_NULL,
            "expires_at": _STRING_OR_NULL,
            "created_at": _STRING_OR_NULL,
        },
        "required": ["id", "name", "key_prefix", "last_four", "is_active", "scopes"],
    },
    "Balance": {
        "type": "object",
        "properties": {
            "currency": {"type": "string"},
            "balance_micros": {"type": "integer"},
            "balance": {"type": "string"},
            "spending": {"type": "object"},
        },
        "required": ["currency", "balance_micros", "balance", "spending"],
    },
    "Transaction": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "type": {"enum": ["grant", "charge", "refund", "hold", "release"]},
            "amount_micros": {"type": "integer"},
            "amount": {"type": "string"},
            "balance_after_micros": _INTEGER_OR_NULL,
            "description": {"type": "string"},
            "request_id": _STRING_OR_NULL,
            "created_at": _STRING_OR_NULL,
        },
        "required": ["id", "type", "amount_micros", "amount"],
    },
    "Usage": {
        "type": "object",
        "properties": {
            "start_date": {"type": "string", "format": "date"},
            "end_date": {"type": "string", "format": "date"},
            "currency": {"type": "string"},
            "group_by": {"type": "string"},
            "total": {"type": "object"},
            "groups": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["start_date", "end_date", "group_by", "total", "groups"],
    },
}

# Why each status is given, and which operations can give it.
_ERRORS = {
    400: "The request is invalid; `detail` names the field.",
    401: "No key, or a key that is unknown, revoked, disabled or expired.",
    402: "The balance or a budget cannot cover the call.",
    403: "The key may not use this product, model or the account API.",
    404: "Not found: a key of this workspace, or what the upstream was asked for.",
    413: "The body is larger than the limit (2 MiB of JSON).",
    422: "The upstream found the request invalid.",
    429: "A rate limit was reached, or the upstream is busy; see Retry-After.",
    502: "The upstream failed.",
    503: "No upstream node is available.",
    504: "The upstream did not answer in time.",
}
_UPSTREAM = (502, 503, 504)
_MODEL_CALL = (400, 401, 402, 403, 404, 413, 422, 429, *_UPSTREAM)
_ACCOUNT = (401, 403)

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

_CHAT_EXAMPLE = {"model": "mira", "messages": [{"role": "user", "content": "Hello"}]}


def _query(name: str, schema: dict, description: str) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


@dataclass(frozen=True)
class Operation:
    path: str
    method: str
    summary: str
    errors: tuple[int, ...]
    success: str | dict | None = None  # the success body's schema (a component's name)
    status: int = 200
    request: type[BaseModel] | None = None
    example: dict | None = None
    streams: bool = False
    query: tuple[dict, ...] = ()
    anthropic: bool = False  # errors in Anthropic's envelope


def _list_of(name: str) -> dict:
    return {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}}


_CREATED_KEY = {
    "allOf": [
        {"$ref": "#/components/schemas/ApiKey"},
        {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]},
    ]
}
_KINDS = ["grant", "charge", "refund", "hold", "release"]

ENDPOINTS = [
    Operation(
        "/v1/models", "get", "List the models of the upstream fleet",
        (401, *_UPSTREAM), "ModelList",
    ),
    Operation(
        "/v1/chat/completions", "post", "Chat completion (OpenAI-compatible)",
        _MODEL_CALL, "ChatCompletion", request=ChatCompletionRequest,
        example=_CHAT_EXAMPLE | {"max_tokens": 16}, streams=True,
    ),
    Operation(
        "/v1/responses", "post", "Responses API", _MODEL_CALL, "Response",
        request=ResponsesRequest, streams=True,
        example={"model": "mira", "input": "Hello", "max_output_tokens": 16},
    ),
    Operation(
        "/v1/embeddings", "post", "Text embeddings", _MODEL_CALL, "EmbeddingList",
        request=EmbeddingsRequest, example={"model": "mira-embed", "input": "Hello"},
    ),
    Operation(
        "/v1/messages", "post", "Messages (Anthropic-compatible)", _MODEL_CALL, "Message",
        request=MessagesRequest, example=_CHAT_EXAMPLE | {"max_tokens": 16}, streams=True,
        anthropic=True,
    ),
    Operation(
        "/v1/messages/count_tokens", "post", "Count the tokens of a messages request",
        (400, 401, 403, 413), "MessageTokenCount", request=CountTokensRequest,
        example=_CHAT_EXAMPLE, anthropic=True,
    ),
    Operation(
        "/v1/extras/token-count", "post", "Count tokens without a model call",
        (400, 401, 403, 413, *_UPSTREAM), "TokenCount", request=TokenCountRequest,
        example={"model": "mira", "text": "Hello"},
    ),
    Operation(
        "/v1/api-keys", "get", "The workspace's keys (admin scope)", _ACCOUNT, _list_of("ApiKey"),
    ),
    Operation(
        "/v1/api-keys", "post", "Create a key; its secret is in `key`, shown once (admin scope)",
        (400, *_ACCOUNT, 413), _CREATED_KEY, status=201, request=CreateKeyRequest,
        example={"name": "script", "scopes": ["chat"]},
    ),
    Operation(
        "/v1/api-keys/{key_id}", "delete", "Revoke a key (admin scope)", (*_ACCOUNT, 404),
        status=204,
    ),
    Operation(
        "/v1/billing/balance", "get", "Balance and spending (admin scope)", _ACCOUNT, "Balance",
    ),
    Operation(
        "/v1/billing/transactions", "get", "Ledger entries, newest first (admin scope)",
        (400, *_ACCOUNT), _list_of("Transaction"),
        query=(
            _query("type", {"enum": _KINDS}, "Only entries of this kind."),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "How many."),
            _query(
                "offset", {"type": "integer", "minimum": 0, "maximum": 1_000_000_000},
                "How many to skip.",
            ),
        ),
    ),
    Operation(
        "/v1/usage", "get", "Usage and spend by day, model, product, source or key (admin scope)",
        (400, *_ACCOUNT), "Usage",
        query=(
            _query("start_date", {"type": "string", "format": "date"}, "First day (default: the 1st)."),
            _query("end_date", {"type": "string", "format": "date"}, "Last day (default: today)."),
            _query("group_by", {"enum": ["day", "model", "product", "source", "key"]}, "Grouping."),
            _query("model", {"type": "string"}, "Only this model."),
            _query("api_key_id", {"type": "string", "format": "uuid"}, "Only this key."),
        ),
    ),
]  # fmt: skip


def _json(schema: str | dict) -> dict:
    return {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema


def _responses(operation: Operation) -> dict:
    success: dict = {"description": "Success", "headers": _REQUEST_ID}
    if operation.success is not None:
        content = {"application/json": {"schema": _json(operation.success)}}
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
    paths: dict = {}
    schemas = dict(_SCHEMAS)
    for op in ENDPOINTS:
        operation: dict = {
            "summary": op.summary,
            "operationId": f"{op.method}_{op.path.removeprefix('/v1/').replace('/', '_')}",
            "security": [{"bearer": []}, {"apiKey": []}],
            "responses": _responses(op),
        }
        if "{key_id}" in op.path:
            operation["parameters"] = [
                {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}
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
                    "application/json": {
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
