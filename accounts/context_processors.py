from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse

from accounts.models import Membership

# (url name, label, icon, permission, ready): the console's navigation, in order.
NAVIGATION = [
    ("dashboard", "Dashboard", "home", "dashboard.view", True),
    ("playground", "Playground", "playground", "playground.use", True),
    ("usage", "Usage", "usage", "usage.view", True),
    ("keys", "API keys", "key", "keys.view", True),
    ("billing", "Billing", "billing", "billing.view", True),
    ("members", "Members", "members", "members.view", True),
    ("settings", "Settings", "settings", "settings.manage", True),
]


def console(request: HttpRequest) -> dict:
    """What the console shell needs on every page: workspaces, navigation, upstream mode."""
    context: dict = {
        "upstream_is_simulator": settings.MIRA_SIMULATOR,
        "open_signup": settings.ACCOUNT_OPEN_SIGNUP,
    }
    membership = getattr(request, "membership", None)
    if membership is None and request.user.is_authenticated:
        # Pages outside a workspace (account settings, the fleet) keep the last one's navigation.
        mine = Membership.objects.select_related("workspace").filter(user=request.user)
        membership = (
            mine.filter(workspace_id=request.user.last_workspace_id).first()
            or mine.order_by("workspace__name").first()
        )
    if membership is not None:
        current = request.resolver_match.url_name if request.resolver_match else ""
        context["membership"] = membership
        context["workspace"] = membership.workspace
        context["nav"] = [
            {
                "url": reverse(name, kwargs={"slug": membership.workspace.slug}),
                "label": label,
                "icon": icon,
                "ready": ready,
                # A page under a section (the playground's products) keeps the section lit.
                "current": name == current or current.startswith(name + "_"),
            }
            for name, label, icon, permission, ready in NAVIGATION
            if membership.can(permission)
        ]
    if request.user.is_authenticated:
        context["my_memberships"] = (
            Membership.objects.filter(user=request.user)
            .select_related("workspace")
            .order_by("workspace__name")
        )
    return context
