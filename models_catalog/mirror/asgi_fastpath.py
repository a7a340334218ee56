"""A lean ASGI handler for the mirror's hot route, ``HEAD``/``GET /hub/{repo}/resolve/...``.

``snapshot_download`` asks for every file of a repository (a HEAD, then a GET per file): through
Django each of those ran the whole middleware stack, hopped threads and made about four queries
for the same credential and repository. This handler answers them in front of Django with the
mirror's own code (:func:`views.locate`, :func:`protocol.file_headers`,
:func:`access.credential`) and the headers Django's middleware would add, keeping for
``FLEET_MIRROR_CACHE_SECONDS`` (0 = not at all) which credentials were valid and each
repository's pin and files, so one download costs about one database round trip.

Only what is answered without a body is handled here: HEAD, GET with X-Accel-Redirect
(``FLEET_MIRROR_ACCEL_REDIRECT``) and the errors. A GET that Python must stream, another
method, a host Django would refuse, a plain-HTTP request that would be redirected to HTTPS,
or anything unusual goes to Django unchanged (one implementation of Range streaming).

A deleted model, a revoked token or node credential stops working within the cache time.
Negative answers are never cached: an unknown credential, repository, revision or file, or
one not yet in the store, is looked up again before the error is answered.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.core.signals import setting_changed
from django.db import close_old_connections
from django.dispatch import receiver
from django.http import HttpResponse, JsonResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.security import SecurityMiddleware
from django.utils.cache import patch_vary_headers
from django.utils.log import log_response

from core.logs import request_id_var
from core.middleware import _VALID_REQUEST_ID
from models_catalog.mirror import access, protocol, views

# What Django's URL patterns (models_catalog.mirror.urls, under "hub/") send to views.resolve:
# "<str:org>/<str:name>/resolve/<path:rest>"; "api/models/..." may belong to other routes.
RESOLVE = re.compile(r"^/hub/(?P<org>[^/]+)/(?P<name>[^/]+)/resolve/(?P<rest>.+)$")
MAX_ENTRIES = 4096
T = TypeVar("T")

monotonic = time.monotonic  # tests move the clock
lookups = 0  # database round trips made by this handler (tests count them)
answered = 0  # requests this handler answered (the rest went to Django)


@dataclass(frozen=True)
class Cached:
    snapshot: views.Snapshot
    stored: frozenset[str]  # sha256s found in the store when the snapshot was read


_credentials: dict[str, float] = {}  # sha256 of a valid key -> expiry
_snapshots: dict[tuple[str, str], tuple[float, Cached]] = {}  # (org, name) -> expiry, entry
_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hub-fastpath")


def clear() -> None:
    """Forget every cached credential and repository."""
    _credentials.clear()
    _snapshots.clear()


@receiver(setting_changed)
def _settings_changed(setting: str, **kwargs: Any) -> None:
    if setting in ("FLEET_MODEL_STORE", "FLEET_MIRROR_CACHE_SECONDS"):
        clear()  # another store (tests), or another cache time


def close_connections() -> None:
    """Close the database connections of this handler's threads (tests, shutdown)."""
    from django.db import connections

    for _ in range(_executor._max_workers):
        _executor.submit(connections.close_all).result()


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= MAX_ENTRIES:
        cache.clear()  # bounded; a burst of distinct keys only costs a few lookups again
    cache[key] = value


async def _in_thread(function: Callable[..., T], *args: Any) -> T:
    global lookups
    lookups += 1
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, _with_connection, function, *args)


def _with_connection(function: Callable[..., T], *args: Any) -> T:
    close_old_connections()  # as Django does per request: honours CONN_MAX_AGE, drops broken
    return function(*args)


def _lookup(key: str | None, org: str, name: str, snapshot: bool) -> tuple[bool, Cached | None]:
    """One trip to the database: whether ``key`` is valid, and the repository if asked."""
    valid = key is None or access.principal(key) is not None
    if not valid or not snapshot:
        return valid, None
    found = views.load_snapshot(org, name)
    if found is None:
        return True, None
    return True, Cached(found, _stored_blobs(found))


def _stored_blobs(snapshot: views.Snapshot) -> frozenset[str]:
    from models_catalog import store
    from models_catalog.models import StoredBlob

    shas = {f.sha256 for f in snapshot.files.values() if protocol.SHA256.match(f.sha256)}
    known = StoredBlob.objects.filter(sha256__in=shas).values_list("sha256", flat=True)
    return frozenset(sha for sha in known if store.blob_path(sha).is_file())


def _request(scope: dict[str, Any]) -> ASGIRequest | None:
    """The request as Django would see it, or None where Django must answer (bad host, …)."""
    try:
        request = ASGIRequest(scope, io.BytesIO())
        request.get_host()  # DisallowedHost: Django answers 400
    except Exception:
        return None
    if settings.SESSION_COOKIE_NAME in request.COOKIES:
        return None  # Django would read, and maybe expire, the session
    if SecurityMiddleware(_never).process_request(request) is not None:
        return None  # SECURE_SSL_REDIRECT
    try:
        if CommonMiddleware(_never).process_request(request) is not None:
            return None  # PREPEND_WWW
    except Exception:
        return None  # DISALLOWED_USER_AGENTS
    return request


