import os
import secrets

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import Membership, User, Workspace
from accounts.roles import Role
from console import ledger
from console.models import EntryKind, LedgerEntry

DEMO_EMAIL = "demo@example.com"
DEMO_SLUG = "demo"
DEMO_CREDIT = 25 * 1_000_000  # $25 to try things with


class Command(BaseCommand):
    help = "Create (or refresh) the demo workspace and its owner account, and print how to sign in."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        password = os.environ.get("DEMO_PASSWORD") or secrets.token_urlsafe(12)
        workspace, _ = Workspace.objects.get_or_create(slug=DEMO_SLUG, defaults={"name": "Demo"})
        user = User.objects.filter(email=DEMO_EMAIL).first()
        if user is None:
            user = User.objects.create_user(email=DEMO_EMAIL, name="Demo Owner")
        user.is_staff = True
        user.is_superuser = True
        user.is_active = True
        user.set_password(password)
        user.save()
        Membership.objects.update_or_create(
            user=user, workspace=workspace, defaults={"role": Role.OWNER}
        )
        if not LedgerEntry.objects.filter(workspace=workspace, kind=EntryKind.GRANT).exists():
            ledger.grant(workspace=workspace, amount=DEMO_CREDIT, note="Demo credit", by=None)

        self.stdout.write(
            self.style.SUCCESS("Demo workspace ready.")
            + f"\n  Sign in at http://127.0.0.1:8000/ as {DEMO_EMAIL}"
            + f"\n  Password: {password}\n"
        )
