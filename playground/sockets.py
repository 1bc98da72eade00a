"""Closing playground sockets when their browser signs out or their member loses access.

Each playground socket joins two channel-layer groups: its browser's session, closed with
4401 when that session signs out, and its member in its workspace, closed with 4403 when
they are removed, leave, or are given a role without `playground.use` (however that
happens: the Members page, the Django admin, a deleted account). With REDIS_URL set the
layer is Redis, so the close reaches the socket on whichever worker holds it. It is sent
once the change is committed; the consumer stops its replies, which book as they end.
"""

import hashlib
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accounts.models import Membership

logger = logging.getLogger(__name__)

SIGNED_OUT = 4401
NOT_ALLOWED = 4403


def session_group(session_key: str) -> str:
    # Hashed: group names are Redis keys, and a session key is as good as a password.
    return "playground.session." + hashlib.sha256(session_key.encode()).hexdigest()[:32]


def member_group(*, user_id: int, workspace_id: int) -> str:
    return f"playground.member.{user_id}.{workspace_id}"


def close(group: str, *, code: int) -> None:
    """Close every playground socket in `group` once the current transaction commits."""

    def send() -> None:
        try:
            async_to_sync(get_channel_layer().group_send)(
                group, {"type": "playground.close", "code": code}
            )
        except Exception:
            # The change itself stands; a socket left open still checks the membership
            # before each call.
            logger.exception("could not close playground sockets")

    transaction.on_commit(send)


@receiver(user_logged_out)
def close_on_sign_out(*, request, **kwargs) -> None:
    session_key = request.session.session_key if request is not None else None
    if session_key:
        close(session_group(session_key), code=SIGNED_OUT)


@receiver(post_delete, sender=Membership)
def close_on_removal(*, instance: Membership, **kwargs) -> None:
    close(
        member_group(user_id=instance.user_id, workspace_id=instance.workspace_id),
        code=NOT_ALLOWED,
    )


@receiver(post_save, sender=Membership)
def close_on_role_change(*, instance: Membership, created: bool, **kwargs) -> None:
    if not created and not instance.can("playground.use"):
        close(
            member_group(user_id=instance.user_id, workspace_id=instance.workspace_id),
            code=NOT_ALLOWED,
        )
