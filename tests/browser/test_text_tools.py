"""The Embeddings and Responses pages and the live token count in Chromium, against the
simulator: a heat map of the inputs' similarities and their vectors as a download; a response,
streamed or not, with its output, request and response views and its cost in the history; and
a count of the chat's prompt that follows the draft and the model."""

import json
import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import screenshot, sign_in
from tests.conftest import PASSWORD
from upstream.fleet import set_fleet

pytestmark = pytest.mark.browser

EMB = "/w/acme/playground/embeddings/"
RSP = "/w/acme/playground/responses/"
COUNT = re.compile(r"^(\d+) tokens? · ≈ (\$[\d.]+)$")
SOME = re.compile(r"^[1-9]\d* tokens? · ≈ \$0\.\d+$")


@pytest.fixture
def slow_upstream(start_simulator, make_fleet):
    """A simulator that streams one token every 80 ms, installed as the console's upstream."""
    server = start_simulator(chunk_delay_ms=80)
    fleet = make_fleet(server, names=["slow"])
    fleet.is_simulator = True
    previous = set_fleet(fleet)
    yield server
    set_fleet(previous)


def _open(new_page, path: str, heading: str, color_scheme="light", width=1440, height=900) -> Page:
    page = new_page(color_scheme=color_scheme, width=width, height=height)
    sign_in(page, "alice@example.com", PASSWORD)
    page.goto(path)
    expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    return page


def _count(page: Page, selector: str) -> tuple[int, str]:
    text = page.locator(selector).inner_text().strip()
    match = COUNT.match(text)
    assert match, text
    return int(match.group(1)), match.group(2)


def test_embeddings_draw_a_heat_map_and_the_vectors_download(alice, new_page, upstream_fleet):
    page = _open(new_page, EMB, "Embeddings")
    expect(page.get_by_role("link", name="Embeddings")).to_have_attribute("aria-current", "page")
    inputs = ["The cat sat on the mat", "A cat was sitting on the mat", "Stock prices fell today"]
    page.get_by_label("Inputs").fill("\n".join(inputs))
    expect(page.locator("#emb-tokens")).to_have_text(COUNT)
    page.get_by_label("Dimensions").fill("256")
    page.get_by_role("button", name="Embed").click()
    cells = page.locator("#emb-heatmap td")
    expect(cells).to_have_count(9, timeout=30_000)
    diagonal = [cells.nth(i * 3 + i).inner_text() for i in range(3)]
    assert diagonal == ["1.00", "1.00", "1.00"]
    assert float(cells.nth(1).inner_text()) > float(cells.nth(2).inner_text())
    expect(page.locator("#emb-vectors tbody tr")).to_have_count(3)
    expect(page.locator("#emb-vectors tbody tr").first).to_contain_text("256")
    assert page.locator(".hm-cell.hm-10").count() >= 3

    with page.expect_download() as info:
        page.get_by_role("link", name="Vectors (JSON)").click()
    download = info.value
    assert re.fullmatch(r"embeddings-\d+\.json", download.suggested_filename)
    data = json.loads(open(download.path()).read())
    assert [item["input"] for item in data["data"]] == inputs
    assert data["dimensions"] == 256 and all(len(i["embedding"]) == 256 for i in data["data"])

    # The run is in the history, and reopens with its heat map.
    page.get_by_role("button", name="History").click()
    page.locator("#emb-history a").first.click()
    expect(page.locator("#emb-heatmap td")).to_have_count(9)
    screenshot(page, "playground-embeddings-light")
    assert page.errors == []


def test_embeddings_in_the_dark_and_on_a_phone(alice, new_page, upstream_fleet):
    page = _open(new_page, EMB, "Embeddings", color_scheme="dark")
    page.get_by_label("Inputs").fill("Rivers run to the sea\nThe sea is salty\nA river delta")
    page.get_by_role("button", name="Embed").click()
    expect(page.locator("#emb-heatmap td")).to_have_count(9, timeout=30_000)
    screenshot(page, "playground-embeddings-dark")
    phone = _open(new_page, EMB, "Embeddings", width=390, height=844)
    expect(phone.locator("#emb-heatmap td")).to_have_count(9)
    screenshot(phone, "playground-embeddings-phone")
    assert page.errors == [] and phone.errors == []


