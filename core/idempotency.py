"""``Idempotency-Key`` on the API's POSTs: a retried request gets the first one's answer.

A client that sends ``Idempotency-Key: <key>`` with a ``POST /api/v1/…`` may send the same
request again (its connection broke, the web process died, it timed out) and the change is
made once: the key, a hash of the request and the response are stored for
``FLEET_IDEMPOTENCY_TTL_SECONDS`` (24 h), per signed-in user. As the IETF draft
(draft-ietf-httpapi-idempotency-key-header) and Stripe do:

- the same key with the same request replays the stored answer (``Idempotent-Replayed: true``);
- the same key with another method, path or body is refused with 422, nothing done;
- a key that is not 1–255 visible ASCII characters is refused with 400.

The record is written in the same database transaction as the view's own changes, so they
commit together or not at all: a process killed mid-request leaves neither the change nor the
record, and the retry runs as a first request. A second request with the key while the first
is running waits on the record's unique index and then replays its answer. Answers of 5xx (and
409/429, which a retry may turn into a success) are not kept, and the view's changes are rolled
back with them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from core.models import IdempotencyRecord

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
API_PREFIX = "/api/v1/"
KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")
KEPT_HEADERS = ("Content-Type", "Location", "ETag", "Allow", "Retry-After")
NOT_KEPT = {409, 429}


def replay(record: IdempotencyRecord) -> HttpResponse:
    response = HttpResponse(bytes(record.body), status=record.status or 200)
    for name, value in record.headers.items():
        response[name] = value
    response[REPLAYED] = "true"
    return response


def request_hash(request: HttpRequest) -> str:
    digest = hashlib.sha256()
    for part in (
        request.method or "",
        request.get_full_path(),
        request.content_type or "",
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(request.body)
    return digest.hexdigest()


def _principal(request: HttpRequest) -> str | None:
    """The signed-in user (session or bearer token), or None: the view answers 401 itself."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    from rest_framework.request import Request

    from core.authentication import BearerTokenAuthentication

    try:
        found = BearerTokenAuthentication().authenticate(Request(request))
    except Exception:  # a bad token: the view refuses it with its own answer
        return None
    return f"user:{found[0].pk}" if found else None


def _problem(status: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status)


class IdempotencyMiddleware:
    """Last in MIDDLEWARE: it wraps the view (and only POSTs under /api/v1/ with the header)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        key = request.headers.get(HEADER)
        if key is None or request.method != "POST" or not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        if not KEY_PATTERN.fullmatch(key):
            return _problem(400, f"{HEADER} must be 1 to 255 visible ASCII characters.")
        principal = _principal(request)
        if principal is None:
            return self.get_response(request)
        fingerprint = request_hash(request)
        with transaction.atomic():
            record, earlier = self._claim(principal, key, fingerprint, request)
            if earlier is not None:
                return earlier
            response = self.get_response(request)
            if response.status_code >= 500 or response.status_code in NOT_KEPT:
                transaction.set_rollback(True)  # the key stays free for the retry
                return response
            if getattr(response, "streaming", False):
                return response  # nothing to replay: kept as "answered", replayed as 409
            record.status = response.status_code
            record.headers = {h: response[h] for h in KEPT_HEADERS if response.has_header(h)}
            record.body = response.content
            record.save(update_fields=["status", "headers", "body"])
        return response

    def _claim(
        self, principal: str, key: str, fingerprint: str, request: HttpRequest
    ) -> tuple[IdempotencyRecord, HttpResponse | None]:
        now = timezone.now()
        fields = {
            "principal": principal,
            "key": key,
            "request_hash": fingerprint,
            "method": request.method or "POST",
            "path": request.path[:500],
            "created_at": now,
            "expires_at": now + timedelta(seconds=settings.FLEET_IDEMPOTENCY_TTL_SECONDS),
        }
        for _ in range(2):
            try:
                with transaction.atomic():  # waits while another request holds the key
                    return IdempotencyRecord.objects.create(**fields), None
            except IntegrityError:
                earlier = (
                    IdempotencyRecord.objects.select_for_update()
                    .filter(principal=principal, key=key)
                    .first()
                )
            if earlier is None:
                continue  # it was rolled back meanwhile: claim it again
            if earlier.expires_at <= now:
                earlier.delete()
                continue
            if earlier.request_hash != fingerprint:
                return earlier, _problem(
                    422,
                    f"This {HEADER} was used with another request ({earlier.method} "
                    f"{earlier.path}); send a new key for a new request.",
                )
            if earlier.status is None:
                return earlier, _problem(
                    409, f"The first request with this {HEADER} was answered with a stream."
                )
            log.info("replaying %s %s for %s", earlier.method, earlier.path, principal)
            return earlier, replay(earlier)
        raise IntegrityError(f"could not claim {HEADER} {json.dumps(key)}")


def purge_expired(now: Any = None) -> int:
    """Delete records past their 24 h (beat runs this hourly)."""
    deleted, _ = IdempotencyRecord.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted
