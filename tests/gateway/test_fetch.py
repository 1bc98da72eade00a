"""POST /v1/fetch: a page read for a model, and a fetch that cannot be turned inward.

No test here opens a connection outside loopback, even if the guard were broken: the
rules for the other ranges are tested on the policy itself (gateway.webguard, pure
functions), and names are answered by a resolver the test controls (`names`), which maps
them only to loopback addresses whenever the fetch could go on to connect. A listener
records every connection it is offered, so a refused case is seen not to connect at all.
"""

import asyncio
import ipaddress

import httpx
import pytest

from console import ledger
from console.models import UsageRecord
from console.pricing import unit_cost
from gateway import fetch as fetch_module
from gateway.webguard import Allowed, Protected, Refused, address_rule, choose_address, read_url
from tests.conftest import settle_books, within_one_minute
from tests.fetch_fixtures import serve_site
from tests.gateway.conftest import charged

FETCH_PRICE = 1_000


def _fetch(console_url: str, key: str, body: dict) -> httpx.Response:
    return httpx.post(f"{console_url}/fetch", json=body, headers={"x-api-key": key}, timeout=60)


def _site_url(server, path: str, host: str = "site.test") -> str:
    return f"http://{host}:{server.server_address[1]}{path}"


# ---------- the policy, on its own (no socket) ----------

REFUSED_ADDRESSES = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("169.254.0.1", "link-local"),
    ("fe80::1", "link-local"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("fc00::1", "unique-local"),
    ("fd12:3456::1", "unique-local"),
    ("255.255.255.255", "broadcast"),
    ("::ffff:127.0.0.1", "IPv4-mapped IPv6 form of a loopback"),
    ("::ffff:10.1.2.3", "IPv4-mapped IPv6 form of a private"),
    ("::ffff:169.254.169.254", "IPv4-mapped IPv6 form of a link-local"),
    ("::ffff:100.64.0.1", "IPv4-mapped IPv6 form of a carrier-grade NAT"),
    ("64:ff9b::127.0.0.1", "NAT64 IPv6 form of a loopback"),
    ("64:ff9b::10.0.0.1", "NAT64 IPv6 form of a private"),
    ("64:ff9b::169.254.169.254", "NAT64 IPv6 form of a link-local"),
    ("64:ff9b:1::a00:1", "local-use NAT64"),
    ("::127.0.0.1", "IPv4-compatible IPv6 form of a loopback"),
    ("2002:a00:1::1", "6to4 IPv6 form of a private"),
    ("2002:7f00:1::", "6to4 IPv6 form of a loopback"),
    ("2001:db8::1", "documentation"),
    ("192.0.2.10", "documentation"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
]


@pytest.mark.parametrize(("address", "rule"), REFUSED_ADDRESSES)
def test_the_policy_refuses_every_address_that_is_not_public(address, rule):
    assert rule in address_rule(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:93.184.216.34",
     "64:ff9b::93.184.216.34", "2002:5db8:d822::1"],
)  # fmt: skip
def test_the_policy_passes_public_addresses_in_any_form(address):
    assert address_rule(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://2130706433/", "ip_form_not_allowed"),  # decimal
        ("http://017700000001/", "ip_form_not_allowed"),  # octal
        ("http://0x7f000001/", "ip_form_not_allowed"),  # hex
        ("http://0x7f.0.0.1/", "ip_form_not_allowed"),
        ("http://0177.0.0.1/", "ip_form_not_allowed"),
        ("http://127.1/", "ip_form_not_allowed"),
        ("http://10.1/", "ip_form_not_allowed"),
        ("http://169.254.43518/", "ip_form_not_allowed"),
        ("http://example.0x10/", "ip_form_not_allowed"),
        ("ftp://example.com/", "scheme_not_allowed"),
        ("file:///etc/passwd", "scheme_not_allowed"),
        ("gopher://example.com/", "scheme_not_allowed"),
        ("http://user:secret@example.com/", "credentials_in_url"),
        ("http://example.com:22/", "port_not_allowed"),
        ("https://example.com:8443/", "port_not_allowed"),
        ("http://exa mple.com/", "invalid_host"),
        ("http://ex%41mple.com/", "invalid_host"),
        ("http://[fe80::1%25eth0]/", "invalid_host"),
        ("http:///nothing", "invalid_url"),
    ],
)
def test_the_policy_refuses_urls_by_their_form(url, code):
    with pytest.raises(Refused) as refused:
        read_url(url, [80, 443])
    assert refused.value.status == 400 and refused.value.code == code


