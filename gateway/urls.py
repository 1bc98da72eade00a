"""The /v1 endpoints. Paths here are those of the version that serves them."""

from django.urls import path

from gateway import catalog, chat, embeddings, extras, messages, openapi, responses

urlpatterns = [
    path("v1/models", catalog.models, name="models"),
    path("v1/chat/completions", chat.chat_completions, name="chat_completions"),
    path("v1/responses", responses.responses, name="responses"),
    path("v1/embeddings", embeddings.embeddings, name="embeddings"),
    path("v1/messages", messages.messages, name="messages"),
    path("v1/messages/count_tokens", messages.count_message_tokens, name="messages_count_tokens"),
    path("v1/extras/token-count", extras.token_count, name="token_count"),
    path("v1/openapi.json", openapi.openapi, name="openapi"),
]
