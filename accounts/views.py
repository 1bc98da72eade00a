from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from accounts import actions, signals
from accounts.access import workspace_view
from accounts.forms import AcceptAsNewUserForm, InviteForm, RoleForm, WorkspaceForm
from accounts.models import Invitation, Membership, User
from accounts.roles import Role


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Send a signed-in person to the workspace they used last, or to their first one."""
    memberships = Membership.objects.filter(user=request.user).select_related("workspace")
    last = (
        memberships.filter(workspace_id=request.user.last_workspace_id).first()
        or memberships.first()
    )
    if last is None:
        return redirect("workspace_create")
    return redirect("dashboard", slug=last.workspace.slug)


@login_required
def workspace_create(request: HttpRequest) -> HttpResponse:
    form = WorkspaceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        workspace = actions.create_workspace(name=form.cleaned_data["name"], owner=request.user)
        messages.success(request, f"Workspace {workspace.name} is ready.")
        return redirect("dashboard", slug=workspace.slug)
    has_workspace = Membership.objects.filter(user=request.user).exists()
    return render(
        request, "accounts/workspace_create.html", {"form": form, "has_workspace": has_workspace}
    )


# ---------- members ----------


def _get_membership_in_workspace(request: HttpRequest, pk: int) -> Membership:
    return get_object_or_404(
        Membership.objects.select_related("user", "workspace"), pk=pk, workspace=request.workspace
    )


def _get_invitation_in_workspace(request: HttpRequest, pk: int) -> Invitation:
    return get_object_or_404(
        Invitation.objects.select_related("workspace"), pk=pk, workspace=request.workspace
    )


def _members_context(request: HttpRequest, invite_form: InviteForm | None = None) -> dict:
    workspace = request.workspace
    can_manage = request.membership.can("members.manage")
    return {
        "members": workspace.memberships.select_related("user").order_by("user__email"),
        "invitations": workspace.invitations.pending().select_related("invited_by"),
        "can_manage": can_manage,
        "invitation_days": settings.INVITATION_DAYS,
        "invite_form": invite_form
        or (InviteForm(workspace=workspace, inviter=request.membership) if can_manage else None),
        "role_choices": [
            c for c in Role.choices if request.membership.role == Role.OWNER or c[0] != Role.OWNER
        ],
    }


@workspace_view("members.view")
def members(request: HttpRequest) -> HttpResponse:
    return render(request, "accounts/members.html", _members_context(request))


def _accept_url(request: HttpRequest, token: str) -> str:
    return request.build_absolute_uri(reverse("invitation_accept", args=[token]))


@workspace_view("members.manage")
@require_POST
def invite(request: HttpRequest) -> HttpResponse:
    form = InviteForm(request.POST, workspace=request.workspace, inviter=request.membership)
    notice = None
    if form.is_valid():
        try:
            invitation, token = actions.invite(
                workspace=request.workspace,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                by=request.membership,
            )
        except actions.MembershipError as exc:
            form.add_error("role", str(exc))
        else:
            actions.send_invitation(
                invitation=invitation, token=token, accept_url=_accept_url(request, token)
            )
            notice = f"Invitation sent to {invitation.email}."
            form = None
    if not request.htmx:
        if notice:
            messages.success(request, notice)
            return redirect("members", slug=request.workspace.slug)
        return render(request, "accounts/members.html", _members_context(request, form), status=400)
    context = _members_context(request, form) | {"notice": notice}
    return render(
        request, "accounts/members.html#invitations", context, status=200 if notice else 400
    )


@workspace_view("members.manage")
@require_POST
def invitation_resend(request: HttpRequest, pk: int) -> HttpResponse:
    invitation = _get_invitation_in_workspace(request, pk)
    notice = error = None
    try:
        token = actions.renew_invitation(invitation=invitation)
    except actions.MembershipError as exc:
        error = str(exc)
    else:
        actions.send_invitation(
            invitation=invitation, token=token, accept_url=_accept_url(request, token)
        )
        notice = f"Invitation sent again to {invitation.email}."
    return _invitations_response(request, notice=notice, error=error)


@workspace_view("members.manage")
@require_POST
def invitation_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    invitation = _get_invitation_in_workspace(request, pk)
    invitation.revoke()
    return _invitations_response(request, notice=f"Invitation for {invitation.email} revoked.")


def _invitations_response(
    request: HttpRequest, *, notice: str | None = None, error: str | None = None
):
    if not request.htmx:
        if notice:
            messages.success(request, notice)
        if error:
            messages.error(request, error)
        return redirect("members", slug=request.workspace.slug)
    context = _members_context(request) | {"notice": notice, "error": error}
    return render(
        request, "accounts/members.html#invitations", context, status=400 if error else 200
    )


@workspace_view("members.manage")
@require_POST
def member_role(request: HttpRequest, pk: int) -> HttpResponse:
    target = _get_membership_in_workspace(request, pk)
    form = RoleForm(request.POST)
    error = None
    if not form.is_valid():
        error = "Choose one of the roles: owner, admin, developer or viewer."
    else:
        try:
            target = actions.change_role(
                membership=target, role=form.cleaned_data["role"], by=request.membership
            )
        except actions.MembershipError as exc:
            error = str(exc)
            target.refresh_from_db()
    if target.pk == request.membership.pk and not error:
        request.membership.refresh_from_db()
        if not request.membership.can("members.manage"):
            # They just gave away their own right to manage members.
            if request.htmx:
                return HttpResponseClientRedirect(reverse("members", args=[request.workspace.slug]))
            return redirect("members", slug=request.workspace.slug)
    if not request.htmx:
        if error:
            messages.error(request, error)
        else:
            messages.success(
                request, f"{target.user.email} is now {target.get_role_display().lower()}."
            )
        return redirect("members", slug=request.workspace.slug)
    notice = None if error else f"Role saved: {target.get_role_display().lower()}."
    context = _members_context(request) | {"m": target, "row_error": error, "row_notice": notice}
    return render(
        request, "accounts/members.html#member-row", context, status=400 if error else 200
    )


def _removal_page(
    request: HttpRequest, target: Membership, *, error: str | None = None
) -> HttpResponse:
    """The confirmation before a member is removed or leaves: it says what stops with them."""
    context = {
        "target": target,
        "leaving": target.pk == request.membership.pk,
        "stops": signals.what_stops(target),
        "error": error,
    }
    return render(request, "accounts/member_remove.html", context, status=400 if error else 200)


def _remove(request: HttpRequest, target: Membership) -> HttpResponse:
    try:
        actions.remove_member(membership=target, by=request.membership)
    except actions.MembershipError as exc:
        return _removal_page(request, target, error=str(exc))
    if target.pk == request.membership.pk:
        messages.success(request, f"You left {request.workspace.name}.")
        return redirect("home")
    messages.success(request, f"{target.user.email} was removed from {request.workspace.name}.")
    return redirect("members", slug=request.workspace.slug)


@workspace_view("members.manage")
@require_http_methods(["GET", "POST"])
def member_remove(request: HttpRequest, pk: int) -> HttpResponse:
    target = _get_membership_in_workspace(request, pk)
    if request.method == "POST":
        return _remove(request, target)
    return _removal_page(request, target)


@workspace_view("dashboard.view")
@require_http_methods(["GET", "POST"])
def leave(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _remove(request, request.membership)
    return _removal_page(request, request.membership)


# ---------- settings ----------


@workspace_view("settings.manage")
def workspace_settings(request: HttpRequest) -> HttpResponse:
    form = WorkspaceForm(request.POST or None, instance=request.workspace)
    if request.method == "POST":
        if form.is_valid():
            form.save()
            messages.success(request, "Workspace renamed.")
            return redirect("settings", slug=request.workspace.slug)
    return render(request, "accounts/settings.html", {"form": form})


# ---------- accepting an invitation ----------


def invitation_accept(request: HttpRequest, token: str) -> HttpResponse:
    invitation = Invitation.find(token)
    if invitation is None or not invitation.is_usable:
        status = invitation.status if invitation else "unknown"
        return render(
            request,
            "accounts/invitation_invalid.html",
            {"status": status},
            status=404 if status == "unknown" else 410,
        )

    existing = User.objects.filter(email__iexact=invitation.email).first()
    context = {"invitation": invitation, "existing": existing, "token": token}

    if request.user.is_authenticated:
        if request.user.email.lower() != invitation.email.lower():
            return render(
                request,
                "accounts/invitation_accept.html",
                context | {"wrong_user": True},
                status=403,
            )
        if request.method == "POST":
            invitation.accept(request.user)
            messages.success(request, f"Welcome to {invitation.workspace.name}.")
            return redirect("dashboard", slug=invitation.workspace.slug)
        return render(request, "accounts/invitation_accept.html", context)

    if existing is not None:
        login_url = f"{reverse('account_login')}?next={reverse('invitation_accept', args=[token])}"
        return render(
            request, "accounts/invitation_accept.html", context | {"login_url": login_url}
        )

    form = AcceptAsNewUserForm(request.POST or None, email=invitation.email)
    if request.method == "POST" and form.is_valid():
        user = User.objects.create_user(
            email=invitation.email,
            password=form.cleaned_data["password1"],
            name=form.cleaned_data["name"],
        )
        invitation.accept(user)
        login(request, user, backend=settings.AUTHENTICATION_BACKENDS[0])
        messages.success(request, f"Welcome to {invitation.workspace.name}.")
        return redirect("dashboard", slug=invitation.workspace.slug)
    return render(
        request,
        "accounts/invitation_accept.html",
        context | {"form": form},
        status=400 if form.errors else 200,
    )
