"""Who may scrape: the scrape token, a personal API token or session, or a trusted network.

* ``FLEET_PROMETHEUS_TOKEN``: Prometheus sends ``Authorization: Bearer <token>``
  (``authorization: {credentials_file: ...}`` in its scrape config); compared in constant time.
* A personal API token (read scope is enough) or a signed-in session of any role (viewer up).
* ``FLEET_PROMETHEUS_ALLOWED_NETWORKS``: requests whose peer address (``REMOTE_ADDR``; a
  forwarded-for header is not trusted) is in one of these CIDR networks need no credential.

Anything else gets 401 (no or wrong credential) or 403 (a user without a role).
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any, cast

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication
from rest_framework.request import Request
from rest_framework.settings import api_settings

from core.permissions import RolePermission

# request.auth for the configured scrape token (a marker, not a secret)
SCRAPE_TOKEN = "prometheus-scrape-token"  # noqa: S105


class ScrapeTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <FLEET_PROMETHEUS_TOKEN>``; other bearer tokens go on to the
    personal API token check."""

    def authenticate(self, request: Request) -> tuple[Any, str] | None:
        expected = settings.FLEET_PROMETHEUS_TOKEN
        if not expected:
            return None
        parts = authentication.get_authorization_header(request).decode("latin-1").split()
        if len(parts) != 2 or parts[0].lower() != "bearer":
            return None
        if hmac.compare_digest(parts[1].encode(), str(expected).encode()):
            return AnonymousUser(), SCRAPE_TOKEN
        return None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="prometheus"'


class ScrapeTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "monitoring.prometheus.access.ScrapeTokenAuthentication"
    name = "prometheusScrapeToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The scrape token configured as FLEET_PROMETHEUS_TOKEN",
        }


def from_allowed_network(request: Any) -> bool:
    address = request.META.get("REMOTE_ADDR", "")
    networks = settings.FLEET_PROMETHEUS_ALLOWED_NETWORKS
    if not networks or not address:
        return False
    try:
        peer = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(peer in ipaddress.ip_network(network) for network in networks)


class ScrapePermission(RolePermission):
    """The scrape token, a trusted network, or a signed-in user of viewer role or more."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.auth == SCRAPE_TOKEN or from_allowed_network(request):
            return True
        return super().has_permission(request, view)


AUTHENTICATION: list[type[authentication.BaseAuthentication]] = [
    ScrapeTokenAuthentication,
    *cast(
        list[type[authentication.BaseAuthentication]], api_settings.DEFAULT_AUTHENTICATION_CLASSES
    ),
]
