"""Every route needs a signed-in user, except an explicit allow-list.

The URL resolver is walked recursively; each pattern gets a concrete URL (path converters and
regex groups filled with plausible values) and is requested anonymously with GET and POST.
API views (DRF) must answer 401/403; pages must redirect to the sign-in page. A new route
that forgets authentication fails here, by name.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings
from django.shortcuts import resolve_url
from django.test import Client
from django.urls import URLPattern, URLResolver, converters, get_resolver, resolve
from django.urls.resolvers import RegexPattern, RoutePattern

# Route names that answer without signing in. Keep this list short and justified.
ALLOW_ANONYMOUS = {
    "login": "the sign-in page itself",
    "healthz": "liveness probe for load balancers",
    "readyz": "readiness probe for orchestrators",
}

# Agent endpoints are for machines, not people: they carry their own credential (a one-time
# join token in the body, a node credential checked with the batch) instead of a session or
# personal token. They need no sign-in, but must refuse a request that carries nothing.
SELF_AUTHENTICATING = {
    "agent-join": "an agent joins with a one-time join token sent in the body",
    "agent-heartbeat": "the node credential is checked together with the heartbeat batch",
}

# Routes under /api/ that are pages for people (sign-in redirect, not a 401).
PAGES_UNDER_API = {"api-docs"}

# Routes outside /api/ that are for machines: they answer 401/403 themselves.
MACHINE_ROUTES = {"metrics": "Prometheus scrapes /metrics by convention"}

_ROUTE_PARAM = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")
_REGEX_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>(?:[^()\\]|\\.)*\)")
SAMPLE_UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")


@dataclass(frozen=True)
class Route:
    name: str
    url: str
    pattern: str
    callback: Any

    @property
    def is_api(self) -> bool:
        """API routes (and the model mirror, which speaks the Hub's API) answer 401/403
        themselves; everything else is a page."""
        api = self.url.startswith(("/api/", "/hub/")) or self.name in MACHINE_ROUTES
        return api and self.name not in PAGES_UNDER_API


def _sample(name: str, converter: Any = None) -> str:
    if isinstance(converter, converters.IntConverter) or name in ("pk", "id"):
        return "1"
    if isinstance(converter, converters.UUIDConverter):
        return str(SAMPLE_UUID)
    if name == "format":
        return "json"
    return "x"


def _concrete(pattern: Any) -> str:
    """The URL piece for one pattern, with every parameter filled in."""
    if isinstance(pattern, RoutePattern):
        return _ROUTE_PARAM.sub(
            lambda m: _sample(m["name"], pattern.converters.get(m["name"])), str(pattern)
        )
    if isinstance(pattern, RegexPattern):
        text = _REGEX_GROUP.sub(lambda m: _sample(m["name"]), str(pattern))
        text = text.removeprefix("^").removesuffix("$")
        text = text.replace("/?", "/").replace("\\", "")
        return text
    raise TypeError(f"unknown pattern type {type(pattern).__name__}: {pattern}")


def _walk(entries: list[Any], url: str = "/", shown: str = "") -> Iterator[Route]:
    for entry in entries:
        if isinstance(entry, URLResolver):
            yield from _walk(
                entry.url_patterns, url + _concrete(entry.pattern), shown + str(entry.pattern)
            )
        elif isinstance(entry, URLPattern):
            yield Route(
                name=entry.name or f"<unnamed {shown}{entry.pattern}>",
                url=url + _concrete(entry.pattern),
                pattern=shown + str(entry.pattern),
                callback=entry.callback,
            )


ROUTES = list(_walk(get_resolver().url_patterns))


def test_every_route_gets_a_url_that_resolves_back_to_it() -> None:
    wrong = []
    for route in ROUTES:
        try:
            match = resolve(route.url)
        except Exception as exc:
            wrong.append(f"{route.pattern} -> {route.url}: {exc.__class__.__name__}")
            continue
        if match.func is not route.callback:
            wrong.append(f"{route.pattern} -> {route.url} resolves to {match.route}")
    assert not wrong, "could not build URLs for: " + "; ".join(wrong)
    assert len(ROUTES) > 10


def test_the_allow_list_names_real_routes() -> None:
    names = {route.name for route in ROUTES}
    assert set(ALLOW_ANONYMOUS) <= names, set(ALLOW_ANONYMOUS) - names


@pytest.mark.django_db
def test_every_route_requires_authentication() -> None:
    login = resolve_url(settings.LOGIN_URL)
    offenders: list[str] = []
    for route in ROUTES:
        if route.name in ALLOW_ANONYMOUS or route.name in SELF_AUTHENTICATING:
            continue
        for method in ("GET", "POST"):
            client = Client()
            response = getattr(client, method.lower())(route.url)
            status = response.status_code
            location = response.get("Location", "")
            if route.is_api:
                ok = status in (401, 403)
                wanted = "401/403"
            else:
                ok = status == 302 and location.startswith(login + "?next=")
                wanted = f"302 to {login}?next=..."
            if not ok:
                offenders.append(
                    f"{method} {route.url} ({route.name}): {status} {location}, wanted {wanted}"
                )
    assert not offenders, "routes answering anonymous requests:\n  " + "\n  ".join(offenders)


@pytest.mark.django_db
def test_allow_listed_routes_answer_without_signing_in() -> None:
    login = resolve_url(settings.LOGIN_URL)
    problems: list[str] = []
    for route in ROUTES:
        if route.name not in ALLOW_ANONYMOUS:
            continue
        response = Client().get(route.url)
        if response.status_code != 200:
            problems.append(f"GET {route.url} ({route.name}): {response.status_code}")
        post = Client().post(route.url)
        redirected_to_login = post.status_code == 302 and post["Location"].startswith(login)
        if redirected_to_login or post.status_code in (401, 403):
            problems.append(
                f"POST {route.url} ({route.name}): {post.status_code} (asks to sign in)"
            )
    assert not problems, problems


@pytest.mark.django_db
def test_self_authenticating_routes_refuse_requests_without_a_credential() -> None:
    problems: list[str] = []
    for route in ROUTES:
        if route.name not in SELF_AUTHENTICATING:
            continue
        get = Client().get(route.url)
        if not 400 <= get.status_code < 500:
            problems.append(f"GET {route.url} ({route.name}): {get.status_code}")
        post = Client().post(route.url, data={}, content_type="application/json")
        if post.status_code not in (400, 401, 403):
            problems.append(f"POST {route.url} ({route.name}): {post.status_code}")
    assert not problems, "agent endpoints accepting requests without a credential: " + str(problems)
