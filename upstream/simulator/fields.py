"""Request-body checks that answer 400 naming the field, as Mira does (seed 004)."""

from __future__ import annotations

from typing import Any

from upstream.simulator.web import ApiError

CHAT_MODELS = ("mira", "mira-thinking", "mira-pro", "mira-max")
EMBEDDING_MODELS = ("mira-embed",)

MODEL_INFO: dict[str, dict[str, Any]] = {
    "mira": {"context_window": 32768, "max_output_tokens": 4096},
    "mira-thinking": {"context_window": 32768, "max_output_tokens": 8192},
    "mira-pro": {"context_window": 65536, "max_output_tokens": 8192},
    "mira-max": {"context_window": 131072, "max_output_tokens": 16384},
    "mira-embed": {"context_window": 8192, "max_output_tokens": 0, "dimensions": 1536},
}


def required(body: dict[str, Any], name: str) -> Any:
    value = body.get(name)
    if value is None or value == "":
        raise ApiError(400, f"The '{name}' field is required.")
    return value


def model(body: dict[str, Any], allowed: tuple[str, ...]) -> str:
    value = required(body, "model")
    if not isinstance(value, str):
        raise ApiError(400, "The 'model' field must be a string.")
    if value not in allowed:
        raise ApiError(400, f"Invalid model. Must be one of: {', '.join(allowed)}")
    return value


def string(body: dict[str, Any], name: str, default: str | None = None) -> str | None:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ApiError(400, f"The '{name}' field must be a string.")
    return value


def choice(body: dict[str, Any], name: str, options: tuple[str, ...], default: str) -> str:
    value = string(body, name, default)
    assert value is not None
    if value not in options:
        raise ApiError(400, f"The '{name}' field must be one of: {', '.join(options)}.")
    return value


def boolean(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"The '{name}' field must be true or false.")
    return value


def number(
    body: dict[str, Any], name: str, low: float, high: float, default: float | None = None
) -> float | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, f"The '{name}' field must be a number.")
    if not low <= value <= high:
        raise ApiError(400, f"The '{name}' field must be between {low:g} and {high:g}.")
    return float(value)


def integer(
    body: dict[str, Any], name: str, low: int, high: int, default: int | None = None
) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ApiError(400, f"The '{name}' field must be a whole number.")
    if not low <= value <= high:
        raise ApiError(400, f"The '{name}' field must be between {low} and {high}.")
    return value


def object_(body: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(400, f"The '{name}' field must be an object.")
    return value


def list_(body: dict[str, Any], name: str, max_items: int | None = None) -> list[Any] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list):
        raise ApiError(400, f"The '{name}' field must be an array.")
    if max_items is not None and len(value) > max_items:
        raise ApiError(400, f"The '{name}' field allows at most {max_items} items.")
    return value


def size(body: dict[str, Any], name: str, default: str) -> tuple[int, int]:
    value = string(body, name, default) or default
    width, x, height = value.lower().partition("x")
    if not (x and width.isdigit() and height.isdigit()):
        raise ApiError(400, f"The '{name}' field must look like 1024x1024.")
    w, h = int(width), int(height)
    if not (16 <= w <= 2048 and 16 <= h <= 2048):
        raise ApiError(400, f"The '{name}' field must be between 16x16 and 2048x2048.")
    return w, h
