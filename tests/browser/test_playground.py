"""The chat playground in Chromium, against a simulator that writes one token every 60 ms."""

import os
import re
import shutil
import subprocess
import time

import pytest
from playwright.sync_api import Page, expect

from console.actions import create_key
from console.models import UsageRecord
from playground.models import Conversation
from tests.browser.conftest import screenshot, sign_in
from tests.conftest import PASSWORD, seed_prices, usage_records
from tests.upstream_fixtures import wait_for
from upstream.fleet import set_fleet

pytestmark = pytest.mark.browser

CODE_REPLY = """reply with: Here is a small, tested helper and how to call it.

```python
def moving_average(values: list[float], window: int = 3) -> list[float]:
    \"\"\"The mean of each run of `window` values.\"\"\"
    if window < 1:
        raise ValueError("window must be positive")
    return [sum(values[i : i + window]) / window for i in range(len(values) - window + 1)]
```

| input | window | result |
|:--|--:|:--|
| `[1, 2, 3, 4]` | 2 | `[1.5, 2.5, 3.5]` |

1. Keep the window **small** for noisy data.
2. Call it from a script:

```bash
python -c "from stats import moving_average; print(moving_average([1, 2, 3]))"
```"""

LONG_QUESTION = "Tell me a long story about rivers, deltas, estuaries and the open sea"


@pytest.fixture
def slow_upstream(start_simulator, make_fleet):
    """The console's upstream for the test: a simulator that streams one token every 60 ms."""
    server = start_simulator(chunk_delay_ms=60)
    fleet = make_fleet(server, names=["simulator"])
    fleet.is_simulator = True
    previous = set_fleet(fleet)
    yield server
    set_fleet(previous)


def _open(new_page, email: str = "alice@example.com", color_scheme: str = "light", slug="acme"):
    page = new_page(color_scheme=color_scheme, width=1440, height=900)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, email, PASSWORD)
    page.goto(f"/w/{slug}/playground/")
    expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    return page


