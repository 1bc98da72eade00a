from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.access import workspace_view

# What each page that is not built yet will hold, shown instead of a broken link.
COMING = {
    "playground": (
        "Playground",
        "Try every Mira product from the browser and see what each call costs.",
        [
            "Streaming chat with system prompt, parameters and image attachments",
            "Compare two or three models side by side",
            "View the exact request as curl, Python or JavaScript",
            "Saved conversations and shared prompts",
        ],
    ),
    "usage": (
        "Usage",
        "Requests, tokens, spend, errors and latency for the workspace.",
        [
            "Spend and requests per day, by model or product",
            "Filters by date, key, member, model and source",
            "A request log with a detail view per call, and CSV export",
        ],
    ),
    "keys": (
        "API keys",
        "Keys for programs that call the console's /v1 API with the OpenAI or Anthropic SDKs.",
        [
            "Scopes per product, model allow-lists, rate limits and monthly budgets",
            "One-time reveal, rotation with a grace period, revocation that takes effect at once",
            "An audit log of every key event",
        ],
    ),
    "billing": (
        "Billing",
        "The workspace balance, budgets and every transaction.",
        [
            "Credit balance and an append-only ledger",
            "Monthly budgets per key and per workspace, with alerts",
            "Spend this month per key and per member",
        ],
    ),
}


@workspace_view("dashboard.view")
def dashboard(request: HttpRequest) -> HttpResponse:
    workspace = request.workspace
    context = {
        "member_count": workspace.memberships.count(),
        "pending_invitations": workspace.invitations.pending().count(),
    }
    return render(request, "console/dashboard.html", context)


def _coming(request: HttpRequest, page: str) -> HttpResponse:
    title, lead, items = COMING[page]
    return render(request, "console/coming.html", {"title": title, "lead": lead, "items": items})


@workspace_view("playground.use")
def playground(request: HttpRequest) -> HttpResponse:
    return _coming(request, "playground")


@workspace_view("usage.view")
def usage(request: HttpRequest) -> HttpResponse:
    return _coming(request, "usage")


@workspace_view("keys.view")
def keys(request: HttpRequest) -> HttpResponse:
    return _coming(request, "keys")


@workspace_view("billing.view")
def billing(request: HttpRequest) -> HttpResponse:
    return _coming(request, "billing")
