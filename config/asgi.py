"""ASGI entry point: Django for HTTP, Channels for WebSockets (session auth, origin checked)."""

import gc
import os

from django.core.asgi import get_asgi_application

from config import process

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
process.ASGI_WEB = True  # before the settings load: this process pools its DB connections
django_asgi_app = get_asgi_application()  # before importing anything that touches models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from config.routing import websocket_urlpatterns  # noqa: E402
from deployments.asgi_reports import wrap as with_replica_reports  # noqa: E402
from fleet.asgi_fastpath import wrap as with_heartbeat_fastpath  # noqa: E402
from gateway.asgi_embed import lifespan as gateway_lifespan  # noqa: E402
from gateway.proxy import wrap as with_gateway  # noqa: E402
from models_catalog.mirror.asgi_fastpath import wrap as with_mirror_fastpath  # noqa: E402
from monitoring.asgi_fastpath import wrap as with_metrics_fastpath  # noqa: E402

# Everything imported so far lives as long as the process: keep it out of the cyclic
# garbage collector's full passes, which otherwise pause heartbeat ingestion for 70-180 ms
# every few seconds under load (bench/heartbeats.py).
gc.freeze()

application = ProtocolTypeRouter(
    {
        "http": with_gateway(
            with_metrics_fastpath(
                with_heartbeat_fastpath(with_replica_reports(with_mirror_fastpath(django_asgi_app)))
            )
        ),
        "lifespan": gateway_lifespan,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
