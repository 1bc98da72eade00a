"""What the gateway serves, module by module: each lists its `OPERATIONS` (and the
`SCHEMAS` of its answers), from which the URLs and the OpenAPI document are built.
Adding a product is one line here."""

from django.urls import URLPattern, path

from gateway import (
    account,
    audio,
    catalog,
    chat,
    embeddings,
    extras,
    fetch,
    files,
    images,
    jobs,
    messages,
    realtime,
    responses,
    vision,
)

MODULES = (
    catalog, chat, responses, embeddings, messages, images, vision, audio, jobs, realtime, files,
    extras, fetch,
    account,
)  # fmt: skip


def urlpatterns() -> list[URLPattern]:
    """One URL per path (a path's methods share a view), as the version serves it."""
    routes: dict[str, URLPattern] = {}
    for module in MODULES:
        for op in module.OPERATIONS:
            route = op.path.removeprefix("/").replace("{", "<str:").replace("}", ">")
            routes.setdefault(route, path(route, op.view, name=op.name))
    return list(routes.values())
