"""The Fleet page shows the gateway's figures beside the nodes, light, dark and on a phone."""

import httpx
from playwright.sync_api import expect

from console.actions import create_key
from tests.browser.conftest import screenshot, sign_in
from tests.conftest import PASSWORD


def test_staff_see_the_gateway_figures_and_the_nodes(
    alice, acme, asgi_server, upstream_fleet, new_page
):
    alice.is_staff = True
    alice.save()
    _key, secret = create_key(workspace=acme, name="k", created_by=alice)
    for _ in range(2):
        answer = httpx.post(
            f"{asgi_server.url}/v1/chat/completions",
            json={"model": "mira", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-api-key": secret},
            timeout=30,
        )
        assert answer.status_code == 200
    for scheme, width, name in (
        ("light", 1280, "fleet-light"),
        ("dark", 1280, "fleet-dark"),
        ("light", 390, "fleet-phone"),
    ):
        page = new_page(scheme, width=width)
        sign_in(page, alice.email, PASSWORD)
        page.goto("/fleet/")
        expect(page.locator("#figure-calls")).not_to_have_text("0")
        expect(page.locator("#node-simulator")).to_contain_text("Healthy")
        screenshot(page, name)
        assert not page.errors
