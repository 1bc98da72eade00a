"""Roles and the one permission table that every console view checks.

A member's role in a workspace decides what they may do there. Views name the
permission they need (`@workspace_view("keys.view")`); nothing else decides access.
The README carries the same table for people.
"""

from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    DEVELOPER = "developer", "Developer"
    VIEWER = "viewer", "Viewer"


_ALL = frozenset(Role)
_BUILDERS = frozenset({Role.OWNER, Role.ADMIN, Role.DEVELOPER})
_MANAGERS = frozenset({Role.OWNER, Role.ADMIN})

# permission -> the roles that hold it
PERMISSIONS: dict[str, frozenset[Role]] = {
    "dashboard.view": _ALL,  # the workspace overview
    "usage.view": _ALL,  # usage and spend dashboards
    "billing.view": _ALL,  # balance, budgets, transactions
    "billing.manage": _MANAGERS,  # add credit, set budgets and limits
    "playground.use": _BUILDERS,  # make model calls from the browser
    "keys.view": _BUILDERS,  # see the Keys page
    "keys.manage_own": _BUILDERS,  # create, rotate and revoke one's own keys
    "keys.manage_all": _MANAGERS,  # manage every key in the workspace
    "members.view": _BUILDERS,  # see who is in the workspace
    "members.manage": _MANAGERS,  # invite, change roles, remove members
    "settings.manage": _MANAGERS,  # workspace settings: rename the workspace
}


def role_can(role: str, permission: str) -> bool:
    """Whether a role holds a permission. An unknown permission is a programming error."""
    return role in PERMISSIONS[permission]


def permission_table() -> list[tuple[str, list[bool]]]:
    """The table as rows of (permission, [held by owner, admin, developer, viewer])."""
    return [(perm, [role in roles for role in Role]) for perm, roles in PERMISSIONS.items()]
