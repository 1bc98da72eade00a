"""The /v1 endpoints. Paths here are those of the version that serves them."""

from django.urls import path

from gateway import openapi, products

urlpatterns = [
    *products.urlpatterns(),
    path("v1/openapi.json", openapi.openapi, name="openapi"),
]
