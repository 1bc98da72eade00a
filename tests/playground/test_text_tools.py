"""The Embeddings and Responses pages against the real simulator: calls go through the gateway's
pipeline as the member (metered as "playground"), runs are kept with their exact request,
reopen, download and show as code; bad forms say what is wrong and cost nothing; other
members and other workspaces see nothing."""

import json
import re

import pytest

from console.models import UsageRecord
from playground.models import EmbeddingRun, ResponseRun
from tests.conftest import settle_books
from tests.playground.conftest import text_of

pytestmark = pytest.mark.django_db(transaction=True)

EMB = "/w/acme/playground/embeddings/"
RSP = "/w/acme/playground/responses/"
HTMX = {"HTTP_HX_REQUEST": "true"}
INPUTS = "The cat sat on the mat\nA cat was sitting on the mat\nStock prices fell sharply today"


def embed(client, **fields):
    return client.post(EMB + "run/", {"input": INPUTS, "model": "mira-embed"} | fields, **HTMX)


def send(client, **fields):
    data = {"input": "Explain recursion in one line.", "model": "mira"}
    return client.post(RSP + "send/", data | fields, **HTMX)


def cells(page: str) -> list[list[str]]:
    table = re.search(r'<table class="hm" id="emb-heatmap">.*?</table>', page, re.S).group(0)
    rows = re.findall(r"<tr><th scope=\"row\".*?</tr>", table, re.S)
    return [re.findall(r'<td class="hm-cell[^"]*"[^>]*>([^<]*)</td>', row) for row in rows]


def test_embeddings_are_metered_kept_and_drawn_as_a_heat_map(alice, alice_client, upstream_fleet):
    response = embed(alice_client, dimensions="64")
    assert response.status_code == 200
    page = response.content.decode()
    run = EmbeddingRun.objects.get()
    assert run.request == {
        "model": "mira-embed",
        "input": INPUTS.split("\n"),
        "encoding_format": "float",
        "dimensions": 64,
    }
    assert [len(v) for v in run.vectors] == [64, 64, 64]
    matrix = cells(page)
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    assert [matrix[i][i] for i in range(3)] == ["1.00", "1.00", "1.00"]
    assert matrix[0][1] == matrix[1][0]
    # The two sentences about a cat are closer than either is to the one about stocks.
    assert float(matrix[0][1]) > float(matrix[0][2]) and float(matrix[0][1]) > float(matrix[1][2])
    assert "hm-10" in page
    settle_books()
    record = UsageRecord.objects.get(request_id=run.request_id)
    assert record.source == "playground" and record.user_id == alice.pk
    assert record.product == "embeddings" and record.model == "mira-embed"
    assert run.cost == record.cost > 0 and run.tokens == record.tokens_in > 0
    assert re.search(r'<nav id="emb-history" [^>]*hx-swap-oob="true"', page)
    assert f'href="{EMB}?run={run.pk}" aria-current="page"' in page


def test_the_vectors_download_as_json(alice_client, upstream_fleet):
    embed(alice_client)
    run = EmbeddingRun.objects.get()
    response = alice_client.get(f"{EMB}runs/{run.pk}/vectors.json")
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="embeddings-{run.pk}.json"'
    data = json.loads(response.content)
    assert data["model"] == "mira-embed" and data["dimensions"] == 1536
    assert [item["input"] for item in data["data"]] == INPUTS.split("\n")
    assert [item["embedding"] for item in data["data"]] == run.vectors


def test_a_run_reopens_with_its_heat_map_and_shows_as_code(alice_client, upstream_fleet):
    embed(alice_client)
    run = EmbeddingRun.objects.get()
    page = alice_client.get(f"{EMB}?run={run.pk}").content.decode()
    assert len(cells(page)) == 3
    assert "A cat was sitting on the mat" in page
    code = text_of(alice_client.get(f"{EMB}code/?run={run.pk}").content.decode())
    assert "/v1/embeddings" in code and "client.embeddings.create(" in code
    assert "$MIRA_API_KEY" in code


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input": "  \n \n"}, "Write at least one input, one per line."),
        ({"input": "\n".join(f"line {i}" for i in range(17))}, "Use at most 16 inputs"),
        ({"dimensions": "0"}, "Dimensions are between 1 and 3072"),
        ({"dimensions": "many"}, "Dimensions are a whole number"),
    ],
)
def test_a_bad_embeddings_form_says_what_is_wrong_and_costs_nothing(
    alice_client, upstream_fleet, fields, message
):
    response = embed(alice_client, **fields)
    assert response.status_code == 400
    assert message in text_of(response.content.decode())
    assert response["HX-Retarget"] == "#emb-form"
    assert not EmbeddingRun.objects.exists()
    settle_books()
    assert not UsageRecord.objects.exists()


def test_an_unknown_embedding_model_is_explained_beside_the_form(alice_client, upstream_fleet):
    response = embed(alice_client, model="no-such-model")
    page = text_of(response.content.decode())
    assert response.status_code == 200
    assert "The model rejected the request (400): Invalid model." in page
    assert not EmbeddingRun.objects.exists()


