"""The /v1 endpoints. Paths here are those of the version that serves them."""

from django.urls import path

from gateway import account, catalog, chat, embeddings, extras, messages, openapi, responses

urlpatterns = [
    path("v1/models", catalog.models, name="models"),
    path("v1/chat/completions", chat.chat_completions, name="chat_completions"),
    path("v1/responses", responses.responses, name="responses"),
    path("v1/embeddings", embeddings.embeddings, name="embeddings"),
    path("v1/messages", messages.messages, name="messages"),
    path("v1/messages/count_tokens", messages.count_message_tokens, name="messages_count_tokens"),
    path("v1/extras/token-count", extras.token_count, name="token_count"),
    path("v1/openapi.json", openapi.openapi, name="openapi"),
    path("v1/api-keys", account.api_keys, name="api_keys"),
    path("v1/api-keys/<str:key_id>", account.api_key, name="api_key"),
    path("v1/billing/balance", account.balance, name="billing_balance"),
    path("v1/billing/transactions", account.transactions, name="billing_transactions"),
    path("v1/usage", account.usage, name="usage"),
]
