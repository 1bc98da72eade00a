"""`manage.py alias`: list, add or delete a workspace's model aliases, for scripts.

    manage.py alias --workspace demo                     # list them
    manage.py alias --workspace demo 'claude-*' mira     # claude-* is served by mira
    manage.py alias --workspace demo --delete 'claude-*'

The same rules as the Settings page: a pattern the page would refuse, or a model the
fleet does not serve, is refused with the page's message.
"""

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Workspace
from console import aliases
from console.models import ModelAlias
from gateway.aliases_page import AliasForm, fleet_model_ids


class Command(BaseCommand):
    help = "List, add or delete a workspace's model aliases."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--workspace", required=True, help="the workspace's slug")
        parser.add_argument("pattern", nargs="?", help="the model name clients ask for (or a glob)")
        parser.add_argument("target", nargs="?", help="the fleet's model that serves it")
        parser.add_argument("--delete", action="store_true", help="delete the pattern's alias")

    def handle(self, *args, workspace: str, pattern: str | None, target: str | None,
               delete: bool, **options) -> None:  # fmt: skip
        found = Workspace.objects.filter(slug=workspace).first()
        if found is None:
            raise CommandError(f"No workspace with the slug {workspace!r}.")
        if delete:
            alias = ModelAlias.objects.for_workspace(found).filter(pattern=pattern or "").first()
            if alias is None:
                raise CommandError(f"No alias for {pattern!r} in {workspace}.")
            aliases.delete_alias(alias=alias, by=None)
            return
        if pattern is None:
            for alias in ModelAlias.objects.for_workspace(found):
                self.stdout.write(f"{alias.pattern} -> {alias.target}")
            return
        models, unavailable = fleet_model_ids()
        if unavailable:
            raise CommandError(unavailable)
        form = AliasForm(
            data={"pattern": pattern, "target": target or ""}, workspace=found, models=models
        )
        if not form.is_valid():
            problems = [f"{field}: {' '.join(errors)}" for field, errors in form.errors.items()]
            raise CommandError("; ".join(problems))
        aliases.add_alias(workspace=found, by=None, **form.cleaned_data)
        self.stdout.write(f"{pattern} -> {target}")
