"""POST /v1/upload and the stored files' links: checked, free, kept per workspace."""

import base64
import io
import time

import httpx
from django.core.files.storage import storages
from PIL import Image

from console.actions import create_key
from gateway.models import StoredFile
from tests.conftest import usage_records


def _png(width: int = 64, height: int = 48, colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _upload(console_url: str, secret: str, data: bytes, mime_type: str) -> httpx.Response:
    return httpx.post(
        f"{console_url}/upload",
        headers={"Authorization": f"Bearer {secret}"},
        json={"data": base64.b64encode(data).decode(), "mime_type": mime_type},
        timeout=30,
    )


def test_an_upload_answers_an_id_and_a_link_that_works_without_a_key(console_url, api_key):
    png = _png()
    response = _upload(console_url, api_key, png, "image/png")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"].startswith("file_") and body["mime_type"] == "image/png"
    assert body["bytes"] == len(png)
    fetched = httpx.get(body["url"], timeout=30)
    assert fetched.status_code == 200
    assert fetched.content == png
    assert fetched.headers["content-type"] == "image/png"
    assert fetched.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in fetched.headers
    assert Image.open(io.BytesIO(fetched.content)).size == (64, 48)


def test_an_upload_is_free_and_booked_once(console_url, api_key, acme):
    before = acme.billing.__class__.objects.get(pk=acme.billing.pk).balance
    response = _upload(console_url, api_key, _png(), "image/png")
    assert response.status_code == 201
    records = list(usage_records().filter(product="uploads"))
    assert len(records) == 1
    assert records[0].cost == 0 and records[0].status == 200
    assert records[0].request_id == response.headers["x-request-id"]
    acme.billing.refresh_from_db()
    assert acme.billing.balance == before


def test_the_owning_workspaces_key_reads_a_file_and_another_workspaces_key_gets_404(
    console_url, api_key, globex, charlie
):
    file_id = _upload(console_url, api_key, _png(), "image/png").json()["id"]
    own = httpx.get(
        f"{console_url}/files/{file_id}/content",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    assert own.status_code == 200
    _key, other = create_key(workspace=globex, name="globex", created_by=charlie)
    theirs = httpx.get(
        f"{console_url}/files/{file_id}/content",
        headers={"Authorization": f"Bearer {other}"},
        timeout=30,
    )
    assert theirs.status_code == 404
    assert file_id in theirs.json()["detail"]
    nobody = httpx.get(f"{console_url}/files/{file_id}/content", timeout=30)
    assert nobody.status_code == 401


def test_an_expired_or_forged_link_is_refused(console_url, api_key, settings):
    body = _upload(console_url, api_key, _png(), "image/png").json()
    url = body["url"]
    forged = url.replace("signature=", "signature=x")
    assert httpx.get(forged, timeout=30).status_code == 403
    file = StoredFile.objects.get(pk=body["id"])
    from gateway import media

    past = int(time.time()) - 10
    expired = httpx.get(
        console_url.removesuffix("/v1") + media.signed_path(file, seconds=-10), timeout=30
    )
    assert expired.status_code == 403
    assert "expired" in expired.json()["detail"]
    # A link of the right form, whose expiry was moved: its signature no longer matches.
    later = url.split("expires=")[0] + f"expires={past + 100_000}&" + url.split("&")[-1]
    assert httpx.get(later, timeout=30).status_code == 403


def test_a_png_declared_as_jpeg_is_refused_and_nothing_is_kept(console_url, api_key):
    response = _upload(console_url, api_key, _png(), "image/jpeg")
    assert response.status_code == 400
    assert "not image/jpeg" in response.json()["detail"]
    assert "image/png" in response.json()["detail"]
    assert not StoredFile.objects.exists()
    assert not usage_records().filter(product="uploads").exists()


def test_an_empty_upload_is_refused(console_url, api_key):
    response = _upload(console_url, api_key, b"", "image/png")
    assert response.status_code == 400
    assert "'data'" in response.json()["detail"] and "empty" in response.json()["detail"]
    assert not StoredFile.objects.exists()


def test_an_upload_over_the_cap_gets_413(console_url, api_key, settings):
    settings.MEDIA_MAX_UPLOAD_BYTES = 10_000
    big = _png(2000, 2000, (1, 2, 3)) + b"\0" * 20_000
    response = _upload(console_url, api_key, big, "image/png")
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]
    assert not StoredFile.objects.exists()
    assert not usage_records().filter(product="uploads").exists()


def test_a_decompression_bomb_is_refused(console_url, api_key):
    # A small PNG that claims 20,000 x 20,000 pixels (400 megapixels) once decoded.
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, format="PNG")
    assert len(bomb.getvalue()) < 1_000_000
    response = _upload(console_url, api_key, bomb.getvalue(), "image/png")
    assert response.status_code == 400
    assert "too many pixels" in response.json()["detail"]
    assert not StoredFile.objects.exists()


def test_bytes_that_are_no_kept_type_and_unknown_types_are_refused(console_url, api_key):
    script = b"<script>alert(1)</script>"
    response = _upload(console_url, api_key, script, "image/png")
    assert response.status_code == 400
    assert "none of the types" in response.json()["detail"]
    response = _upload(console_url, api_key, script, "text/html")
    assert response.status_code == 400
    assert "text/html" in response.json()["detail"]
    bad = httpx.post(
        f"{console_url}/upload",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"data": "not base64!", "mime_type": "image/png"},
        timeout=30,
    )
    assert bad.status_code == 400 and "base64" in bad.json()["detail"]
    assert not StoredFile.objects.exists()


def test_a_key_without_the_uploads_scope_gets_403(console_url, alice, acme):
    _key, secret = create_key(workspace=acme, name="chat only", created_by=alice, scopes=["chat"])
    response = _upload(console_url, secret, _png(), "image/png")
    assert response.status_code == 403
    assert "uploads" in response.json()["detail"]


def test_a_file_that_is_not_media_is_served_in_a_sandbox(api_key, acme):
    from gateway import media

    file = StoredFile.objects.create(
        workspace=acme, purpose="upload", content_type="application/octet-stream", size=3,
        storage_name=storages["media"].save("x/test.bin", io.BytesIO(b"abc")),
    )  # fmt: skip
    response = media.file_response(file, b"abc")
    assert response["Content-Security-Policy"] == "sandbox"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_purgemedia_deletes_old_files_and_their_bytes(console_url, api_key):
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    old_id = _upload(console_url, api_key, _png(), "image/png").json()["id"]
    new_id = _upload(console_url, api_key, _png(8, 8), "image/png").json()["id"]
    StoredFile.objects.filter(pk=old_id).update(created_at=timezone.now() - timedelta(days=31))
    old_name = StoredFile.objects.get(pk=old_id).storage_name
    assert storages["media"].exists(old_name)
    out = io.StringIO()
    call_command("purgemedia", days=30, stdout=out)
    assert "Deleted 1 file" in out.getvalue()
    assert not storages["media"].exists(old_name)
    assert list(StoredFile.objects.values_list("pk", flat=True)) == [new_id]
    response = httpx.get(
        f"{console_url}/files/{old_id}/content",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    assert response.status_code == 404
