from allauth.account.adapter import DefaultAccountAdapter
from django.conf import settings
from django.http import HttpRequest


class AccountAdapter(DefaultAccountAdapter):
    """People join by invitation; open sign-up only when ACCOUNT_OPEN_SIGNUP is set."""

    def is_open_for_signup(self, request: HttpRequest) -> bool:
        return settings.ACCOUNT_OPEN_SIGNUP
