"""Permission-matrix rows for the gateway's API and pages (tests/matrix_kit.py).

Everyone signed in reads keys (never their secrets), aliases, usage and live figures;
operators create, change and revoke keys and aliases. The /v1/ endpoints are not Django
routes: they authenticate with access keys (tests/gateway/test_proxy.py covers them).
"""

from __future__ import annotations

from typing import Any

from core.history import ChangeContext
from gateway import services
from gateway.models import AccessKey, Alias, UsageDay
from tests.matrix_kit import api, everyone, operators, page


def setup(world: Any) -> None:
    ctx = ChangeContext.for_user(world.users["admin"])
    key, secret = services.create_key(ctx, name="matrix-key", requests_per_minute=10)
    alias = services.create_alias(
        ctx, name="matrix-alias", targets=[{"deployment": world.deployment.name, "weight": 1}]
    )
    UsageDay.objects.create(
        day="2026-11-01", key=key, deployment=world.deployment.name, requests=3, prompt_tokens=9
    )
    world.extra["gateway_key"] = key
    world.extra["gateway_secret"] = secret
    world.extra["gateway_alias"] = alias


def placeholders(world: Any, persona: str) -> dict[str, Any]:
    key = world.extra["gateway_key"]
    alias = world.extra["gateway_alias"]
    key.refresh_from_db()
    alias.refresh_from_db()
    return {
        "gateway_key": key.pk,
        "gateway_alias": alias.pk,
        "gateway_deployment": world.deployment.name,
    }


def no_secret(response: Any, persona: str, world: Any) -> None:
    assert world.extra["gateway_secret"].encode() not in response.content
    assert AccessKey.hash_key(world.extra["gateway_secret"]).encode() not in response.content


def key_created(response: Any, persona: str, world: Any) -> None:
    made = AccessKey.objects.filter(name="new-app").exists()
    assert made == (persona in ("admin", "operator"))
    if response.status_code == 201:
        assert response.json()["key"].startswith("slmk_")


def key_revoked(response: Any, persona: str, world: Any) -> None:
    key = AccessKey.objects.get(pk=world.extra["gateway_key"].pk)
    assert (key.revoked_at is not None) == (persona in ("admin", "operator"))


def alias_gone(response: Any, persona: str, world: Any) -> None:
    exists = Alias.objects.filter(pk=world.extra["gateway_alias"].pk).exists()
    assert exists != (persona in ("admin", "operator"))


KEYS = "/api/v1/gateway/keys/"
ALIASES = "/api/v1/gateway/aliases/"

ROWS = [
    api("gw-keys-list", "gateway-key-list", "GET", KEYS, **everyone(200), check=no_secret),
    api(
        "gw-keys-retrieve",
        "gateway-key-detail",
        "GET",
        KEYS + "{gateway_key}/",
        **everyone(200),
        check=no_secret,
    ),
    api(
        "gw-keys-create",
        "gateway-key-list",
        "POST",
        KEYS,
        **operators(201),
        body={"name": "new-app", "all_models": False, "allowed_models": ["matrix-alias"]},
        check=key_created,
    ),
    api(
        "gw-keys-update",
        "gateway-key-detail",
        "PATCH",
        KEYS + "{gateway_key}/",
        **operators(200),
        body={"tokens_per_minute": 1000},
    ),
    api(
        "gw-keys-revoke",
        "gateway-key-revoke",
        "POST",
        KEYS + "{gateway_key}/revoke/",
        **operators(200),
        body={"reason": "matrix"},
        check=key_revoked,
    ),
    api("gw-aliases-list", "gateway-alias-list", "GET", ALIASES, **everyone(200)),
    api(
        "gw-aliases-retrieve",
        "gateway-alias-detail",
        "GET",
        ALIASES + "{gateway_alias}/",
        **everyone(200),
    ),
    api(
        "gw-aliases-create",
        "gateway-alias-list",
        "POST",
        ALIASES,
        **operators(201),
        body={"name": "new-alias", "targets": [{"deployment": "{gateway_deployment}"}]},
    ),
    api(
        "gw-aliases-update",
        "gateway-alias-detail",
        "PATCH",
        ALIASES + "{gateway_alias}/",
        **operators(200),
        body={"targets": [{"deployment": "{gateway_deployment}", "weight": 5}]},
    ),
    api(
        "gw-aliases-delete",
        "gateway-alias-detail",
        "DELETE",
        ALIASES + "{gateway_alias}/",
        **operators(204),
        check=alias_gone,
    ),
    api("gw-usage-list", "gateway-usage-list", "GET", "/api/v1/gateway/usage/", **everyone(200)),
    api(
        "gw-usage-totals",
        "gateway-usage-totals",
        "GET",
        "/api/v1/gateway/usage/totals/",
        **everyone(200),
    ),
    api("gw-live", "gateway-live-api", "GET", "/api/v1/gateway/live/", **everyone(200)),
    # pages
    page("gw-page", "gateway", "GET", "/gateway/", **everyone(200)),
    page("gw-page-live", "gateway-live", "GET", "/gateway/live/", **everyone(200)),
    page("gw-page-keys", "gateway-keys", "GET", "/gateway/keys/", **everyone(200), check=no_secret),
    page(
        "gw-page-keys-create",
        "gateway-keys",
        "POST",
        "/gateway/keys/",
        **operators(200),
        body={"name": "new-app", "all_models": "on"},
        check=key_created,
    ),
    page("gw-page-key", "gateway-key", "GET", "/gateway/keys/{gateway_key}/", **everyone(200)),
    page(
        "gw-page-key-edit",
        "gateway-key",
        "POST",
        "/gateway/keys/{gateway_key}/",
        **operators(302),
        body={"name": "matrix-key", "all_models": "on", "requests_per_minute": "20"},
    ),
    page(
        "gw-page-key-revoke",
        "gateway-key-revoke-page",
        "POST",
        "/gateway/keys/{gateway_key}/revoke/",
        **operators(302),
        check=key_revoked,
    ),
    page("gw-page-aliases", "gateway-aliases", "GET", "/gateway/aliases/", **everyone(200)),
    page(
        "gw-page-aliases-create",
        "gateway-aliases",
        "POST",
        "/gateway/aliases/",
        **operators(302),
        body={"name": "new-alias", "targets": "{gateway_deployment}=2"},
    ),
    page(
        "gw-page-alias",
        "gateway-alias",
        "GET",
        "/gateway/aliases/{gateway_alias}/",
        **everyone(200),
    ),
    page(
        "gw-page-alias-edit",
        "gateway-alias",
        "POST",
        "/gateway/aliases/{gateway_alias}/",
        **operators(302),
        body={"targets": "{gateway_deployment}=7", "description": "x"},
    ),
    page(
        "gw-page-alias-delete",
        "gateway-alias-delete",
        "POST",
        "/gateway/aliases/{gateway_alias}/delete/",
        **operators(302),
        check=alias_gone,
    ),
    page("gw-page-usage", "gateway-usage-page", "GET", "/gateway/usage/", **everyone(200)),
]