def test_a_url_in_an_allowed_form_reads_as_its_host_and_port():
    target = read_url("https://Bücher.example/a?b=c", [80, 443])
    assert (target.host, target.port, target.literal) == ("xn--bcher-kva.example", 443, None)
    target = read_url("http://[::ffff:7f00:1]/", [80, 443])
    assert target.literal == ipaddress.ip_address("::ffff:127.0.0.1")


@pytest.mark.parametrize(("address", "rule"), REFUSED_ADDRESSES)
def test_a_name_resolving_to_a_refused_address_is_refused_without_a_connection(
    address, rule, names, settings
):
    """Through the check the fetch makes, with the test's resolver (no socket is opened:
    `check` only looks names up)."""
    settings.FETCH_ALLOW = []
    names.map("inner.test", ["93.184.216.34", address])
    with pytest.raises(Refused) as refused:
        asyncio.run(fetch_module.check("http://inner.test/", Protected()))
    assert refused.value.status == 403 and refused.value.code == "address_not_allowed"
    assert rule in refused.value.detail and "'inner.test'" in refused.value.detail
    # The refusal names the rule, never what the name resolved to.
    assert address not in refused.value.detail


@pytest.mark.parametrize(("address", "rule"), REFUSED_ADDRESSES)
def test_a_url_naming_a_refused_address_is_refused_without_a_lookup(address, rule, names, settings):
    settings.FETCH_ALLOW = []
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(Refused) as refused:
        asyncio.run(fetch_module.check(f"http://{host}/", Protected()))
    assert refused.value.status == 403 and refused.value.code == "address_not_allowed"
    assert rule in refused.value.detail
    assert names.lookups == []


def test_the_first_answer_is_the_one_connected_to_however_the_name_changes(names, settings):
    """A rebinding name: public on the first lookup, loopback after. The check looks it up
    once, and what aiohttp is given to connect with knows only the checked address."""
    settings.FETCH_ALLOW = []
    names.map("rebind.test", ["93.184.216.34"], ["127.0.0.1"])
    target, address = asyncio.run(fetch_module.check("https://rebind.test/", Protected()))
    assert address == ipaddress.ip_address("93.184.216.34")
    pinned = fetch_module._Pinned(target.host, address, target.port)
    answers = asyncio.run(pinned.resolve("rebind.test", 443))
    assert [answer["host"] for answer in answers] == ["93.184.216.34"]
    assert names.lookups == ["rebind.test"]
    with pytest.raises(OSError):
        asyncio.run(pinned.resolve("other.test", 443))


def test_the_allow_list_lifts_the_address_rules_for_what_it_names():
    allowed = Allowed.parse(["10.1.0.0/16", "intranet.example"])
    protected = Protected()
    target = read_url("http://wiki.corp/", [80])
    assert choose_address(target, [ipaddress.ip_address("10.1.2.3")], allowed=allowed,
                          protected=protected) == ipaddress.ip_address("10.1.2.3")  # fmt: skip
    with pytest.raises(Refused):
        choose_address(target, [ipaddress.ip_address("10.2.0.1")], allowed=allowed,
                       protected=protected)  # fmt: skip
    target = read_url("http://intranet.example/", [80])
    assert choose_address(target, [ipaddress.ip_address("192.168.0.9")], allowed=allowed,
                          protected=protected)  # fmt: skip