def _send(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Control+Enter")


def _reply(page: Page, column: int = 0):
    return page.locator(f'.pg-column[data-column="{column}"] .pg-assistant').last


def _partial_states(page: Page, reply, limit: float = 20.0) -> list[str]:
    """Every distinct text the reply showed until it finished."""
    states: list[str] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        text = reply.locator(".pg-body").inner_text() if reply.count() else ""
        if text and (not states or states[-1] != text):
            states.append(text)
        if reply.count() and "is-streaming" not in (reply.get_attribute("class") or ""):
            states.append(reply.locator(".pg-body").inner_text())
            return states
        page.wait_for_timeout(15)
    raise AssertionError("the reply did not finish")


def test_a_reply_streams_in_as_markdown_with_code_blocks(alice, new_page, slow_upstream):
    page = _open(new_page)
    page.get_by_label("System prompt").fill("You are a concise senior Python engineer.")
    _send(page, "Show me a moving average helper in Python.\n\n" + CODE_REPLY)
    reply = _reply(page)
    expect(reply).to_be_visible()
    states = _partial_states(page, reply)
    # Several partial renderings, each growing, before the final one.
    assert len(set(states)) >= 5
    assert states[0] != states[-1] and states[-1].startswith("Here is a small")

    expect(reply.locator(".pg-code")).to_have_count(2)
    python = reply.locator(".pg-code").first
    expect(python.locator(".pg-code-bar")).to_contain_text("python")
    expect(python.locator(".t-k").first).to_have_text("def")
    expect(reply.locator("table th").first).to_have_text("input")
    metrics = reply.locator(".pg-metrics")
    expect(metrics).to_contain_text(re.compile(r"\d+ in · \d+ out"))
    expect(metrics).to_contain_text("$0.000")
    expect(metrics).to_contain_text("TTFT")
    expect(metrics).to_contain_text("tok/s")
    expect(page.locator("#pg-totals")).to_contain_text("1 call")

    python.get_by_role("button", name="Copy").click()
    expect(python.get_by_role("button", name="Copied")).to_be_visible()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("def moving_average(") and "raise ValueError" in copied

    # The conversation was saved: the URL names it, and it reopens where it was.
    conversation = Conversation.objects.get()
    expect(page).to_have_url(re.compile(rf"\?c={conversation.pk}$"))
    page.get_by_role("button", name="History").click()
    expect(page.locator("#pg-history")).to_contain_text("Show me a moving average")
    page.keyboard.press("Escape")
    page.get_by_label("Message", exact=True).focus()
    record = UsageRecord.objects.get()
    assert record.source == "playground" and record.user_id == alice.pk
    screenshot(page, "playground-chat-light")

    dark = _open(new_page, color_scheme="dark")
    dark.goto(f"/w/acme/playground/?c={conversation.pk}")
    expect(dark.get_by_label("System prompt")).to_have_value(
        "You are a concise senior Python engineer."
    )
    expect(_reply(dark).locator(".pg-code-bar").first).to_contain_text("python")
    screenshot(dark, "playground-chat-dark")
    assert page.errors == [] and dark.errors == []


def test_stop_and_escape_halt_the_reply(alice, new_page, slow_upstream):
    page = _open(new_page)
    _send(page, LONG_QUESTION)
    reply = _reply(page)
    expect(reply.locator(".pg-body")).not_to_be_empty()
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_visible()
    stop.click()
    expect(reply.locator(".chip", has_text="stopped")).to_be_visible()
    stopped_text = reply.locator(".pg-body").inner_text()
    page.wait_for_timeout(400)
    assert reply.locator(".pg-body").inner_text() == stopped_text
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    record = UsageRecord.objects.get()
    assert record.status == 499 and record.tokens_out > 0

    _send(page, LONG_QUESTION + " and lakes")
    second = page.locator(".pg-assistant").nth(1)
    expect(second.locator(".pg-body")).not_to_be_empty()
    page.keyboard.press("Escape")
    expect(second.locator(".chip", has_text="stopped")).to_be_visible()
    assert UsageRecord.objects.filter(status=499).count() == 2
    # The simulator notices the closed connection on its own thread, in its own time.
    assert wait_for(lambda: slow_upstream.stats()["open_streams"] == 0)
    assert page.errors == []


def test_compare_streams_two_models_side_by_side(alice, new_page, slow_upstream):
    page = _open(new_page)
    page.get_by_role("button", name="Compare", exact=True).click()
    columns = page.locator(".pg-column")
    expect(columns).to_have_count(2)
    page.get_by_label("Model for column B").select_option("mira-pro")
    _send(page, "reply with: Rivers carry **sediment** to the sea, building deltas over centuries.")
    left, right = _reply(page, 0), _reply(page, 1)
    # Both columns are being written at the same time.
    expect(left.locator(".pg-body")).not_to_be_empty()
    expect(right.locator(".pg-body")).not_to_be_empty()
    assert "is-streaming" in (left.get_attribute("class") or "")
    assert "is-streaming" in (right.get_attribute("class") or "")
    expect(left.locator(".pg-metrics")).to_be_visible(timeout=15_000)
    expect(right.locator(".pg-metrics")).to_be_visible(timeout=15_000)
    expect(left.locator(".pg-role")).to_contain_text("mira")
    expect(right.locator(".pg-role")).to_contain_text("mira-pro")
    assert sorted(UsageRecord.objects.values_list("model", flat=True)) == ["mira", "mira-pro"]
    _send(page, "reply with: And the **Nile** is the longest of them: about `6,650 km`.")
    expect(right.locator(".pg-metrics")).to_be_visible(timeout=15_000)
    expect(page.locator(".pg-column").nth(1).locator(".pg-assistant")).to_have_count(2)
    expect(
        page.locator(".pg-column").nth(1).locator(".pg-assistant").last.locator(".pg-metrics")
    ).to_be_visible(timeout=15_000)
    expect(
        page.locator(".pg-column").nth(0).locator(".pg-assistant").last.locator(".pg-metrics")
    ).to_be_visible(timeout=15_000)
    screenshot(page, "playground-compare-light")

    conversation = Conversation.objects.get()
    dark = _open(new_page, color_scheme="dark")
    dark.goto(f"/w/acme/playground/?c={conversation.pk}")
    expect(dark.locator(".pg-column")).to_have_count(2)
    expect(dark.get_by_label("Model for column B")).to_have_value("mira-pro")
    screenshot(dark, "playground-compare-dark")
    assert page.errors == [] and dark.errors == []


def test_markup_in_a_reply_is_shown_as_text(alice, new_page, upstream_fleet):
    page = _open(new_page)
    _send(
        page,
        'reply with: <script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> '
        "[click](javascript:window.pwned=3)",
    )
    reply = _reply(page)
    expect(reply.locator(".pg-metrics")).to_be_visible()
    expect(reply.locator(".pg-body")).to_contain_text("<script>window.pwned = 1</script>")
    expect(reply.locator(".pg-body")).to_contain_text('<img src=x onerror="window.pwned = 2">')
    assert reply.locator("script, img, a[href^='javascript']").count() == 0
    page.reload()
    expect(_reply(page).locator(".pg-body")).to_contain_text("<script>")
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.errors == []


def test_view_code_gives_a_curl_command_that_works(alice, acme, new_page, upstream_fleet):
    page = _open(new_page)
    page.get_by_label("Max tokens").fill("64")
    _send(page, "What is a river delta?")
    expect(_reply(page).locator(".pg-metrics")).to_be_visible()
    page.get_by_role("button", name="View code").click()
    dialog = page.get_by_role("dialog", name="View code")
    expect(dialog).to_be_visible()
    curl = dialog.locator("#pg-code-curl")
    expect(curl).to_contain_text("/v1/chat/completions")
    command = curl.inner_text()
    assert "$MIRA_API_KEY" in command and "sk-mira-" not in command
    assert '"max_tokens": 64' in command and "What is a river delta?" in command

    dialog.get_by_role("tab", name="Python").click()
    expect(dialog.locator("#pg-code-python")).to_contain_text('os.environ["MIRA_API_KEY"]')
    expect(dialog.locator("#pg-code-python")).to_contain_text("base_url=")
    dialog.get_by_role("tab", name="JavaScript").click()
    expect(dialog.locator("#pg-code-javascript")).to_contain_text("process.env.MIRA_API_KEY")

    _key, secret = create_key(workspace=acme, name="snippet", created_by=alice)
    bash = shutil.which("bash")
    assert bash and shutil.which("curl")
    result = subprocess.run(
        [bash, "-c", command],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "MIRA_API_KEY": secret},
        check=True,
    )
    import json

    answer = json.loads(result.stdout)
    assert answer["object"] == "chat.completion"
    assert "river delta" in answer["choices"][0]["message"]["content"]
    assert usage_records().filter(source="api").count() == 1
    assert page.errors == []