def test_a_response_shows_its_output_request_and_response_and_its_cost(
    alice, new_page, upstream_fleet
):
    page = _open(new_page, RSP, "Responses")
    page.get_by_label("Instructions").fill("Answer in one sentence.")
    page.get_by_label("Prompt").fill("What is a river delta?")
    expect(page.locator("#rsp-tokens")).to_have_text(COUNT)
    # Streamed (the default): the events come over the page's websocket as they are sent.
    expect(page.get_by_label("Stream")).to_be_checked()
    page.get_by_role("button", name="Send").click()
    output = page.locator("#rsp-output")
    expect(page.locator("#rsp-cost")).to_be_visible(timeout=30_000)
    assert output.inner_text().strip()
    cost = page.locator("#rsp-cost").inner_text()
    assert re.fullmatch(r"\$0\.\d+", cost) and cost != "$0.00"

    page.get_by_role("tab", name="Request").click()
    request = page.locator("#rsp-request-json")
    expect(request).to_be_visible()
    sent = json.loads(request.inner_text())
    assert sent["input"] == "What is a river delta?"
    assert sent["instructions"] == "Answer in one sentence." and sent["model"] == "mira"
    expect(output).to_be_hidden()

    page.get_by_role("tab", name="Response").click()
    received = json.loads(page.locator("#rsp-response-json").inner_text())
    assert received["object"] == "response" and received["status"] == "completed"
    assert received["output"][-1]["content"][0]["text"].strip() in output.text_content()
    events = page.locator("#rsp-events-json").inner_text().splitlines()
    kinds = [json.loads(line)["type"] for line in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    screenshot(page, "playground-responses-light")

    page.get_by_role("button", name="History").click()
    item = page.locator("#rsp-history .pg-history-item").first
    expect(item).to_contain_text("What is a river delta?")
    expect(item.locator(".rsp-history-cost")).to_have_text(cost)
    assert page.errors == []


def test_a_tool_call_is_shown_and_the_page_reads_in_the_dark_and_on_a_phone(
    alice, new_page, upstream_fleet
):
    page = _open(new_page, RSP, "Responses", color_scheme="dark")
    page.get_by_label("Prompt").fill("Call get_weather for Lisbon")
    page.locator("summary", has_text="Function tools").click()
    tool = {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    page.get_by_label("Function tools").fill(json.dumps([tool]))
    # Not streamed: one request, answered with the whole response.
    page.get_by_label("Stream").uncheck()
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".rsp-tool")).to_contain_text("Called get_weather", timeout=30_000)
    screenshot(page, "playground-responses-dark")
    phone = _open(new_page, RSP, "Responses", width=390, height=844)
    phone.get_by_label("Prompt").fill("Name three rivers")
    phone.get_by_role("button", name="Send").click()
    expect(phone.locator("#rsp-cost")).to_be_visible(timeout=30_000)
    expect(phone.locator("#rsp-output")).to_be_visible()
    screenshot(phone, "playground-responses-phone")
    assert page.errors == [] and phone.errors == []


def test_the_chat_shows_a_live_token_count_that_follows_the_model(alice, new_page, upstream_fleet):
    page = _open(new_page, "/w/acme/playground/", "Playground")
    counter = "#pg-tokens"
    expect(page.locator(counter)).to_have_text("0 tokens · ≈ $0.00")
    page.get_by_label("Message", exact=True).press_sequentially("Hello there")
    expect(page.locator(counter)).not_to_have_text("0 tokens · ≈ $0.00")
    short, _ = _count(page, counter)
    page.get_by_label("Message", exact=True).press_sequentially(", tell me about the river Rhine")
    expect(page.locator(counter)).not_to_have_text(re.compile(rf"^{short} tokens"))
    tokens, cheap = _count(page, counter)
    assert tokens > short

    # The system prompt is part of what would be sent.
    page.get_by_label("System prompt").fill("You are a geographer who answers briefly.")
    expect(page.locator(counter)).not_to_have_text(re.compile(rf"^{tokens} tokens"))
    tokens, cheap = _count(page, counter)

    page.get_by_label("Model", exact=True).select_option("mira-max")
    expect(page.locator(counter)).not_to_have_text(re.compile(re.escape(cheap) + "$"))
    same, dear = _count(page, counter)
    assert same == tokens and float(dear[1:]) > float(cheap[1:])
    screenshot(page, "playground-chat-token-count-light")
    assert page.errors == []


def test_the_chat_token_count_reads_in_the_dark_and_on_a_phone(alice, new_page, upstream_fleet):
    page = _open(new_page, "/w/acme/playground/", "Playground", color_scheme="dark")
    page.get_by_role("button", name="Write a haiku").click()
    expect(page.locator("#pg-tokens")).to_have_text(SOME)
    screenshot(page, "playground-chat-token-count-dark")
    phone = _open(new_page, "/w/acme/playground/", "Playground", width=390, height=844)
    phone.get_by_label("Message", exact=True).fill("How long is the Nile?")
    expect(phone.locator("#pg-tokens")).to_have_text(SOME)
    screenshot(phone, "playground-chat-token-count-phone")
    assert page.errors == [] and phone.errors == []


def test_a_streamed_response_shows_its_text_as_it_comes_and_can_be_stopped(
    alice, new_page, slow_upstream
):
    page = _open(new_page, RSP, "Responses")
    page.get_by_label("Prompt").fill("Tell me a long story about rivers, deltas and the sea")
    page.get_by_role("button", name="Send").click()
    live = page.locator("#rsp-live-events")
    expect(live).to_contain_text("response.output_text.delta", timeout=30_000)
    # Part of the text is on the page while the rest is still being written.
    expect(page.locator(".rsp-live .chip")).to_have_text("streaming")
    assert page.locator("#rsp-output").inner_text().strip()
    page.get_by_role("button", name="Stop").click()
    expect(page.locator(".rsp-live .chip")).to_have_text("stopped")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    assert page.errors == []
