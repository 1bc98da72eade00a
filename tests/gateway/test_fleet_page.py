"""The staff-only Fleet page, and the simulator notice on every page."""

from django.test import override_settings

from accounts.models import User
from tests.conftest import signed_in


def test_staff_see_each_node_with_its_state_and_no_key(db, upstream_fleet):
    staff = User.objects.create_user(email="ops@example.com", password="x", is_staff=True)
    page = signed_in(staff).get("/fleet/").content.decode()
    assert "simulator" in page and "Healthy" in page
    assert upstream_fleet.nodes[0].config.base_url in page
    assert upstream_fleet.nodes[0].config.api_key not in page


def test_the_node_table_refreshes_as_a_partial(db, upstream_fleet):
    staff = User.objects.create_user(email="ops@example.com", password="x", is_staff=True)
    partial = signed_in(staff).get("/fleet/", headers={"HX-Request": "true"}).content.decode()
    assert partial.lstrip().startswith('<div id="fleet-live"')
    assert 'id="nodes"' in partial and 'id="figures"' in partial


def test_members_who_are_not_staff_get_404(alice_client):
    assert alice_client.get("/fleet/").status_code == 404


def test_every_page_says_when_the_simulator_is_the_upstream(alice_client):
    with override_settings(MIRA_SIMULATOR=True):
        for url in ("/w/acme/", "/w/acme/members/", "/w/acme/settings/"):
            assert "Simulator mode." in alice_client.get(url).content.decode()
    with override_settings(MIRA_SIMULATOR=False):
        assert "Simulator mode." not in alice_client.get("/w/acme/").content.decode()


def test_the_gateway_figures_are_the_metrics_figures(asgi_server, upstream_fleet, alice, acme):
    import re

    import httpx

    from console.actions import create_key
    from tests.gateway.test_ops import metric

    _key, secret = create_key(workspace=acme, name="k", created_by=alice)
    for _ in range(3):
        answer = httpx.post(
            f"{asgi_server.url}/v1/chat/completions",
            json={"model": "mira", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-api-key": secret},
            timeout=30,
        )
        assert answer.status_code == 200
    scraped = httpx.get(f"{asgi_server.url}/metrics").text
    calls = metric(scraped, "mira_requests_total")
    assert calls >= 3
    staff = User.objects.create_user(email="ops@example.com", password="x", is_staff=True)
    page = signed_in(staff).get("/fleet/").content.decode()
    shown = re.search(r'id="figure-calls">([\d,]+)<', page).group(1)
    assert int(shown.replace(",", "")) == calls
    assert 'id="figure-open">0 / 0<' in page
