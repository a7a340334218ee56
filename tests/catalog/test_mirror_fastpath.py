"""The mirror's ASGI fast path for resolve requests, driven through ``config.asgi.application``.

Every answer is compared with the one Django's own view gives for the same request
(``config.asgi.django_asgi_app``, the app behind the fast path): same status, headers and body.
The fast path reads the database from its own threads, so the database is transactional.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import connections
from django.utils import timezone

from config.asgi import application, django_asgi_app
from core.models import ApiToken
from models_catalog.mirror import asgi_fastpath
from models_catalog.models import CatalogModel, ModelFile
from tests.hubserver.fixtures import MIRROR_COMMIT, TINY

pytestmark = pytest.mark.django_db(transaction=True)

ACCEL = "/_store/"
FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


class Answer:
    def __init__(self, messages: list[dict[str, Any]]) -> None:
        start = next(m for m in messages if m["type"] == "http.response.start")
        self.status: int = start["status"]
        self.raw_headers = start.get("headers", [])
        self.headers = {k.decode().lower(): v.decode() for k, v in self.raw_headers}
        self.body = b"".join(
            m.get("body", b"") for m in messages if m["type"] == "http.response.body"
        )

    def comparable(self) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in self.headers.items() if k != "x-request-id"}
        return self.status, headers, self.body


async def call(
    app: Any,
    method: str,
    path: str,
    credential: str | None = None,
    query: str = "",
    **extra: str,
) -> Answer:
    headers = [(b"host", b"localhost")]
    if credential is not None:
        headers.append((b"authorization", f"Bearer {credential}".encode()))
    headers += [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in extra.items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("localhost", 80),
    }
    done = asyncio.Event()
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()

    await asyncio.wait_for(app(scope, receive, send), timeout=30)
    return Answer(sent)


async def both(
    method: str, path: str, credential: str | None = None, query: str = "", **extra: str
) -> Answer:
    """The fast path's answer, checked equal to Django's (request id aside)."""
    answered = asgi_fastpath.answered
    fast = await call(application, method, path, credential, query, **extra)
    assert asgi_fastpath.answered == answered + 1, "Django answered, not the fast path"
    django = await call(django_asgi_app, method, path, credential, query, **extra)
    mine, theirs = fast.comparable(), django.comparable()
    difference = set(mine[1].items()) ^ set(theirs[1].items())
    assert not difference, (path, difference)
    assert mine == theirs, path
    assert fast.headers["x-request-id"]
    return fast


def resolve(path: str, revision: str = "main", repo: str = TINY) -> str:
    return f"/hub/{repo}/resolve/{revision}/{path}"


@pytest.fixture(autouse=True)
async def fastpath():
    asgi_fastpath.clear()
    yield
    asgi_fastpath.clear()
    await asyncio.get_running_loop().run_in_executor(None, asgi_fastpath.close_connections)
    await database_sync_to_async(connections.close_all)()


@pytest.mark.parametrize("accel", ["", ACCEL], ids=["streaming", "accel"])
async def test_head_matches_the_django_view_for_every_file(
    mirror_model, node_credential, settings, accel
):
    settings.FLEET_MIRROR_ACCEL_REDIRECT = accel
    for name in FILES:
        answer = await both("HEAD", resolve(name), node_credential)
        assert answer.status == 200
        assert answer.headers["x-repo-commit"] == MIRROR_COMMIT
        assert answer.headers["accept-ranges"] == "bytes"
        assert int(answer.headers["content-length"]) > 0
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.body == b""
    lfs = await both("HEAD", resolve("model.safetensors", MIRROR_COMMIT), node_credential)
    assert lfs.headers["x-linked-etag"] == lfs.headers["etag"]
    assert lfs.headers["x-linked-size"] == lfs.headers["content-length"]


async def test_get_with_accel_redirect_matches_the_django_view(
    mirror_model, viewer_api_token, settings
):
    settings.FLEET_MIRROR_ACCEL_REDIRECT = ACCEL
    for name in FILES:
        answer = await both("GET", resolve(name), viewer_api_token, range="bytes=0-9")
        assert answer.status == 200
        assert answer.headers["x-accel-redirect"].startswith("/_store/blobs/sha256/")
        assert answer.headers["content-length"] == "0"
        assert "x-linked-size" in answer.headers or "etag" in answer.headers


async def test_streaming_gets_go_to_django(mirror_model, node_credential, settings):
    settings.FLEET_MIRROR_ACCEL_REDIRECT = ""
    before = asgi_fastpath.lookups
    answer = await call(
        application, "GET", resolve("config.json"), node_credential, range="bytes=0-9"
    )
    assert answer.status == 206 and len(answer.body) == 10
    assert answer.headers["content-range"].startswith("bytes 0-9/")
    assert asgi_fastpath.lookups == before


async def test_credentials_are_required(mirror_model, node_credential, settings):
    settings.FLEET_MIRROR_ACCEL_REDIRECT = ACCEL
    for method in ("HEAD", "GET"):
        missing = await both(method, resolve("config.json"))
        assert missing.status == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="fleet model mirror"'
        for bad in ("slmn_" + "Q" * 43, "slmf_" + "Q" * 43, "hf_whatever", node_credential[:-1]):
            refused = await both(method, resolve("config.json"), bad)
            assert refused.status == 401
            assert json.loads(refused.body) == {
                "error": "Invalid credentials in Authorization header"
            }
        basic = await both(method, resolve("config.json"), authorization=f"Basic {node_credential}")
        assert basic.status == 401
    query = await both("HEAD", resolve("config.json"), query=f"token={node_credential}")
    assert query.status == 401


async def test_not_found_errors_match_the_django_view(mirror_model, node_credential, settings):
    settings.FLEET_MIRROR_ACCEL_REDIRECT = ACCEL
    cases = [
        (resolve("config.json", repo="fleet-test/nope"), "RepoNotFound"),
        (resolve("config.json", repo="fleet-test/bad..name"), "RepoNotFound"),
        (resolve("config.json", revision="v9"), "RevisionNotFound"),
        (resolve("missing.json"), "EntryNotFound"),
        (resolve("sub/missing.json", revision=MIRROR_COMMIT), "EntryNotFound"),
    ]
    for method in ("HEAD", "GET"):
        for path, code in cases:
            answer = await both(method, path, node_credential)
            assert (answer.status, answer.headers["x-error-code"]) == (404, code), path
            assert answer.headers["x-error-message"]
        entry = await both(method, resolve("missing.json"), node_credential)
        assert entry.headers["x-repo-commit"] == MIRROR_COMMIT
        invalid = await both(method, resolve("a//b"), node_credential)
        assert invalid.status == 400


async def test_a_file_not_yet_in_the_store_is_looked_up_each_time(
    mirror_model, node_credential, settings
):
    settings.FLEET_MIRROR_ACCEL_REDIRECT = ACCEL

    @database_sync_to_async
    def add_unstored() -> None:
        ModelFile.objects.create(
            model=mirror_model, path="extra.bin", size=3, sha256="a" * 64, lfs=True
        )

    await add_unstored()
    answer = await both("HEAD", resolve("extra.bin"), node_credential)
    assert (answer.status, answer.headers["x-error-code"]) == (404, "EntryNotFound")
    assert "x-repo-commit" not in answer.headers
    before = asgi_fastpath.lookups
    await call(application, "HEAD", resolve("extra.bin"), node_credential)
    assert asgi_fastpath.lookups == before + 1  # the store is asked again, not the cache


async def test_a_snapshot_costs_one_lookup(mirror_model, node_credential, settings):
    settings.FLEET_MIRROR_ACCEL_REDIRECT = ACCEL
    settings.FLEET_MIRROR_CACHE_SECONDS = 5
    before = asgi_fastpath.lookups
    answers = await asyncio.gather(
        *(call(application, "HEAD", resolve(name), node_credential) for name in FILES[:1])
    )
    assert asgi_fastpath.lookups == before + 1
    for name in FILES:
        for method in ("HEAD", "GET"):
            answers.append(await call(application, method, resolve(name), node_credential))
    assert {answer.status for answer in answers} == {200}
    assert asgi_fastpath.lookups == before + 1  # no database access after the first request

    settings.FLEET_MIRROR_CACHE_SECONDS = 0
    asgi_fastpath.clear()
    for name in FILES[:2]:
        assert (await call(application, "HEAD", resolve(name), node_credential)).status == 200
    assert asgi_fastpath.lookups == before + 3


async def test_revoked_tokens_and_deleted_models_stop_within_the_cache_time(
    mirror_model, viewer_api_token, settings, monkeypatch
):
    settings.FLEET_MIRROR_ACCEL_REDIRECT = ACCEL
    settings.FLEET_MIRROR_CACHE_SECONDS = 2
    clock = [1000.0]
    monkeypatch.setattr(asgi_fastpath, "monotonic", lambda: clock[0])
    path = resolve("config.json")
    assert (await call(application, "HEAD", path, viewer_api_token)).status == 200

    await database_sync_to_async(ApiToken.objects.update)(revoked_at=timezone.now())
    clock[0] += 1  # within the cache time the token is still trusted
    assert (await call(application, "HEAD", path, viewer_api_token)).status == 200
    clock[0] += 1.5
    refused = await both("HEAD", path, viewer_api_token)
    assert refused.status == 401


async def test_deleted_models_stop_within_the_cache_time(
    mirror_model, node_credential, settings, monkeypatch
):
    settings.FLEET_MIRROR_ACCEL_REDIRECT = ACCEL
    settings.FLEET_MIRROR_CACHE_SECONDS = 2
    clock = [1000.0]
    monkeypatch.setattr(asgi_fastpath, "monotonic", lambda: clock[0])
    path = resolve("config.json")
    assert (await call(application, "HEAD", path, node_credential)).status == 200

    await database_sync_to_async(CatalogModel.objects.filter(repo_id=TINY).delete)()
    clock[0] += 1
    assert (await call(application, "HEAD", path, node_credential)).status == 200
    clock[0] += 1.5
    gone = await both("HEAD", path, node_credential)
    assert (gone.status, gone.headers["x-error-code"]) == (404, "RepoNotFound")


async def test_other_hub_routes_and_methods_still_go_to_django(
    mirror_model, node_credential, settings
):
    settings.FLEET_MIRROR_ACCEL_REDIRECT = ACCEL
    before = asgi_fastpath.lookups
    info = await call(application, "GET", f"/hub/api/models/{TINY}/revision/main", node_credential)
    assert info.status == 200 and json.loads(info.body)["sha"] == MIRROR_COMMIT
    post = await call(application, "POST", resolve("config.json"), node_credential)
    assert post.status == 405
    assert asgi_fastpath.lookups == before


async def test_a_host_django_refuses_goes_to_django(mirror_model, node_credential, settings):
    settings.FLEET_MIRROR_ACCEL_REDIRECT = ACCEL
    settings.ALLOWED_HOSTS = ["fleet.example.com"]
    answer = await call(application, "HEAD", resolve("config.json"), node_credential)
    assert answer.status == 400


async def test_a_session_cookie_goes_to_django(mirror_model, node_credential, settings):
    settings.FLEET_MIRROR_ACCEL_REDIRECT = ACCEL
    answered = asgi_fastpath.answered
    answer = await call(
        application, "HEAD", resolve("config.json"), node_credential, cookie="sessionid=nope"
    )
    assert answer.status == 200
    assert asgi_fastpath.answered == answered
