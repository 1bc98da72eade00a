from django.core.management.base import BaseCommand, CommandError

from accounts.models import Workspace
from console.actions import create_key
from console.models import ADMIN_SCOPE, PRODUCT_SCOPES


class Command(BaseCommand):
    help = "Create an API key in a workspace and print its secret (and nothing else), for scripts."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--workspace", required=True, help="the workspace's slug")
        parser.add_argument("--name", required=True, help="a name to recognise the key by")
        parser.add_argument("--admin", action="store_true", help="also allow the account API")

    def handle(self, *args, workspace: str, name: str, admin: bool, **options) -> None:
        found = Workspace.objects.filter(slug=workspace).first()
        if found is None:
            raise CommandError(f"No workspace with the slug {workspace!r}.")
        scopes = [*PRODUCT_SCOPES, ADMIN_SCOPE] if admin else list(PRODUCT_SCOPES)
        _key, secret = create_key(workspace=found, name=name, created_by=None, scopes=scopes)
        self.stdout.write(secret)