def test_the_consoles_own_services_are_refused_even_when_allow_listed(names, settings, monkeypatch):
    """The database and Redis by name, and by any name that leads to their address and port."""
    settings.FETCH_ALLOW = ["0.0.0.0/0", "::/0", "db.example", "alias.example"]
    monkeypatch.setitem(settings.DATABASES["default"], "HOST", "db.example")
    monkeypatch.setitem(settings.DATABASES["default"], "PORT", "5432")
    settings.REDIS_URL = "redis://10.9.9.9:6379/0"
    settings.FETCH_PORTS = [80, 443, 5432, 6379]
    names.map("db.example", ["10.0.0.5"])
    names.map("alias.example", ["10.0.0.5"])
    protected = asyncio.run(fetch_module.protected_services(None))
    for url, what in [
        ("http://db.example:5432/", "the database"),
        ("http://alias.example:5432/", "the database"),
        ("http://10.9.9.9:6379/", "the cache"),
    ]:
        with pytest.raises(Refused) as refused:
            asyncio.run(fetch_module.check(url, protected))
        assert refused.value.status == 403 and what in refused.value.detail
    # The allow-listed name on another port is somebody else's site.
    assert asyncio.run(fetch_module.check("http://alias.example/", protected))[1] == (
        ipaddress.ip_address("10.0.0.5")
    )


# ---------- the endpoint, over loopback only ----------


def test_an_article_comes_back_as_markdown_without_its_navigation(
    console_url, api_key, acme, site, fetch_settings
):
    start = ledger.balance_of(acme)
    response = _fetch(console_url, api_key, {"url": _site_url(site, "/article")})
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["title"] == "Tides of the North Sea"
    assert page["final_url"] == _site_url(site, "/article")
    assert page["content_type"] == "text/html" and page["format"] == "markdown"
    content = page["content"]
    assert "# Tides of the North Sea" in content
    assert "[the Wash](https://example.org/wash)" in content
    assert "## Why the range grows" in content and "amphidromic points" in content
    for boilerplate in ("About the harbour office", "Gift shop", "Cookie settings"):
        assert boilerplate not in content
    assert page["next_index"] is None and page["total_length"] == len(content)
    record = charged(response.headers["x-request-id"])
    assert record.product == "fetch" and record.endpoint == "/v1/fetch"
    assert record.units == {"page": 1} and record.status == 200
    assert record.cost == unit_cost("fetch", "", "page", 1) == FETCH_PRICE
    assert ledger.balance_of(acme) == start - FETCH_PRICE