def _never(request: Any) -> Any:  # the get_response of middleware used piecemeal
    raise AssertionError("not called")


def _finish(request: ASGIRequest, response: HttpResponse, request_id: str) -> HttpResponse:
    """The headers Django's middleware adds on the way out (settings.MIDDLEWARE, reversed).

    Each of these middleware changes headers only and returns the response it was given.
    """
    XFrameOptionsMiddleware(_never).process_response(request, response)
    CommonMiddleware(_never).process_response(request, response)  # Content-Length
    # SessionMiddleware: the sign-in check reads the (absent, see _request) session.
    patch_vary_headers(response, ("Cookie",))
    response["X-Request-ID"] = request_id  # core.middleware.RequestContextMiddleware
    SecurityMiddleware(_never).process_response(request, response)
    if response.status_code >= 400:
        log_response(
            "%s: %s", response.reason_phrase, request.path, response=response, request=request
        )
    return response


async def _send(send: Any, response: HttpResponse) -> None:
    headers = [(name.encode("ascii"), value.encode("latin1")) for name, value in response.items()]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})


def _keep(org: str, name: str, loaded: Cached | None, now: float, ttl: int) -> Cached | None:
    if loaded is None:
        _snapshots.pop((org, name), None)
    elif ttl > 0:
        _remember(_snapshots, (org, name), (now + ttl, loaded))
    return loaded


def _locate(
    cached: Cached | None, org: str, name: str, rest: str
) -> tuple[str, protocol.RepoFile] | JsonResponse:
    snapshot = cached.snapshot if cached is not None else None
    stored = cached.stored if cached is not None else frozenset()
    return views.locate(snapshot, org, name, rest, lambda file: file.sha256 in stored)


async def _answer(
    request: ASGIRequest, org: str, name: str, rest: str
) -> HttpResponse | JsonResponse:
    authorization = request.headers.get("Authorization", "")
    key = access.credential(authorization)
    if isinstance(key, JsonResponse):
        return key
    ttl = settings.FLEET_MIRROR_CACHE_SECONDS
    now = monotonic()
    digest = hashlib.sha256(key.encode()).hexdigest()
    key_known = _credentials.get(digest, 0.0) > now
    held = _snapshots.get((org, name))
    cached = held[1] if held is not None and held[0] > now else None
    from_cache = cached is not None
    if not key_known or cached is None:
        valid, loaded = await _in_thread(
            _lookup, None if key_known else key, org, name, cached is None
        )
        if not valid:
            return access.invalid_credentials()
        if ttl > 0 and not key_known:
            _remember(_credentials, digest, now + ttl)
        if cached is None:
            cached = _keep(org, name, loaded, now, ttl)
    found = _locate(cached, org, name, rest)
    if from_cache and isinstance(found, JsonResponse):
        # Errors never come from the cache: a file, revision or blob added since is found.
        _, loaded = await _in_thread(_lookup, None, org, name, True)
        found = _locate(_keep(org, name, loaded, now, ttl), org, name, rest)
    if isinstance(found, JsonResponse):
        return found
    commit_sha, file = found
    headers = protocol.file_headers(commit_sha, file)
    if request.method == "GET":  # only with X-Accel-Redirect (see handle)
        headers.pop("Content-Length")
        accel = settings.FLEET_MIRROR_ACCEL_REDIRECT
        headers["X-Accel-Redirect"] = views.accel_location(file, accel)
    response = HttpResponse()
    for header, value in headers.items():
        response[header] = value
    return response


async def handle(scope: dict[str, Any], match: re.Match[str], send: Any) -> bool:
    """Answer a resolve request; False (nothing sent) when Django must answer it."""
    global answered
    request = _request(scope)
    if request is None:
        return False
    answered += 1
    incoming = request.headers.get("X-Request-ID", "")
    request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    token = request_id_var.set(request_id)
    try:
        response = await _answer(request, match["org"], match["name"], match["rest"])
        await _send(send, _finish(request, response, request_id))
    finally:
        request_id_var.reset(token)
    return True


def _handles(scope: dict[str, Any]) -> re.Match[str] | None:
    if scope["type"] != "http" or scope.get("root_path"):
        return None
    method = scope["method"]
    if method != "HEAD" and not (method == "GET" and settings.FLEET_MIRROR_ACCEL_REDIRECT):
        return None  # other methods answer 405 after the credential; GET streams: Django
    match = RESOLVE.match(scope["path"])
    if match is None or match["org"] == "api":
        return None
    names = [name for name, _ in scope.get("headers") or []]
    if names.count(b"authorization") > 1:
        return None  # Django joins repeated headers; let it decide
    return match


def wrap(django_app: Any) -> Any:
    """An ASGI app answering the mirror's resolve requests and sending the rest to Django."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        match = _handles(scope)
        if match is not None and await handle(scope, match, send):
            return
        await django_app(scope, receive, send)

    return app
