"""GET /v1/openapi.json: the gateway's endpoints, with request schemas from the validators."""

from django.http import HttpRequest, HttpResponse, JsonResponse

from gateway.chat import ChatCompletionRequest
from gateway.embeddings import EmbeddingsRequest
from gateway.extras import TokenCountRequest
from gateway.http import endpoint
from gateway.messages import CountTokensRequest, MessagesRequest
from gateway.responses import ResponsesRequest

_ERROR = {
    "type": "object",
    "properties": {
        "detail": {"type": "string"},
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": "string"},
            },
        },
    },
    "required": ["detail"],
}
_ERROR_RESPONSES = {
    str(status): {
        "description": text,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for status, text in [
        (400, "The request is invalid; `detail` names the field."),
        (401, "No key, or a key that is unknown, revoked, disabled or expired."),
        (402, "The balance or a budget cannot cover the call."),
        (403, "The key may not use this product or model."),
        (413, "The body is too large."),
        (429, "A rate limit was reached; see Retry-After."),
        (502, "The upstream failed."),
        (503, "No upstream node is available."),
        (504, "The upstream did not answer in time."),
    ]
}

# path -> (method, summary, request schema or None, streams)
ENDPOINTS = [
    ("/v1/models", "get", "List the models of the upstream fleet", None, False),
    (
        "/v1/chat/completions",
        "post",
        "Chat completion (OpenAI-compatible)",
        ChatCompletionRequest,
        True,
    ),
    ("/v1/responses", "post", "Responses API", ResponsesRequest, True),
    ("/v1/embeddings", "post", "Text embeddings", EmbeddingsRequest, False),
    ("/v1/messages", "post", "Messages (Anthropic-compatible)", MessagesRequest, True),
    (
        "/v1/messages/count_tokens",
        "post",
        "Count the tokens of a messages request",
        CountTokensRequest,
        False,
    ),
    (
        "/v1/extras/token-count",
        "post",
        "Count tokens without a model call",
        TokenCountRequest,
        False,
    ),
]


def document(server_url: str = "/v1") -> dict:
    paths: dict = {}
    schemas: dict = {"Error": _ERROR}
    for path, method, summary, schema, streams in ENDPOINTS:
        operation: dict = {"summary": summary, "security": [{"bearer": []}, {"apiKey": []}]}
        if schema is not None:
            schemas[schema.__name__] = schema.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            for name, sub in schemas[schema.__name__].pop("$defs", {}).items():
                schemas[name] = sub
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{schema.__name__}"}
                    }
                },
            }
        content = {"application/json": {"schema": {"type": "object"}}}
        if streams:
            content["text/event-stream"] = {"schema": {"type": "string"}}
        operation["responses"] = {
            "200": {"description": "Success", "content": content}
        } | _ERROR_RESPONSES
        paths.setdefault(path.removeprefix("/v1"), {})[method] = operation
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
