"""Operations on workspaces and their members, with the rules that guard them."""

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string
from django.utils.text import slugify

from accounts.models import Invitation, Membership, User, Workspace
from accounts.roles import Role
from accounts.signals import member_removed

logger = logging.getLogger(__name__)


class MembershipError(Exception):
    """A membership change that the rules forbid; the message is shown to the person."""


def create_workspace(*, name: str, owner: User) -> Workspace:
    base = slugify(name)[:40] or "workspace"
    slug, n = base, 1
    while Workspace.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    with transaction.atomic():
        workspace = Workspace.objects.create(name=name, slug=slug)
        Membership.objects.create(user=owner, workspace=workspace, role=Role.OWNER)
    return workspace


def send_invitation(*, invitation: Invitation, token: str, accept_url: str) -> None:
    context = {"invitation": invitation, "accept_url": accept_url, "days": settings.INVITATION_DAYS}
    send_mail(
        subject=f"You are invited to {invitation.workspace.name} on Mira Console",
        message=render_to_string("accounts/email/invitation.txt", context),
        from_email=None,
        recipient_list=[invitation.email],
    )
    logger.info("invitation %s sent for workspace %s", invitation.pk, invitation.workspace.slug)


def invite(
    *, workspace: Workspace, email: str, role: str, by: Membership
) -> tuple[Invitation, str]:
    """Create (or renew) the pending invitation for an email; returns it with its new token."""
    if role == Role.OWNER and by.role != Role.OWNER:
        raise MembershipError("Only an owner can invite another owner.")
    invitation = (
        Invitation.objects.pending().filter(workspace=workspace, email__iexact=email).first()
    )
    if invitation is None:
        invitation = Invitation(workspace=workspace, email=email)
    invitation.role = role
    invitation.invited_by = by.user
    token = invitation.new_token()
    invitation.save()
    return invitation, token


def renew_invitation(*, invitation: Invitation) -> str:
    if invitation.status in ("accepted", "revoked"):
        raise MembershipError(f"This invitation was {invitation.status} and cannot be sent again.")
    token = invitation.new_token()
    invitation.save(update_fields=["token_hash", "sent_at", "expires_at"])
    return token


def _check_can_change(target: Membership, by: Membership) -> None:
    if target.role == Role.OWNER and by.role != Role.OWNER:
        raise MembershipError("Only an owner can change another owner.")


@transaction.atomic
def change_role(*, membership: Membership, role: str, by: Membership) -> Membership:
    membership = (
        Membership.objects.select_for_update()
        .select_related("workspace", "user")
        .get(pk=membership.pk)
    )
    _check_can_change(membership, by)
    if role == Role.OWNER and by.role != Role.OWNER:
        raise MembershipError("Only an owner can make someone an owner.")
    if (
        membership.role == Role.OWNER
        and role != Role.OWNER
        and _owner_count_locked(membership.workspace) == 1
    ):
        raise MembershipError("A workspace needs an owner: make someone else an owner first.")
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def remove_member(*, membership: Membership, by: Membership) -> None:
    """Remove a member, or let one leave (`by` is then the same membership); the apps that
    hold something of theirs in the workspace stop it through `member_removed`."""
    membership = (
        Membership.objects.select_for_update()
        .select_related("workspace", "user")
        .get(pk=membership.pk)
    )
    if membership.pk != by.pk:
        _check_can_change(membership, by)
    if membership.role == Role.OWNER and _owner_count_locked(membership.workspace) == 1:
        if membership.pk == by.pk:
            raise MembershipError(
                "You are the last owner: make someone else an owner before you leave."
            )
        raise MembershipError("A workspace needs an owner: the last owner cannot be removed.")
    # The row stays locked until the end of the transaction: what the receivers stop
    # (the member's keys) cannot gain anything meanwhile.
    member_removed.send(sender=Membership, membership=membership, by=by)
    membership.delete()


def _owner_count_locked(workspace: Workspace) -> int:
    return len(
        Membership.objects.select_for_update()
        .filter(workspace=workspace, role=Role.OWNER)
        .values_list("pk", flat=True)
    )
