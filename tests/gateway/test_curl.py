"""The curl commands from the seeds work against the console with only the base URL changed."""

import json
import shutil
import subprocess


def _curl(*args: str) -> dict:
    curl = shutil.which("curl")
    assert curl, "curl is needed for this test"
    result = subprocess.run(
        [curl, "-sS", *args], capture_output=True, text=True, timeout=30, check=True
    )
    return json.loads(result.stdout)


def test_the_chat_completions_example(console_url, api_key):
    data = json.dumps(
        {
            "model": "mira",
            "max_tokens": 1024,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is machine learning?"},
            ],
        }
    )
    body = _curl(
        f"{console_url}/chat/completions",
        "-H", f"Authorization: Bearer {api_key}",
        "-H", "Content-Type: application/json",
        "-d", data,
    )  # fmt: skip
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert (
        body["usage"]["total_tokens"]
        == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


def test_the_models_example_with_either_header(console_url, api_key):
    assert (
        _curl(f"{console_url}/models", "-H", f"Authorization: Bearer {api_key}")["object"] == "list"
    )
    assert _curl(f"{console_url}/models", "-H", f"x-api-key: {api_key}")["object"] == "list"


def test_the_token_count_extra(console_url, api_key):
    body = _curl(
        f"{console_url}/extras/token-count", "-H", f"x-api-key: {api_key}",
        "-H", "Content-Type: application/json", "-d", '{"text": "How many tokens is this?"}',
    )  # fmt: skip
    assert body["tokens"] > 0


def test_the_token_count_extra_ignores_fields_sent_as_null(console_url, api_key):
    body = _curl(
        f"{console_url}/extras/token-count", "-H", f"x-api-key: {api_key}",
        "-H", "Content-Type: application/json",
        "-d", '{"text": null, "input": "How many tokens is this?", "messages": null}',
    )  # fmt: skip
    assert body["tokens"] > 0


def test_the_openapi_document_lists_every_endpoint(console_url, db):
    doc = _curl(f"{console_url}/openapi.json")
    assert doc["openapi"].startswith("3.")
    for path in (
        "/models",
        "/chat/completions",
        "/responses",
        "/embeddings",
        "/messages",
        "/extras/token-count",
        "/images/generate",
        "/images/generations",
        "/images/edit",
        "/image",
        "/vision/locate",
    ):
        assert path in doc["paths"], path
    assert "ChatCompletionRequest" in doc["components"]["schemas"]
    assert {"ImageRequest", "ImageEditRequest", "ImageList", "LocateRequest", "Location"} <= set(
        doc["components"]["schemas"]
    )


def test_the_image_shortcut_example(console_url, api_key):
    body = _curl(
        f"{console_url}/image", "-H", f"x-api-key: {api_key}",
        "-H", "Content-Type: application/json",
        "-d", '{ "prompt": "A futuristic cyberpunk city" }',
    )  # fmt: skip
    [image] = body["data"]
    assert image["file_id"].startswith("file_")
    assert image["url"].startswith(f"{console_url}/files/{image['file_id']}/content?")
