"""Headless Chromium (Debian's package) driven by Playwright, against the live console."""

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots"
# A loaded CI machine can take longer than Playwright's default 5 s to show a change.
expect.set_options(timeout=15_000)

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if not path:
        raise RuntimeError("Chromium is not installed: run `make test`, which installs it.")
    return path


@pytest.fixture(scope="module")
def browser() -> Browser:
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls
    # are still plain synchronous calls made between browser steps.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium_path(), args=CHROMIUM_ARGS
            )
            yield browser
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def new_page(browser, asgi_server):
    """Open a page in a fresh browser context (its own cookies), light or dark."""
    contexts = []

    def make(color_scheme: str = "light", width: int = 1280, height: int = 860) -> Page:
        context = browser.new_context(
            base_url=asgi_server.url,
            color_scheme=color_scheme,
            viewport={"width": width, "height": height},
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.on("console", lambda msg: _record_console_error(page, msg))
        return page

    yield make
    for context in contexts:
        context.close()


def _record_console_error(page: Page, msg) -> None:
    # A 403 or 404 page that a test opens on purpose is not a script error.
    if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
        page.errors.append(msg.text)


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    # The caret stays as it is: hiding it leaves an empty style attribute on inputs, which
    # htmx copies onto their replacement in a swap, and the pages' CSP refuses inline styles.
    page.screenshot(path=path, full_page=True, caret="initial")
    return path


def sign_in(page: Page, email: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/w/**")
