"""The one mechanism that decides who may open a console page.

Every workspace page is declared with `@workspace_view("permission")`. The decorator
signs the visitor in if needed, finds their membership in the workspace named by the
URL (404 when they have none, so a stranger cannot even learn that it exists), checks
the permission from `accounts.roles.PERMISSIONS` (403 when the role lacks it), and
puts `request.workspace` and `request.membership` on the request.
"""

from collections.abc import Callable
from functools import wraps
from inspect import iscoroutinefunction

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest

from accounts.models import Membership
from accounts.roles import PERMISSIONS


def membership_for(request: HttpRequest, slug: str, permission: str) -> Membership:
    """The signed-in user's membership in the workspace `slug`, checked for `permission`."""
    membership = (
        Membership.objects.select_related("workspace", "user")
        .filter(user=request.user, workspace__slug=slug)
        .first()
    )
    if membership is None:
        raise Http404("No such workspace.")
    if not membership.can(permission):
        role = membership.get_role_display()
        raise PermissionDenied(f"Your role ({role}) does not allow this in {membership.workspace}.")
    request.workspace = membership.workspace
    request.membership = membership
    user = request.user
    if user.last_workspace_id != membership.workspace_id:
        user.last_workspace = membership.workspace
        user.save(update_fields=["last_workspace"])
    return membership


def workspace_view(permission: str) -> Callable:
    """Guard a view whose URL carries the workspace slug with a permission from the table."""
    if permission not in PERMISSIONS:
        raise ValueError(f"Unknown permission {permission!r}")

    def decorator(view: Callable) -> Callable:
        if iscoroutinefunction(view):

            @wraps(view)
            async def async_wrapper(request: HttpRequest, slug: str, *args, **kwargs):
                await sync_to_async(membership_for)(request, slug, permission)
                return await view(request, *args, **kwargs)

            async_wrapper.required_permission = permission
            return login_required(async_wrapper)

        @wraps(view)
        def wrapper(request: HttpRequest, slug: str, *args, **kwargs):
            membership_for(request, slug, permission)
            return view(request, *args, **kwargs)

        wrapper.required_permission = permission
        return login_required(wrapper)

    return decorator