def test_an_error_appears_inline_with_what_to_do(charlie, new_page, upstream_fleet):
    seed_prices()
    pages = []
    for scheme in ("light", "dark"):
        page = _open(new_page, "charlie@example.com", scheme, slug="globex")
        _send(page, "Summarise the history of the Rhine in three sentences.")
        error = _reply(page).locator(".pg-error")
        expect(error).to_contain_text("Not enough credit")
        expect(error.get_by_role("link", name="Add credit on the Billing page")).to_have_attribute(
            "href", "/w/globex/billing/"
        )
        screenshot(page, f"playground-error-{scheme}")
        pages.append(page)
    assert all(page.errors == [] for page in pages)


def test_images_can_be_attached_and_bad_files_are_refused(
    alice, new_page, upstream_fleet, tmp_path
):
    from PIL import Image

    picture = tmp_path / "chart.png"
    Image.new("RGB", (40, 30), (90, 120, 220)).save(picture)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    page = _open(new_page)
    page.locator("#pg-file").set_input_files([str(notes)])
    expect(page.locator("#pg-composer-error")).to_have_text(
        "notes.txt is not a PNG, JPEG, GIF or WebP image."
    )
    page.locator("#pg-file").set_input_files([str(picture)])
    expect(page.locator(".pg-thumb img")).to_have_count(1)
    expect(page.locator("#pg-composer-error")).to_be_hidden()
    page.locator("#pg-file").set_input_files(
        [
            {
                "name": "huge.png",
                "mimeType": "image/png",
                "buffer": b"\x89PNG" + bytes(5 * 1024 * 1024),
            }
        ]
    )
    expect(page.locator("#pg-composer-error")).to_have_text(
        "huge.png is 5.0 MB; an image may be at most 4 MB."
    )

    # Dropped and pasted images are attached too.
    files = page.evaluate_handle(
        """async () => {
          const canvas = document.createElement("canvas");
          canvas.width = 8; canvas.height = 6;
          const blob = await new Promise((done) => canvas.toBlob(done, "image/png"));
          const transfer = new DataTransfer();
          transfer.items.add(new File([blob], "dropped.png", { type: "image/png" }));
          return transfer;
        }"""
    )
    page.dispatch_event(".pg-main", "drop", {"dataTransfer": files})
    expect(page.locator(".pg-thumb img")).to_have_count(2)
    page.evaluate(
        """(transfer) => document.getElementById("pg-input").dispatchEvent(
          new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true, cancelable: true }))""",
        files,
    )
    expect(page.locator(".pg-thumb img")).to_have_count(3)
    page.get_by_role("button", name="Remove dropped.png").first.click()
    expect(page.locator(".pg-thumb img")).to_have_count(2)

    _send(page, "What is in this image?")
    expect(page.locator(".pg-user .pg-images img")).to_have_count(2)
    expect(_reply(page).locator(".pg-body")).to_contain_text("a PNG image of 40x30 pixels")
    expect(_reply(page).locator(".pg-body")).to_contain_text("a PNG image of 8x6 pixels")
    expect(page.locator(".pg-thumb")).to_have_count(0)
    expect(_reply(page).locator(".pg-metrics")).to_be_visible()
    assert page.errors == []


