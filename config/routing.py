"""Websocket routes, collected from the apps that serve them."""

from django.urls import path

from playground.consumers import PlaygroundConsumer
from playground.job_centre import JobsConsumer
from playground.realtime import RealtimeConsumer
from playground.responses_socket import ResponsesConsumer

websocket_urlpatterns: list = [
    path("ws/playground/<slug:slug>/", PlaygroundConsumer.as_asgi()),
    path("ws/playground/<slug:slug>/realtime/", RealtimeConsumer.as_asgi()),
    path("ws/jobs/<slug:slug>/", JobsConsumer.as_asgi()),
    path("ws/playground/<slug:slug>/responses/", ResponsesConsumer.as_asgi()),
]