def test_a_response_is_metered_kept_and_shown_with_its_request_and_response(
    alice, alice_client, upstream_fleet
):
    response = send(alice_client, instructions="Be terse.")
    assert response.status_code == 200
    page = response.content.decode()
    run = ResponseRun.objects.get()
    assert run.request["input"] == "Explain recursion in one line."
    assert run.request["instructions"] == "Be terse." and run.request["model"] == "mira"
    assert run.request["max_output_tokens"] > 0
    assert run.response["object"] == "response" and run.response["status"] == "completed"
    text = run.response["output"][-1]["content"][0]["text"]
    assert text and text in text_of(page)
    assert run.response["id"] in page  # the response view
    assert "&quot;instructions&quot;: &quot;Be terse.&quot;" in page  # the request view
    settle_books()
    record = UsageRecord.objects.get(request_id=run.request_id)
    assert record.source == "playground" and record.user_id == alice.pk
    assert record.product == "responses"
    assert run.cost == record.cost > 0
    assert (run.tokens_in, run.tokens_out) == (record.tokens_in, record.tokens_out)
    assert re.search(r'<nav id="rsp-history" [^>]*hx-swap-oob="true"', page)


def test_the_form_comes_back_as_the_member_filled_it_in(alice_client, upstream_fleet):
    page = send(alice_client).content.decode()
    run = ResponseRun.objects.get()
    # The call was held for (and sent with) the default limit; the form stays blank.
    assert run.request["max_output_tokens"] > 0
    field = re.search(r'<input type="number" name="max_output_tokens"[^>]*>', page).group(0)
    assert "value=" not in field
    page = send(alice_client, max_output_tokens="64").content.decode()
    field = re.search(r'<input type="number" name="max_output_tokens"[^>]*>', page).group(0)
    assert 'value="64"' in field


def test_a_tool_call_is_shown_with_its_arguments(alice_client, upstream_fleet):
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    response = send(alice_client, input="Call get_weather for Paris", tools=json.dumps(tools))
    page = text_of(response.content.decode())
    run = ResponseRun.objects.get()
    calls = [item for item in run.response["output"] if item["type"] == "function_call"]
    assert calls and calls[0]["name"] == "get_weather"
    assert "Called get_weather" in page and '"city"' in page


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input": "  "}, "Write a prompt to send."),
        ({"max_output_tokens": "0"}, "Between 1 and"),
        ({"tools": "[{"}, "The tools are not JSON"),
        ({"tools": '[{"type": "web_search"}]'}, "Tool 1 is not a function tool"),
    ],
)
def test_a_bad_responses_form_says_what_is_wrong_and_costs_nothing(
    alice_client, upstream_fleet, fields, message
):
    response = send(alice_client, **fields)
    assert response.status_code == 400
    assert message in text_of(response.content.decode())
    assert not ResponseRun.objects.exists()
    settle_books()
    assert not UsageRecord.objects.exists()


def test_a_response_reopens_and_shows_as_code(alice_client, upstream_fleet):
    send(alice_client)
    run = ResponseRun.objects.get()
    page = alice_client.get(f"{RSP}?run={run.pk}").content.decode()
    assert "Explain recursion in one line." in page and run.response["id"] in page
    code = text_of(alice_client.get(f"{RSP}code/?run={run.pk}").content.decode())
    assert "client.responses.create(" in code and "/v1/responses" in code


def test_other_members_and_workspaces_see_nothing(
    alice_client, bob_client, charlie_client, upstream_fleet
):
    embed(alice_client)
    send(alice_client, input="A question about otters")
    emb, rsp = EmbeddingRun.objects.get(), ResponseRun.objects.get()
    for client in (bob_client, charlie_client):
        assert client.get(f"{EMB}?run={emb.pk}").status_code == 404
        assert client.get(f"{EMB}runs/{emb.pk}/vectors.json").status_code == 404
        assert client.get(f"{EMB}code/?run={emb.pk}").status_code == 404
        assert client.post(f"{EMB}runs/{emb.pk}/delete/", **HTMX).status_code == 404
        assert client.get(f"{RSP}?run={rsp.pk}").status_code == 404
        assert client.get(f"{RSP}code/?run={rsp.pk}").status_code == 404
        assert client.post(f"{RSP}runs/{rsp.pk}/delete/", **HTMX).status_code == 404
    assert "Stock prices fell" not in bob_client.get(EMB).content.decode()
    assert "otters" not in bob_client.get(RSP).content.decode()
    assert EmbeddingRun.objects.count() == ResponseRun.objects.count() == 1


def test_a_run_can_be_deleted_from_the_history(alice_client, upstream_fleet):
    send(alice_client)
    run = ResponseRun.objects.get()
    response = alice_client.post(f"{RSP}runs/{run.pk}/delete/", {"open": ""}, **HTMX)
    assert response.status_code == 200 and "No responses yet" in response.content.decode()
    assert not ResponseRun.objects.exists()


def test_the_forms_show_as_code_before_they_are_sent(alice_client, upstream_fleet):
    code = text_of(
        alice_client.post(EMB + "code/", {"input": INPUTS, "model": "mira-embed"}).content.decode()
    )
    assert "client.embeddings.create(" in code and "Stock prices fell sharply today" in code
    code = text_of(
        alice_client.post(RSP + "code/", {"input": "Hi there", "model": "mira"}).content.decode()
    )
    assert "client.responses.create(" in code and "Hi there" in code
    problem = text_of(alice_client.post(RSP + "code/", {"model": "mira"}).content.decode())
    assert "Fill in the form first: Write a prompt to send." in problem
    assert not EmbeddingRun.objects.exists() and not ResponseRun.objects.exists()
