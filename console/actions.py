"""Operations on API keys; each one is written to the workspace's audit log."""

from datetime import datetime, timedelta

from django.db import transaction

from accounts.models import Membership, User, Workspace
from console import keys
from console.models import ApiKey, ApiKeyQuerySet, AuditEvent


def audit(
    *, workspace: Workspace, actor: User | None, action: str, key: ApiKey | None = None, **detail
) -> None:
    AuditEvent.objects.create(
        workspace=workspace, actor=actor, api_key=key, action=action, detail=detail
    )


@transaction.atomic
def create_key(
    *,
    workspace: Workspace,
    name: str,
    created_by: User | None,
    scopes: list[str] | None = None,
    allowed_models: list[str] | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    monthly_budget: int | None = None,
    expires_at: datetime | None = None,
    actor: User | None = None,
    created_by_key: ApiKey | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; the secret is returned here and nowhere else, ever.

    `actor` is who to record in the audit log when it is not the key's owner (an admin
    rotating a developer's key creates the new key on the developer's behalf).
    `created_by_key` is the key that asked for this one through the account API.
    """
    secret = keys.generate_secret()
    key = ApiKey(
        workspace=workspace,
        created_by=created_by,
        created_by_key=created_by_key,
        name=name,
        prefix=keys.display_prefix(secret),
        last_four=secret[-4:],
        key_hash=keys.hash_secret(secret),
        allowed_models=allowed_models or [],
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        monthly_budget=monthly_budget,
        expires_at=expires_at,
    )
    if scopes is not None:
        key.scopes = scopes
    key.save()
    detail = {"by_key": str(created_by_key.pk)} if created_by_key else {}
    audit(
        workspace=workspace,
        actor=actor or created_by,
        action="key.created",
        key=key,
        name=name,
        **detail,
    )
    return key, secret


@transaction.atomic
def rotate_key(*, key: ApiKey, by: User | None, grace: timedelta) -> tuple[ApiKey, str]:
    """A new secret with the same settings; the old one keeps working for `grace`."""
    new_key, secret = create_key(
        workspace=key.workspace,
        name=key.name,
        created_by=key.created_by,
        scopes=list(key.scopes),
        allowed_models=list(key.allowed_models),
        rpm_limit=key.rpm_limit,
        tpm_limit=key.tpm_limit,
        monthly_budget=key.monthly_budget,
        expires_at=key.expires_at,
        actor=by,
        created_by_key=key.created_by_key,
    )
    key.replaced_by = new_key
    key.save(update_fields=["replaced_by"])
    if grace <= timedelta(0):
        key.revoke()
    else:
        key.expire_in(grace)
    audit(
        workspace=key.workspace,
        actor=by,
        action="key.rotated",
        key=key,
        new_key=str(new_key.id),
        grace_seconds=int(grace.total_seconds()),
    )
    return new_key, secret


def revoke_key(*, key: ApiKey, by: User | None) -> None:
    key.revoke()
    audit(workspace=key.workspace, actor=by, action="key.revoked", key=key)


def disable_key(*, key: ApiKey, by: User | None) -> None:
    key.disable()
    audit(workspace=key.workspace, actor=by, action="key.disabled", key=key)


def enable_key(*, key: ApiKey, by: User | None) -> None:
    key.enable()
    audit(workspace=key.workspace, actor=by, action="key.enabled", key=key)


# ---------- when a member leaves ----------


def member_keys(membership: Membership) -> ApiKeyQuerySet:
    """The keys a member created in the workspace that work, or could work again."""
    return (
        ApiKey.objects.for_workspace(membership.workspace_id)
        .live()
        .filter(created_by_id=membership.user_id)
    )


@transaction.atomic
def stop_member_keys(*, membership: Membership, by: User | None, reason: str) -> int:
    """Revoke every key a member created in the workspace, each one audited with why;
    returns how many stopped. Called as the membership ends (console.receivers)."""
    stopped = list(member_keys(membership).select_for_update())
    for key in stopped:
        key.revoke()
        audit(
            workspace=membership.workspace,
            actor=by,
            action="key.revoked",
            key=key,
            reason=reason,
            member=membership.user.email,
        )
    return len(stopped)
