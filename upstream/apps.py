from django.apps import AppConfig


class UpstreamConfig(AppConfig):
    """Only here so that `manage.py simulator` is found; the package imports no Django app."""

    name = "upstream"
    verbose_name = "Upstream"
