"""A member's keys stop with their membership, however it ends.

The Members page removes people through `accounts.actions.remove_member`, which says who
did it; memberships deleted in other ways (in the Django admin, with a deleted account)
are caught as they are deleted. Either way it happens inside the deleting transaction.
"""

from django.db.models.signals import pre_delete
from django.dispatch import receiver

from accounts.models import Membership
from accounts.signals import member_removed, removal_preview
from console import actions


@receiver(removal_preview, sender=Membership)
def count_keys_that_stop(*, membership: Membership, **kwargs) -> dict[str, int]:
    return {"api_keys": actions.member_keys(membership).count()}


@receiver(member_removed, sender=Membership)
def stop_keys_of_removed_member(*, membership: Membership, by: Membership, **kwargs) -> None:
    reason = "member_left" if by.pk == membership.pk else "member_removed"
    actions.stop_member_keys(membership=membership, by=by.user, reason=reason)


@receiver(pre_delete, sender=Membership)
def stop_keys_of_deleted_membership(*, instance: Membership, **kwargs) -> None:
    actions.stop_member_keys(membership=instance, by=None, reason="membership_deleted")
