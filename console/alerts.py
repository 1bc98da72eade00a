"""Budget alerts: once per threshold and month, by email to owners and admins and in the console."""

import logging

from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string

from accounts.models import Membership
from accounts.roles import Role
from console import ledger
from console.models import AlertSent, ApiKey, BillingAccount, MonthlySpend

logger = logging.getLogger(__name__)


def check(*, workspace_id: int, api_key_id: str | None) -> list[AlertSent]:
    """Record (and announce) every threshold that this month's spend has newly crossed."""
    month = ledger.month_of()
    account = BillingAccount.objects.filter(workspace_id=workspace_id).first()
    if account is None:
        return []
    thresholds = sorted(account.alert_thresholds or [])
    budgets: list[tuple[str | None, int | None]] = [(None, account.monthly_limit)]
    if api_key_id:
        budgets.append(
            (api_key_id, ApiKey.objects.values_list("monthly_budget", flat=True).get(pk=api_key_id))
        )
    sent = []
    for key_id, limit in budgets:
        if not limit:
            continue
        spent = (
            MonthlySpend.objects.filter(workspace_id=workspace_id, api_key_id=key_id, month=month)
            .values_list("spent", flat=True)
            .first()
            or 0
        )
        for threshold in thresholds:
            if spent * 100 < threshold * limit:
                break
            try:
                with transaction.atomic():
                    alert = AlertSent.objects.create(
                        workspace_id=workspace_id, api_key_id=key_id, month=month, threshold=threshold,
                        spent=spent, limit=limit,
                    )  # fmt: skip
            except IntegrityError:
                continue  # announced already this month
            sent.append(alert)
            transaction.on_commit(lambda alert=alert: _email(alert))
    return sent


def _email(alert: AlertSent) -> None:
    alert = AlertSent.objects.select_related("workspace", "api_key").get(pk=alert.pk)
    recipients = list(
        Membership.objects.filter(
            workspace=alert.workspace, role__in=[Role.OWNER, Role.ADMIN]
        ).values_list("user__email", flat=True)
    )
    if not recipients:
        return
    context = {
        "alert": alert,
        "what": f"the API key {alert.api_key.name}" if alert.api_key else "the workspace",
    }
    send_mail(
        subject=f"{alert.workspace.name}: {alert.threshold}% of the monthly budget used",
        message=render_to_string("console/email/budget_alert.txt", context),
        from_email=None,
        recipient_list=recipients,
    )
    logger.info("budget alert %s%% sent for workspace %s", alert.threshold, alert.workspace.slug)
