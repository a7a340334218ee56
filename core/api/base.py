"""The project's base for API viewsets: ETag / If-Match, reasons, service errors."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from core.change_context import ChangeContext
from core.errors import PreconditionFailed

_ETAG = re.compile(r'^(?:W/)?"(\d+)"$')


class ReasonField(serializers.CharField):
    """An optional reason for a change; ends up on the history event."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_blank", True)
        kwargs.setdefault("write_only", True)
        kwargs.setdefault("max_length", 1000)
        kwargs.setdefault(
            "help_text", "Why this change is made (also accepted as X-Change-Reason)."
        )
        super().__init__(**kwargs)


@extend_schema_field(
    {
        "anyOf": [{"type": "string", "format": "email"}, {"type": "string", "maxLength": 0}],
        "description": "An email address, or blank when none is set.",
    }
)
class OptionalEmailField(serializers.EmailField):
    """An email address that may be blank (and is blank for users who never gave one)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_blank", True)
        kwargs.setdefault("max_length", 254)
        super().__init__(**kwargs)


def expected_version(request: Request) -> int | None:
    """The version named by If-Match: None when absent or ``*``; 412 when unreadable."""
    header = request.headers.get("If-Match", "").strip()
    if not header or header == "*":
        return None
    match = _ETAG.match(header)
    if match is None:
        raise PreconditionFailed(
            f'If-Match {header!r} is not a version this API sent; send the ETag value, e.g. "3".'
        )
    return int(match.group(1))


def validated_data(serializer_class: Any, request: Request) -> dict[str, Any]:
    """The request body checked by ``serializer_class`` (400 with per-field errors if not)."""
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class FleetViewSetMixin:
    """Adds ETag on single-object answers and builds change contexts from requests."""

    def validated(self, serializer_class: Any) -> tuple[dict[str, Any], ChangeContext]:
        """The validated body without its ``reason``, and the change context carrying it."""
        data = validated_data(serializer_class, self.request)  # type: ignore[attr-defined]
        return data, self.change_context(data.pop("reason", ""))

    def change_context(self, reason: str | None = None) -> ChangeContext:
        return ChangeContext.from_request(self.request, reason=reason)  # type: ignore[attr-defined]

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        """Single-object answers carry their version as the ETag."""
        data = getattr(response, "data", None)
        if (
            200 <= response.status_code < 300
            and isinstance(data, dict)
            and isinstance(data.get("version"), int)
            and not response.has_header("ETag")
        ):
            response["ETag"] = f'"{data["version"]}"'
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]


class FleetModelViewSet(FleetViewSetMixin, viewsets.GenericViewSet):  # type: ignore[type-arg,misc]
    """Base class: pick the mixins you need; writes go through services."""
