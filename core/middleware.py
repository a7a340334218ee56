"""Request id, log correlation, and the console's login requirement."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib.auth.middleware import LoginRequiredMiddleware as DjangoLoginRequired
from django.http import HttpRequest, HttpResponse
from rest_framework.views import APIView

from core.logs import request_id_var

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestContextMiddleware:
    """Give every request an id (from ``X-Request-ID`` when sane) and echo it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response


class LoginRequiredMiddleware(DjangoLoginRequired):
    """Pages need a signed-in user; API views authenticate themselves.

    DRF views run their own authentication (bearer tokens or the session) and answer 401/403
    as JSON, so they are left to DRF. A DRF view that is really a page for people (the API
    docs) sets ``login_redirect = True`` to get the sign-in redirect instead.
    """

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: Any,
        view_kwargs: Any,
    ) -> HttpResponse | None:
        view_class = getattr(view_func, "cls", None) or getattr(view_func, "view_class", None)
        if isinstance(view_class, type) and issubclass(view_class, APIView):
            if not getattr(view_class, "login_redirect", False):
                return None
            # DRF marks its views login_required=False, so decide here for people's pages.
            if request.user.is_authenticated:
                return None
            response = self.handle_no_permission(request, view_func)
            return response  # type: ignore[return-value]
        result = super().process_view(request, view_func, view_args, view_kwargs)
        return result  # type: ignore[return-value]
