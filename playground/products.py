"""The playground's products, each a page with its own URL, in the order the tab strip shows them:
the text tools, then the media.

A product appears here once its page exists.
"""

from django.http import HttpRequest
from django.urls import reverse

# (url name, label, icon)
PRODUCTS = [
    ("playground", "Chat", "chat"),
    ("playground_responses", "Responses", "bolt"),
    ("playground_embeddings", "Embeddings", "grid"),
    ("playground_fetch", "Fetch", "link"),
    ("playground_images", "Images", "image"),
    ("playground_vision", "Vision", "eye"),
    ("playground_voice", "Voice", "voice"),
    ("playground_realtime", "Realtime", "mic"),
    ("playground_music", "Music", "music"),
    ("playground_video", "Video", "video"),
]


def tabs(request: HttpRequest, current: str) -> list[dict]:
    """The tab strip of a playground page; `current` is the url name of the page shown."""
    slug = request.workspace.slug
    return [
        {
            "url": reverse(name, kwargs={"slug": slug}),
            "label": label,
            "icon": icon,
            "current": name == current,
        }
        for name, label, icon in PRODUCTS
    ]
