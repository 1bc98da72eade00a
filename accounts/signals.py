"""What accounts tells the apps above it when a membership ends.

accounts imports no other app, yet a member who leaves takes their API keys (console)
and their open playground pages with them: those apps listen here, and to Django's own
model signals for memberships changed or deleted elsewhere (the Django admin, a deleted
account).
"""

from django.dispatch import Signal

# Asked while a removal (or a member leaving) is being confirmed, with `membership`.
# Each receiver answers with counts of what stops with it, e.g. {"api_keys": 2}, for the
# confirmation to say.
removal_preview = Signal()

# Sent inside the transaction that removes a member (or lets one leave), once the rules
# allowed it and before the membership is deleted, with `membership` and `by` (the
# membership of who removed them: the same one when they leave).
member_removed = Signal()


def what_stops(membership) -> dict[str, int]:
    """What stops when this membership ends, as the receivers of `removal_preview` say."""
    stops: dict[str, int] = {}
    for _receiver, answer in removal_preview.send(sender=type(membership), membership=membership):
        stops |= answer or {}
    return stops
