"""Who may read the mirror: a node credential (``slmn_…``) or a personal API token (``slmf_…``).

The credential travels as ``Authorization: Bearer <key>``, never in a query string. Any role
may read. The mirror's views are plain Django views (the client speaks the Hub's protocol, not
DRF's), so they skip the console's sign-in redirect and check the credential here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from core.models import ApiToken
from core.services import authenticate_token
from fleet.models import NODE_CREDENTIAL_PREFIX
from fleet.services import authenticate_node
from models_catalog.mirror import protocol

View = Callable[..., HttpResponseBase]


def error_response(
    status: int, code: str | None, message: str, headers: dict[str, str] | None = None
) -> JsonResponse:
    extra, body = protocol.error(code, message)
    response = JsonResponse(body, status=status)
    for name, value in {**extra, **(headers or {})}.items():
        response[name] = value
    return response


def _refusal(message: str) -> JsonResponse:
    response = error_response(401, None, message)
    response["WWW-Authenticate"] = 'Bearer realm="fleet model mirror"'
    return response


def credential(header: str) -> str | JsonResponse:
    """The key of an ``Authorization`` header, or the 401 to answer (no database access)."""
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if not header:
        return _refusal(
            "The fleet model mirror needs a credential: send a node credential or a personal "
            "API token as 'Authorization: Bearer <key>' (HF_TOKEN or token=... in huggingface_hub)."
        )
    if scheme.lower() != "bearer" or not key or " " in key:
        return _refusal(protocol.INVALID_CREDENTIALS)
    return key


def principal(key: str) -> tuple[str, Any] | None:
    """``("node", node)`` or ``("token", token)`` for a key, or None when it is not valid."""
    if key.startswith(NODE_CREDENTIAL_PREFIX):
        node = authenticate_node(key)
        if node is not None:
            return "node", node
    elif key.startswith(ApiToken.KEY_PREFIX):
        token = authenticate_token(
            key, touch_after_seconds=settings.FLEET_TOKEN_LAST_USED_RESOLUTION
        )
        if token is not None:
            return "token", token
    return None


def invalid_credentials() -> JsonResponse:
    return _refusal(protocol.INVALID_CREDENTIALS)


def authenticate(request: HttpRequest) -> tuple[str, Any] | JsonResponse:
    """``("node", node)`` or ``("token", token)``, or the 401 to answer."""
    key = credential(request.headers.get("Authorization", ""))
    if isinstance(key, JsonResponse):
        return key
    return principal(key) or invalid_credentials()


def hub_view(methods: Collection[str]) -> Callable[[View], View]:
    """Credential first (every method, so nothing answers anonymously), then the method."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            who = authenticate(request)
            if isinstance(who, HttpResponse):
                return who
            if request.method not in methods:
                response = error_response(405, None, f"{request.method} is not allowed here.")
                response["Allow"] = ", ".join(methods)
                return response
            return view(request, *args, **kwargs)

        # Bearer credentials only, no cookies: CSRF cannot apply (paths-info is a POST).
        return csrf_exempt(login_not_required(wrapper))

    return decorate
