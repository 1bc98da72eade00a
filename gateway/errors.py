"""The one error type of the /v1 API, and how it is rendered.

Bodies carry seed 004's `{"detail": ...}` plus an OpenAI-style `error` object so that
the OpenAI SDKs raise the right exception; `/v1/messages` answers in Anthropic's
envelope. A secret is never echoed: details are written by us, not copied from input.
"""

import json

from django.http import HttpResponse

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_balance",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    410: "not_found_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


class ApiError(Exception):
    """Raise anywhere in the gateway; the gateway handler renders it."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code
        self.headers = headers or {}

    def body(self, *, anthropic: bool = False) -> dict:
        if anthropic:
            kind = _ANTHROPIC_TYPES.get(self.status, "api_error")
            return {
                "type": "error",
                "error": {"type": kind, "message": self.detail},
                "detail": self.detail,
            }
        kind = _OPENAI_TYPES.get(
            self.status, "api_error" if self.status >= 500 else "invalid_request_error"
        )
        return {
            "detail": self.detail,
            "error": {"message": self.detail, "type": kind, "code": self.code},
        }

    def response(self, *, anthropic: bool = False) -> HttpResponse:
        response = HttpResponse(
            json.dumps(self.body(anthropic=anthropic)),
            status=self.status,
            content_type="application/json",
        )
        for name, value in self.headers.items():
            response[name] = value
        return response


def bad_request(detail: str, code: str = "invalid_request") -> ApiError:
    return ApiError(400, detail, code=code)


def too_large(limit: int) -> ApiError:
    """413 naming the size limit, in MiB, that a request body went over."""
    return ApiError(
        413,
        f"Request body too large: the limit is {limit / (1024 * 1024):g} MiB.",
        code="body_too_large",
    )
