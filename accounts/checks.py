"""Start-up checks: the console does not run without a real secret key.

The secret signs sessions, CSRF tokens and password-reset links. Settings do not refuse
a missing one themselves, so that commands which sign nothing (`manage.py simulator`)
run without it; the console refuses instead where it starts: in the system checks that
`check`, `migrate` and `runserver` run, and when the ASGI application is loaded.
"""

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

NO_SECRET_KEY = (
    "SECRET_KEY must be set to a long random value when DEBUG is off "
    "(set DEBUG=true for local development)."
)


def _secret_key_missing() -> bool:
    try:
        secret = settings.SECRET_KEY
    except ImproperlyConfigured:  # Django will not read an empty one
        return True
    # A development key (Django's prefix for keys not meant for production) only in development.
    return secret.startswith("django-insecure") and not (settings.DEBUG or settings.TESTING)


@checks.register(checks.Tags.security)
def secret_key_is_set(app_configs, **kwargs) -> list[checks.CheckMessage]:
    return [checks.Error(NO_SECRET_KEY, id="accounts.E001")] if _secret_key_missing() else []


def require_secret_key() -> None:
    """Refuse to serve the console without a real secret key."""
    if _secret_key_missing():
        raise ImproperlyConfigured(NO_SECRET_KEY)