def test_max_length_pages_through_the_content_each_call_charged(
    console_url, api_key, site, fetch_settings, alice_client
):
    url = _site_url(site, "/article")
    whole = _fetch(console_url, api_key, {"url": url, "max_length": 1_000_000}).json()
    pieces, index, ids = [], 0, []
    while index is not None:
        response = _fetch(
            console_url, api_key, {"url": url, "max_length": 300, "start_index": index}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["start_index"] == index and len(page["content"]) <= 300
        pieces.append(page["content"])
        ids.append(response.headers["x-request-id"])
        index = page["next_index"]
    assert len(pieces) > 2 and "".join(pieces) == whole["content"]
    for request_id in ids:
        assert charged(request_id).cost == FETCH_PRICE
    usage = alice_client.get("/w/acme/usage/").content.decode()
    assert "Web fetch" in usage
    detail = alice_client.get(f"/w/acme/usage/{ids[0]}/").content.decode()
    assert "/v1/fetch" in detail


def test_text_and_html_formats(console_url, api_key, site, fetch_settings):
    url = _site_url(site, "/article")
    text = _fetch(console_url, api_key, {"url": url, "format": "text"}).json()
    assert "the Wash sees more" in " ".join(text["content"].split())
    assert "](https://" not in text["content"] and "Gift shop" not in text["content"]
    html = _fetch(console_url, api_key, {"url": url, "format": "html"}).json()
    assert '<a href="https://example.org/wash">the Wash</a>' in html["content"]
    assert "Gift shop" not in html["content"]
    notes = _fetch(console_url, api_key, {"url": _site_url(site, "/notes.txt")}).json()
    assert notes["content"] == "plain notes\nsecond line\n"
    assert notes["content_type"] == "text/plain"


def test_the_connection_goes_to_the_checked_address_not_a_second_answer(
    console_url, api_key, site, fetch_settings, names
):
    """A name that answers 127.0.0.1 (allow-listed) first and 127.0.0.2 after: the page is
    read from 127.0.0.1, and a listener on 127.0.0.2 at the same port is never reached."""
    port = site.server_address[1]
    second = serve_site("127.0.0.2", port)
    try:
        fetch_settings.FETCH_ALLOW = ["127.0.0.1/32"]
        names.map("rebind.test", ["127.0.0.1"], ["127.0.0.2"])
        response = _fetch(console_url, api_key, {"url": f"http://rebind.test:{port}/article"})
        assert response.status_code == 200, response.text
        assert response.json()["title"] == "Tides of the North Sea"
        assert names.lookups.count("rebind.test") == 1
        assert second.connections == [] and site.connections == ["127.0.0.1"]
    finally:
        second.shutdown()
        second.server_close()


def _refused_urls(port: int) -> list[tuple[str, int, str]]:
    """Each refused form, aimed at the listener's port: (url, status, what the detail says)."""
    return [
        (f"http://127.0.0.3:{port}/", 403, "a loopback address"),
        (f"http://[::ffff:127.0.0.3]:{port}/", 403, "IPv4-mapped IPv6 form of a loopback"),
        (f"http://[::ffff:7f00:3]:{port}/", 403, "IPv4-mapped IPv6 form of a loopback"),
        (f"http://2130706435:{port}/", 400, "decimal, octal, hex"),
        (f"http://0x7f000003:{port}/", 400, "decimal, octal, hex"),
        (f"http://0177.0.0.3:{port}/", 400, "decimal, octal, hex"),
        (f"http://0x7f.0.0.3:{port}/", 400, "decimal, octal, hex"),
        (f"http://127.3:{port}/", 400, "decimal, octal, hex"),
        (f"http://loop.test:{port}/", 403, "An address of 'loop.test' is a loopback address"),
        (f"http://mapped.test:{port}/", 403, "IPv4-mapped IPv6 form of a loopback"),
        (f"http://half.test:{port}/", 403, "a loopback address"),
        (f"http://localhost:{port}/", 403, "this console's own host"),
        (f"http://127.0.0.1:{port}/", 403, "this console's own host"),
        (f"http://nowhere.test:{port}/", 400, "could not be found"),
        (f"http://user:pw@site.test:{port}/", 400, "credentials"),
        (f"ftp://127.0.0.3:{port}/", 400, "Only http and https"),
        ("http://127.0.0.3:2/", 400, "Port 2 is not allowed"),
    ]


def test_every_refused_form_is_refused_naming_its_rule_without_a_connection(
    console_url, api_key, acme, listener, fetch_settings, names
):
    port = listener.server_address[1]
    names.map("loop.test", ["127.0.0.3"])
    names.map("mapped.test", ["::ffff:127.0.0.3"])
    # Every address must pass: one allow-listed address beside one that is not.
    fetch_settings.FETCH_ALLOW = ["site.test", "127.0.0.1/32"]
    names.map("half.test", ["127.0.0.1", "127.0.0.3"])
    before = UsageRecord.objects.count()
    for url, status, says in _refused_urls(port):
        response = _fetch(console_url, api_key, {"url": url})
        assert response.status_code == status, (url, response.text)
        assert says in response.json()["detail"], (url, response.text)
    assert listener.connections == []
    settle_books()
    assert UsageRecord.objects.count() == before


def test_a_redirect_to_a_refused_address_is_not_followed(
    console_url, api_key, site, listener, fetch_settings, names
):
    names.map("inner.test", ["127.0.0.3"])
    to = f"http://inner.test:{listener.server_address[1]}/secret"
    response = _fetch(console_url, api_key, {"url": _site_url(site, f"/go?to={to}")})
    assert response.status_code == 403, response.text
    assert "An address of 'inner.test' is a loopback address" in response.json()["detail"]
    assert listener.connections == []
    record = charged(response.headers["x-request-id"])
    assert record.cost == 0 and record.status == 403 and "loopback" in record.error


def test_redirects_are_followed_each_checked_at_most_five(
    console_url, api_key, site, fetch_settings
):
    article = _site_url(site, "/article")
    once = _site_url(site, f"/go?to={article}")
    response = _fetch(console_url, api_key, {"url": once})
    assert response.status_code == 200 and response.json()["final_url"] == article
    url = article
    for _ in range(6):
        url = _site_url(site, f"/go?to={url}")
    response = _fetch(console_url, api_key, {"url": url})
    assert response.status_code == 400 and "more than 5 times" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/big", "/bomb"])
def test_a_body_over_the_size_cap_is_not_read_past_it(
    console_url, api_key, site, fetch_settings, path
):
    fetch_settings.FETCH_MAX_BYTES = 1024 * 1024
    response = _fetch(console_url, api_key, {"url": _site_url(site, path)})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "page_too_large"
    assert "larger than 1 MiB" in response.json()["detail"]
    assert charged(response.headers["x-request-id"]).cost == 0


def test_a_slow_server_is_cut_at_the_time_cap(console_url, api_key, site, fetch_settings):
    fetch_settings.FETCH_TIMEOUT_SECONDS = 0.5
    response = _fetch(console_url, api_key, {"url": _site_url(site, "/slow")})
    assert response.status_code == 504, response.text
    assert "FETCH_TIMEOUT_SECONDS" in response.json()["detail"]
    assert charged(response.headers["x-request-id"]).cost == 0


def test_only_text_is_read_and_an_error_page_is_not_charged(
    console_url, api_key, site, fetch_settings
):
    response = _fetch(console_url, api_key, {"url": _site_url(site, "/picture")})
    assert response.status_code == 400 and "image/png" in response.json()["detail"]
    response = _fetch(console_url, api_key, {"url": _site_url(site, "/missing")})
    assert response.status_code == 502 and "HTTP 404" in response.json()["detail"]
    assert charged(response.headers["x-request-id"]).cost == 0


def test_the_console_and_its_nodes_are_never_fetched_whatever_the_allow_list(
    console_url, api_key, fetch_settings, names, simulator
):
    console_port = int(console_url.split(":")[2].split("/")[0])
    simulator_port = int(simulator.base_url.split(":")[2].split("/")[0])
    fetch_settings.FETCH_PORTS = [80, 443, console_port, simulator_port]
    fetch_settings.FETCH_ALLOW = ["127.0.0.0/8", "console.test", "node.test"]
    names.map("console.test", ["127.0.0.1"])
    names.map("node.test", ["127.0.0.1"])
    before = UsageRecord.objects.count()
    for url, what in [
        (f"http://console.test:{console_port}/v1/models", "this console"),
        (f"http://node.test:{simulator_port}/v1/models", "an upstream node"),
    ]:
        response = _fetch(console_url, api_key, {"url": url})
        assert response.status_code == 403, response.text
        assert what in response.json()["detail"]
    settle_books()
    assert UsageRecord.objects.count() == before


def test_the_fetch_scope_and_bad_bodies(console_url, api_key, alice, acme, fetch_settings, site):
    from console.actions import create_key

    _key, chat_only = create_key(
        workspace=acme, name="chat only", created_by=alice, scopes=["chat"]
    )
    response = _fetch(console_url, chat_only, {"url": _site_url(site, "/article")})
    assert response.status_code == 403 and "fetch" in response.json()["detail"]
    for body, says in [
        ({}, "'url' field is required"),
        ({"url": "http://site.test/", "format": "pdf"}, "'format'"),
        ({"url": "http://site.test/", "max_length": 0}, "'max_length'"),
        ({"url": "http://site.test/", "start_index": -1}, "'start_index'"),
        ({"url": "http://site.test/", "cookies": "a=b"}, "'cookies'"),
    ]:
        response = _fetch(console_url, api_key, body)
        assert response.status_code == 400 and says in response.json()["detail"], response.text
    assert site.connections == []


def test_the_fetch_is_rate_limited_per_key(console_url, alice, acme, fetch_settings, site):
    from console.actions import create_key

    _key, secret = create_key(workspace=acme, name="slow key", created_by=alice, rpm_limit=1)
    url = _site_url(site, "/notes.txt")
    within_one_minute()
    assert _fetch(console_url, secret, {"url": url}).status_code == 200
    response = _fetch(console_url, secret, {"url": url})
    assert response.status_code == 429 and "Retry-After" in response.headers
    assert len(site.connections) == 1


def test_the_openapi_document_describes_the_fetch(console_url, db):
    doc = httpx.get(f"{console_url}/openapi.json", timeout=30).json()
    operation = doc["paths"]["/fetch"]["post"]
    assert "403" in operation["responses"] and "504" in operation["responses"]
    assert "FetchedPage" in doc["components"]["schemas"]