def test_the_thread_follows_the_reply_unless_the_member_scrolls_up(alice, new_page, slow_upstream):
    page = _open(new_page)
    lines = "\n\n".join(f"Line {n} of a long answer." for n in range(1, 60))
    _send(page, f"reply with: {lines}")
    assert page.evaluate("document.activeElement.id") == "pg-input"
    thread = page.locator(".pg-thread").first
    page.wait_for_function(
        "() => { const t = document.querySelector('.pg-thread');"
        " return t.scrollHeight > t.clientHeight + 150; }"
    )
    at_bottom = "t => t.scrollHeight - t.scrollTop - t.clientHeight < 48"
    assert thread.evaluate(at_bottom)
    thread.hover()
    page.mouse.wheel(0, -400)
    page.wait_for_timeout(300)
    scrolled_to = thread.evaluate("t => t.scrollTop")
    page.wait_for_timeout(500)
    # The reply kept growing, but the member's place stayed put.
    assert thread.evaluate("t => t.scrollTop") == scrolled_to
    assert not thread.evaluate(at_bottom)
    jump = page.get_by_role("button", name="Latest")
    expect(jump).to_be_visible()
    jump.click()
    page.wait_for_timeout(200)
    assert thread.evaluate(at_bottom)
    page.get_by_role("button", name="Stop").click()
    expect(_reply(page).locator(".chip", has_text="stopped")).to_be_visible()


def test_regenerating_and_editing_keep_every_version(alice, new_page, upstream_fleet):
    page = _open(new_page)
    _send(page, "reply with: First answer")
    reply = _reply(page)
    expect(reply.locator(".pg-metrics")).to_be_visible()
    reply.hover()
    reply.get_by_role("button", name="Regenerate reply").click()
    expect(page.locator(".pg-assistant .pg-branch-pos")).to_have_text("2/2")
    expect(_reply(page).locator(".pg-metrics")).to_be_visible()
    page.get_by_role("button", name="Previous version").click()
    expect(page.locator(".pg-assistant .pg-branch-pos")).to_have_text("1/2")
    expect(_reply(page).locator(".pg-body")).to_have_text("First answer")

    question = page.locator(".pg-user").first
    question.hover()
    question.get_by_role("button", name="Edit message").click()
    editor = question.get_by_label("Edit the message")
    expect(editor).to_have_value("reply with: First answer")
    editor.fill("reply with: Second answer")
    editor.press("Control+Enter")
    expect(page.locator(".pg-user .pg-branch-pos")).to_have_text("2/2")
    expect(_reply(page).locator(".pg-body")).to_have_text("Second answer")
    # The text can arrive in a delta before the reply is saved and booked; the metrics come
    # with the final rendering, sent once it is. Reloading earlier closes the socket, which
    # stops the reply, and the new page may show it unfinished.
    expect(_reply(page).locator(".pg-metrics")).to_be_visible()
    page.reload()
    expect(page.locator(".pg-user .pg-branch-pos")).to_have_text("2/2")
    expect(_reply(page).locator(".pg-body")).to_have_text("Second answer")
    assert UsageRecord.objects.count() == 3
    assert page.errors == []


def test_signing_out_in_another_tab_stops_the_reply_and_closes_the_playground(
    alice, new_page, slow_upstream
):
    page = _open(new_page)
    _send(page, LONG_QUESTION)
    reply = _reply(page)
    expect(reply.locator(".pg-body")).not_to_be_empty()

    other = page.context.new_page()
    other.goto("/w/acme/")
    other.get_by_label("Account menu").click()
    other.get_by_role("menuitem", name="Sign out").click()

    expect(page.locator("#pg-status")).to_have_text(
        "You are signed out. Reload the page to sign in again."
    )
    expect(reply).to_contain_text("stopped")
    screenshot(page, "playground-signed-out")
    record = usage_records().get()
    assert record.status == 499 and record.user_id == alice.pk
    assert page.errors == []
