from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import URLPattern, include, path

from accounts import views as accounts_views
from console import billing_views, dashboards
from console import views as console_views
from gateway import aliases_page, fleet_page
from playground import embeddings as playground_embeddings
from playground import fetch as playground_fetch
from playground import images as playground_images
from playground import jobs as playground_jobs
from playground import realtime as playground_realtime
from playground import responses as playground_responses
from playground import tokens as playground_tokens
from playground import views as playground_views
from playground import vision as playground_vision
from playground import voice as playground_voice

# The admin signs in through allauth like every page, so that two-factor codes and the
# failed sign-in throttle apply; its own password form would pass both.
admin.site.login = secure_admin_login(admin.site.login)


def _under(prefix: str, module) -> list[URLPattern]:
    """A page module's own `urlpatterns`, under a prefix (flat, so that each keeps its name)."""
    return [path(prefix + str(p.pattern), p.callback, name=p.name) for p in module.urlpatterns]


workspace_patterns = [
    path("", console_views.dashboard, name="dashboard"),
    path("playground/", playground_views.playground, name="playground"),
    path("playground/code/", playground_views.view_code, name="playground_code"),
    path("playground/presets/save/", playground_views.preset_save, name="playground_preset_save"),
    path(
        "playground/presets/delete/",
        playground_views.preset_delete,
        name="playground_preset_delete",
    ),
    path(
        "playground/conversations/<int:pk>/delete/",
        playground_views.conversation_delete,
        name="playground_conversation_delete",
    ),
    path(
        "playground/images/<int:pk>/<int:index>/",
        playground_views.image,
        name="playground_image",
    ),
    *_under("playground/images/", playground_images),
    *_under("playground/vision/", playground_vision),
    *_under("playground/voice/", playground_voice),
    *_under("playground/realtime/", playground_realtime),
    *_under("playground/fetch/", playground_fetch),
    *_under("playground/", playground_jobs),
    *_under("playground/embeddings/", playground_embeddings),
    *_under("playground/responses/", playground_responses),
    path("playground/tokens/", playground_tokens.token_count, name="playground_tokens"),
    path("usage/", dashboards.usage, name="usage"),
    path("usage/export.csv", dashboards.usage_export, name="usage_export"),
    path("usage/<str:request_id>/", dashboards.usage_detail, name="usage_detail"),
    path("keys/", console_views.keys, name="keys"),
    path("keys/new/", console_views.key_create, name="key_create"),
    path("keys/disable/", console_views.key_disable, name="key_disable"),
    path("keys/enable/", console_views.key_enable, name="key_enable"),
    path("keys/revoke/", console_views.key_revoke, name="key_revoke"),
    path("keys/rotate/", console_views.key_rotate, name="key_rotate"),
    path("billing/", billing_views.billing, name="billing"),
    path("billing/credit/", billing_views.add_credit, name="billing_credit"),
    path("billing/budget/", billing_views.set_budget, name="billing_budget"),
    path("members/", accounts_views.members, name="members"),
    path("members/invite/", accounts_views.invite, name="member_invite"),
    path("members/<int:pk>/role/", accounts_views.member_role, name="member_role"),
    path("members/<int:pk>/remove/", accounts_views.member_remove, name="member_remove"),
    path(
        "invitations/<int:pk>/resend/", accounts_views.invitation_resend, name="invitation_resend"
    ),
    path(
        "invitations/<int:pk>/revoke/", accounts_views.invitation_revoke, name="invitation_revoke"
    ),
    path("leave/", accounts_views.leave, name="workspace_leave"),
    path("settings/", accounts_views.workspace_settings, name="settings"),
    path("settings/aliases/", aliases_page.alias_list, name="aliases"),
    path("settings/aliases/new/", aliases_page.alias_add, name="alias_add"),
    path("settings/aliases/<int:pk>/delete/", aliases_page.alias_delete, name="alias_delete"),
]

urlpatterns = [
    path("", accounts_views.home, name="home"),
    path("w/<slug:slug>/", include(workspace_patterns)),
    path("workspaces/new/", accounts_views.workspace_create, name="workspace_create"),
    path("fleet/", fleet_page.fleet, name="fleet"),
    path("invite/<str:token>/", accounts_views.invitation_accept, name="invitation_accept"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
]
