"""The ASGI application: the /v1 API, the console over HTTP, and websockets through Channels."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from accounts.checks import require_secret_key  # noqa: E402
from config.routing import websocket_urlpatterns  # noqa: E402
from gateway import calllog, health  # noqa: E402
from gateway.asgi import GatewayHandler  # noqa: E402
from gateway.realtime import websocket_app as realtime_app  # noqa: E402
from gateway.versions import is_api_path  # noqa: E402

require_secret_key()
gateway_app = GatewayHandler()

from console import books  # noqa: E402
from gateway import job_runner  # noqa: E402

# Book and return what workers that died left, then write bookings in the background.
books.start()
# Poll and settle music and video jobs in the background (GATEWAY_JOB_RUNNER).
job_runner.start()
# Count and log finished calls off their path (and, with several workers, keep this
# one's booking figures fresh for the scrapes that the others answer).
calllog.start()


async def http_app(scope, receive, send) -> None:
    """API paths go to the gateway's lean handler, probes and scrapes to gateway.health,
    everything else to the console."""
    path = scope["path"]
    if path in health.PATHS:
        app = health.app
    else:
        app = gateway_app if is_api_path(path) else django_asgi_app
    await app(scope, receive, send)


console_websockets = AllowedHostsOriginValidator(
    AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
)


async def websocket_app(scope, receive, send) -> None:
    """API paths (`/v1/realtime`) authenticate with a key and check their own origin;
    the console's websockets take the signed-in session."""
    app = realtime_app if is_api_path(scope["path"]) else console_websockets
    await app(scope, receive, send)


application = ProtocolTypeRouter({"http": http_app, "websocket": websocket_app})


# What start-up loaded stays for the life of the process: moved out of the collector's
# way, so that collections (fewer, at a higher threshold) look only at what calls make.
gc.collect()
gc.freeze()
gc.set_threshold(10_000, 10, 10)
