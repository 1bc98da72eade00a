"""`manage.py alias` adds, lists and deletes aliases with the Settings page's rules."""

import pytest
from django.core.management import CommandError, call_command

from console.models import AuditEvent, ModelAlias


def test_it_adds_lists_and_deletes_an_alias(acme, upstream_fleet, capsys):
    call_command("alias", "--workspace", "acme", "claude-*", "mira")
    assert ModelAlias.objects.get(workspace=acme).target == "mira"
    call_command("alias", "--workspace", "acme")
    assert "claude-* -> mira" in capsys.readouterr().out
    call_command("alias", "--workspace", "acme", "--delete", "claude-*")
    assert not ModelAlias.objects.exists()
    actions = AuditEvent.objects.filter(workspace=acme).values_list("action", flat=True)
    assert sorted(actions) == ["alias.added", "alias.deleted"]


@pytest.mark.parametrize(
    ("pattern", "target", "message"),
    [
        ("claude-*", "gpt-9", "target: “gpt-9” is not a model the fleet serves."),
        ("**", "mira", "pattern: A pattern of wildcards only"),
        ("mira", "mira-pro", "pattern: mira is a model of the fleet"),
    ],
)
def test_it_refuses_what_the_settings_page_refuses(acme, upstream_fleet, pattern, target, message):
    with pytest.raises(CommandError) as refused:
        call_command("alias", "--workspace", "acme", pattern, target)
    assert message in str(refused.value)
    assert not ModelAlias.objects.exists()
