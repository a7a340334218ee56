"""Who may do what: one table row per endpoint and method, one expected status per persona.

Every API route (under ``api/``) and every console page is listed here; the completeness test
at the bottom walks the URL resolver and fails on any route the table forgets. Rows are
checked for admin, operator, viewer and anonymous, each against a fresh database holding one
secret, one token per signed-in persona and the history events those left behind.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from rest_framework.test import APIClient

from core import job_services, services
from core.choices import Role, SecretKind, TokenScope
from core.history import ChangeContext
from core.jobs import Job, JobKind
from core.models import ApiToken, HistoryEvent, Secret, User
from deployments import services as deployment_services
from deployments.choices import ReplicaState
from deployments.models import Deployment, Replica, Rollout
from fleet import services as fleet_services
from fleet.models import JoinToken, Node, NodeCommand
from models_catalog.downloads import put_variant_on_nodes
from models_catalog.models import CatalogModel, ModelFile, NodeModel, Variant
from tests.deployments.builders import gguf_variant, qwen
from tests.hubserver.fixtures import TINY, TINY_GGUF
from tests.matrix_kit import (
    LOGIN,
    LOGIN_URL,
    Check,
    Expected,
    Redirect,
    Row,
    admin_only,
    api,
    everyone,
    operators,
    page,
)

PERSONAS = ("admin", "operator", "viewer", "anonymous")


def _extensions() -> list[ModuleType]:
    """Every ``tests/**/matrix_rows.py``: rows (and world set-up) contributed by other apps."""
    tests_dir = Path(__file__).resolve().parent.parent
    names = sorted(
        ".".join(("tests", *path.relative_to(tests_dir).with_suffix("").parts))
        for path in tests_dir.rglob("matrix_rows.py")
    )
    return [importlib.import_module(name) for name in names]


EXTENSIONS = _extensions()
SECRET_VALUE = "hf_matrix-plaintext-must-never-leak-0123456789"


# --- The world every row runs against -------------------------------------------------------
@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    """Hundreds of rows each create three users: skip the deliberately slow hasher."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class World:
    users: dict[str, User | None]
    tokens: dict[str, ApiToken]
    keys: dict[str, str]
    secret: Secret
    event: HistoryEvent
    node: Node
    join_token: JoinToken
    command: NodeCommand
    catalog_model: CatalogModel
    variant: Variant
    catalog_head: str  # the upstream head commit of the catalog model's repository
    job: Job  # a queued download job of ``variant`` to ``node``
    failed_job: Job
    node_model: NodeModel  # ``variant`` present on ``node``
    deployment: Deployment  # at revision 2 (r1 rollback-able), no live replica
    replica: Replica  # a gone replica of ``deployment`` on ``node``
    rollout: Rollout
    extra: dict[str, Any] = field(default_factory=dict)  # what matrix_rows modules set up

    def placeholders(self, persona: str) -> dict[str, Any]:
        """Values for the ``{name}`` placeholders of paths and bodies, seen by ``persona``."""
        own = self.tokens[persona if persona != "anonymous" else "viewer"]
        other = self.tokens["operator" if persona == "admin" else "admin"]
        subject = self.users["viewer"]
        assert subject is not None
        self.secret.refresh_from_db()
        subject.refresh_from_db()
        self.catalog_model.refresh_from_db()
        self.deployment.refresh_from_db()
        return {
            "secret": self.secret.pk,
            "secret_version": self.secret.version,
            "own_token": own.pk,
            "other_token": other.pk,
            "event": self.event.pk,
            "user": subject.pk,
            "user_version": subject.version,
            "node": self.node.pk,
            "join_token": self.join_token.pk,
            "command": self.command.pk,
            "catalog_model": self.catalog_model.pk,
            "catalog_model_version": self.catalog_model.version,
            "variant": self.variant.pk,
            "catalog_head": self.catalog_head,
            "job": self.job.pk,
            "failed_job": self.failed_job.pk,
            "node_model": self.node_model.pk,
            "deployment": self.deployment.pk,
            "deployment_version": self.deployment.version,
            "deploy_variant": self.deployment.current_revision.variant_id,  # type: ignore[union-attr]
            "replica": self.replica.pk,
            "rollout": self.rollout.pk,
            **{
                name: value
                for module in EXTENSIONS
                if hasattr(module, "placeholders")
                for name, value in module.placeholders(self, persona).items()
            },
        }


@pytest.fixture
def catalog_hub(settings, upstream_hub: str, hub_commits: dict[str, list[str]]) -> str:
    """The test hub as the upstream (imports, re-sync, search); returns TINY's head commit."""
    settings.FLEET_HF_ENDPOINT = upstream_hub
    return hub_commits[TINY][-1]


def _catalog_model(pinned: str) -> tuple[CatalogModel, Variant]:
    """TINY in the catalog (made directly, pinned to an older commit), with one variant."""
    model = CatalogModel.objects.create(
        repo_id=TINY,
        commit_sha=pinned,
        licence="apache-2.0",
        num_layers=2,
        hidden_size=128,
        num_attention_heads=4,
        num_kv_heads=2,
        head_dim=32,
        max_context=512,
        vocab_size=960,
        parameter_count=541312,
        parameter_source="safetensors",
    )
    weights = ModelFile.objects.create(
        model=model, path="model.safetensors", size=2_167_456, sha256="0" * 64, lfs=True
    )
    variant = Variant.objects.create(
        model=model,
        name="original",
        format="safetensors",
        size=weights.size,
        produced_by={"source": "upstream"},
    )
    variant.files.set([weights])
    return model, variant


@pytest.fixture
def world(personas, catalog_hub, hub_commits) -> World:
    admin = personas["admin"]
    secret = services.create_secret(
        ChangeContext.for_user(admin),
        name="hf-main",
        value=SECRET_VALUE,
        kind=SecretKind.HUGGINGFACE_TOKEN,
        description="matrix secret",
    )
    tokens: dict[str, ApiToken] = {}
    keys: dict[str, str] = {}
    for persona in ("admin", "operator", "viewer"):
        user = personas[persona]
        scope = TokenScope.READ if persona == "viewer" else TokenScope.WRITE
        token, key = services.create_token(
            ChangeContext.for_user(user), owner=user, name=f"{persona}-token", scope=scope
        )
        tokens[persona], keys[persona] = token, key
    event = HistoryEvent.objects.order_by("-pk").first()
    assert event is not None, "creating a secret and tokens should have left history events"
    join_token, join_key = fleet_services.create_join_token(
        ChangeContext.for_user(admin), name="matrix", max_uses=2
    )
    node, _ = fleet_services.join_node(join_key=join_key, name="matrix-node")
    command = fleet_services.send_command(ChangeContext.for_user(admin), node, "probe")
    catalog_model, variant = _catalog_model(hub_commits[TINY][0])
    job, failed_job, node_model = _download_jobs(admin, node, variant)
    deployment, replica, rollout = _deployment(admin, node)
    world = World(
        users=personas,
        tokens=tokens,
        keys=keys,
        secret=secret,
        event=event,
        node=node,
        join_token=join_token,
        command=command,
        catalog_model=catalog_model,
        variant=variant,
        catalog_head=catalog_hub,
        job=job,
        failed_job=failed_job,
        node_model=node_model,
        deployment=deployment,
        replica=replica,
        rollout=rollout,
    )
    for module in EXTENSIONS:
        if hasattr(module, "setup"):
            module.setup(world)
    return world


def _deployment(admin: User, node: Node) -> tuple[Deployment, Replica, Rollout]:
    """A deployment of another model's GGUF variant (so the catalog model above can still
    be deleted), changed once, with a gone replica and a rollout."""
    ctx = ChangeContext.for_user(admin)
    variant = gguf_variant(qwen("fleet-test/matrix-deployed"))
    deployment = deployment_services.create_deployment(
        ctx, "matrix-deployment", {"variant": variant.pk, "runtime": "llamacpp"}
    )
    deployment = deployment_services.update_spec(ctx, deployment, {"runtime_args": {"parallel": 2}})
    replica = Replica.objects.create(
        deployment=deployment,
        revision=deployment.current_revision,
        slot=0,
        node=node,
        state=ReplicaState.GONE,
    )
    rollout = Rollout.objects.create(deployment=deployment, to_revision=deployment.current_revision)
    return deployment, replica, rollout


def _download_jobs(admin: User, node: Node, variant: Variant) -> tuple[Job, Job, NodeModel]:
    """A queued download of ``variant`` to ``node``, a failed one, and another model's variant
    present on a second node (so the catalog model itself can still be deleted)."""
    ctx = ChangeContext.for_user(admin)
    (job,) = put_variant_on_nodes(ctx, variant, [node], source="upstream")
    failed = job_services.create_job(
        ctx,
        kind=JobKind.DOWNLOAD,
        target_type="models_catalog.variant",
        target_id=variant.pk,
        target_name=str(variant),
        node=node,
    )
    job_services.claim(failed.pk, node.name)
    job_services.finish(failed.pk, node.name, outcome="failed", error="matrix")
    other, _ = fleet_services.join_node(
        join_key=fleet_services.create_join_token(ctx, name="matrix-2")[1], name="matrix-node-2"
    )
    placed_model = CatalogModel.objects.create(
        repo_id="fleet-test/matrix-placed", commit_sha="e" * 40
    )
    placed = Variant.objects.create(model=placed_model, name="original", format="gguf", size=1)
    node_model = NodeModel.objects.create(
        node=other, variant=placed, commit_sha=placed_model.commit_sha, state="present"
    )
    return job, failed, node_model


# --- Extra per-row checks -------------------------------------------------------------------
def _succeeded(response: Any) -> bool:
    """A write went through: 2xx, or a page's redirect that is not to the sign-in page."""
    if response.status_code == 302:
        return not response["Location"].startswith(LOGIN_URL)
    return 200 <= response.status_code < 300


def _json(response: Any) -> Any:
    return json.loads(response.content)


def _results(response: Any) -> list[dict[str, Any]]:
    body = _json(response)
    return body["results"] if isinstance(body, dict) and "results" in body else body


def check_me(response: Any, persona: str, world: World) -> None:
    if response.status_code == 200:
        user = world.users[persona]
        assert user is not None
        body = _json(response)
        assert body["username"] == user.username
        assert body["role"] == user.role
        assert body["token_scope"] is None  # session, not a token


def check_user_created(response: Any, persona: str, world: World) -> None:
    if response.status_code == 201:
        body = _json(response)
        assert body["username"] == "newbie"
        assert body["one_time_password"], "no password given: a one-time password is returned"
        assert "password" not in body


def check_token_list(response: Any, persona: str, world: World) -> None:
    if response.status_code != 200:
        return
    owners = {row["user"] for row in _results(response)}
    user = world.users[persona]
    assert user is not None
    if persona == "admin":
        assert owners == {"alice", "oscar", "victor"}, "admins see everyone's tokens"
    else:
        assert owners == {user.username}, "non-admins see only their own tokens"
    for row in _results(response):
        assert "key" not in row and "key_hash" not in row


def check_token_created(response: Any, persona: str, world: World) -> None:
    if response.status_code == 201:
        body = _json(response)
        assert body["key"].startswith(ApiToken.KEY_PREFIX)
        assert body["user"] == world.users[persona].username  # type: ignore[union-attr]
    elif response.status_code == 400:
        assert "scope" in _json(response)["errors"]


def check_token_revoked(which: str) -> Check:
    def check(response: Any, persona: str, world: World) -> None:
        token = world.tokens["operator" if persona == "admin" else "admin"]
        if which == "own":
            token = world.tokens[persona if persona != "anonymous" else "viewer"]
        token.refresh_from_db()
        revoked = _succeeded(response)
        assert (token.revoked_at is not None) == revoked

    return check


def check_secret_created(response: Any, persona: str, world: World) -> None:
    exists = Secret.objects.filter(name="new-secret").exists()
    assert exists == _succeeded(response)


def check_secret_deleted(response: Any, persona: str, world: World) -> None:
    gone = not Secret.objects.filter(pk=world.secret.pk).exists()
    assert gone == _succeeded(response)


# --- The matrix -----------------------------------------------------------------------------
SECRET_BODY = {"name": "new-secret", "kind": "generic", "value": "s3cr3t-new-value"}

API_ROWS = [
    # /api/v1/me/
    api("me-get", "me", "GET", "/api/v1/me/", **everyone(200), check=check_me),
    # /api/v1/users/: admins only
    api("users-list", "user-list", "GET", "/api/v1/users/", **admin_only(200)),
    api("users-retrieve", "user-detail", "GET", "/api/v1/users/{user}/", **admin_only(200)),
    api(
        "users-create",
        "user-list",
        "POST",
        "/api/v1/users/",
        **admin_only(201),
        body={"username": "newbie", "role": "viewer"},
        check=check_user_created,
    ),
    api(
        "users-partial-update",
        "user-detail",
        "PATCH",
        "/api/v1/users/{user}/",
        **admin_only(200),
        body={"first_name": "Vic"},
    ),
    api("users-put", "user-detail", "PUT", "/api/v1/users/{user}/", **admin_only(405), body={}),
    api("users-delete", "user-detail", "DELETE", "/api/v1/users/{user}/", **admin_only(405)),
    # /api/v1/tokens/: everyone their own; admins everyone's
    api(
        "tokens-list",
        "apitoken-list",
        "GET",
        "/api/v1/tokens/",
        **everyone(200),
        check=check_token_list,
    ),
    api(
        "tokens-create-read",
        "apitoken-list",
        "POST",
        "/api/v1/tokens/",
        **everyone(201),
        body={"name": "new-read", "scope": "read"},
        check=check_token_created,
    ),
    api(
        "tokens-create-write",
        "apitoken-list",
        "POST",
        "/api/v1/tokens/",
        **operators(201, denied=400),
        body={"name": "new-write", "scope": "write"},
        check=check_token_created,
    ),
    api(
        "tokens-retrieve-own",
        "apitoken-detail",
        "GET",
        "/api/v1/tokens/{own_token}/",
        **everyone(200),
    ),
    api(
        "tokens-retrieve-other",
        "apitoken-detail",
        "GET",
        "/api/v1/tokens/{other_token}/",
        **admin_only(200, denied=404),
    ),
    api(
        "tokens-revoke-own",
        "apitoken-detail",
        "DELETE",
        "/api/v1/tokens/{own_token}/",
        **everyone(204),
        check=check_token_revoked("own"),
    ),
    api(
        "tokens-revoke-other",
        "apitoken-detail",
        "DELETE",
        "/api/v1/tokens/{other_token}/",
        **admin_only(204, denied=404),
        check=check_token_revoked("other"),
    ),
    api(
        "tokens-patch",
        "apitoken-detail",
        "PATCH",
        "/api/v1/tokens/{own_token}/",
        **everyone(405),
        body={"name": "renamed"},
    ),
    # /api/v1/secrets/: everyone reads (no values), operators write
    api("secrets-list", "secret-list", "GET", "/api/v1/secrets/", **everyone(200)),
    api("secrets-retrieve", "secret-detail", "GET", "/api/v1/secrets/{secret}/", **everyone(200)),
    api(
        "secrets-create",
        "secret-list",
        "POST",
        "/api/v1/secrets/",
        **operators(201),
        body=SECRET_BODY,
        check=check_secret_created,
    ),
    api(
        "secrets-partial-update",
        "secret-detail",
        "PATCH",
        "/api/v1/secrets/{secret}/",
        **operators(200),
        body={"description": "changed", "value": "rotated-value-1"},
    ),
    api(
        "secrets-delete",
        "secret-detail",
        "DELETE",
        "/api/v1/secrets/{secret}/",
        **operators(204),
        check=check_secret_deleted,
    ),
    # /api/v1/history/: read-only for everyone signed in
    api("history-list", "historyevent-list", "GET", "/api/v1/history/", **everyone(200)),
    api(
        "history-retrieve",
        "historyevent-detail",
        "GET",
        "/api/v1/history/{event}/",
        **everyone(200),
    ),
    api(
        "history-post",
        "historyevent-list",
        "POST",
        "/api/v1/history/",
        **everyone(405),
        body={"verb": "created"},
    ),
    api(
        "history-put",
        "historyevent-detail",
        "PUT",
        "/api/v1/history/{event}/",
        **everyone(405),
        body={"verb": "created"},
    ),
    api(
        "history-patch",
        "historyevent-detail",
        "PATCH",
        "/api/v1/history/{event}/",
        **everyone(405),
        body={"verb": "created"},
    ),
    api(
        "history-delete",
        "historyevent-detail",
        "DELETE",
        "/api/v1/history/{event}/",
        **everyone(405),
    ),
    # Schema and docs
    api("schema", "api-schema", "GET", "/api/schema/", **everyone(200)),
    page("docs", "api-docs", "GET", "/api/docs/", **everyone(200)),
]

# The model mirror speaks the Hub's API: it takes node credentials or API tokens only, so a
# console session (or nothing) is refused; tests/catalog/test_mirror_* cover credentials.
HUB_API_ROWS = [
    api(f"hub-{name}", f"hub-{name}", method, path, **everyone(401))
    for name, method, path in [
        ("model-info", "GET", "/hub/api/models/fleet-test/tiny-llama"),
        ("model-info-revision", "GET", "/hub/api/models/fleet-test/tiny-llama/revision/main"),
        ("tree", "GET", "/hub/api/models/fleet-test/tiny-llama/tree/main"),
        ("paths-info", "POST", "/hub/api/models/fleet-test/tiny-llama/paths-info/main"),
        ("refs", "GET", "/hub/api/models/fleet-test/tiny-llama/refs"),
        ("commits", "GET", "/hub/api/models/fleet-test/tiny-llama/commits/main"),
        ("resolve", "GET", "/hub/fleet-test/tiny-llama/resolve/main/config.json"),
        ("not-found", "GET", "/hub/anything/else"),
    ]
]

FLEET_API_ROWS = [
    api("nodes-list", "node-list", "GET", "/api/v1/nodes/", **everyone(200)),
    api("nodes-retrieve", "node-detail", "GET", "/api/v1/nodes/{node}/", **everyone(200)),
    api(
        "nodes-partial-update",
        "node-detail",
        "PATCH",
        "/api/v1/nodes/{node}/",
        **operators(200),
        body={"cordoned": True, "labels": {"zone": "a"}},
    ),
    api("nodes-put", "node-detail", "PUT", "/api/v1/nodes/{node}/", **operators(405), body={}),
    api("nodes-delete", "node-detail", "DELETE", "/api/v1/nodes/{node}/", **operators(204)),
    api(
        "nodes-rotate-credential",
        "node-rotate-credential",
        "POST",
        "/api/v1/nodes/{node}/rotate-credential/",
        **operators(200),
    ),
    api("nodes-probe", "node-probe", "POST", "/api/v1/nodes/{node}/probe/", **operators(202)),
    api("node-commands-list", "nodecommand-list", "GET", "/api/v1/node-commands/", **everyone(200)),
    api(
        "node-commands-retrieve",
        "nodecommand-detail",
        "GET",
        "/api/v1/node-commands/{command}/",
        **everyone(200),
    ),
    api("join-tokens-list", "jointoken-list", "GET", "/api/v1/join-tokens/", **operators(200)),
    api(
        "join-tokens-create",
        "jointoken-list",
        "POST",
        "/api/v1/join-tokens/",
        **operators(201),
        body={"name": "api-join", "max_uses": 3, "labels": {"rack": "r1"}},
    ),
    api(
        "join-tokens-retrieve",
        "jointoken-detail",
        "GET",
        "/api/v1/join-tokens/{join_token}/",
        **operators(200),
    ),
    api(
        "join-tokens-revoke",
        "jointoken-detail",
        "DELETE",
        "/api/v1/join-tokens/{join_token}/",
        **operators(204),
    ),
    # Agent endpoints take node credentials only: people (signed in or not) are refused.
    api(
        "agent-join-no-token",
        "agent-join",
        "POST",
        "/api/v1/agent/join/",
        **everyone(400),
        anonymous=400,
        body={},
    ),
    api(
        "agent-heartbeat",
        "agent-heartbeat",
        "POST",
        "/api/v1/agent/heartbeat/",
        **everyone(401),
        body={},
    ),
    api(
        "agent-command-result",
        "agent-command-result",
        "POST",
        "/api/v1/agent/commands/{command}/result/",
        **everyone(401),
        body={"result": {}},
    ),
    api(
        "agent-jobs-release",
        "agent-jobs-release",
        "POST",
        "/api/v1/agent/jobs/release/",
        **everyone(401),
    ),
    api(
        "agent-job-claim",
        "agent-job-claim",
        "POST",
        "/api/v1/agent/jobs/{job}/claim/",
        **everyone(401),
        check=lambda response, persona, world: _job_state_is(world, "queued"),
    ),
    api(
        "agent-job-progress",
        "agent-job-progress",
        "POST",
        "/api/v1/agent/jobs/{job}/progress/",
        **everyone(401),
        body={"progress": {"percent": 5}},
    ),
    api(
        "agent-job-finish",
        "agent-job-finish",
        "POST",
        "/api/v1/agent/jobs/{job}/finish/",
        **everyone(401),
        body={"outcome": "succeeded"},
        check=lambda response, persona, world: _job_state_is(world, "queued"),
    ),
    api(
        "agent-replica-status",
        "agent-replica-status",
        "POST",
        "/api/v1/agent/replicas/1/status/",
        **everyone(401),
        body={"state": "healthy"},
    ),
]

PAGE_ROWS = [
    page("overview", "overview", "GET", "/", **everyone(200)),
    page("login", "login", "GET", "/login/", **everyone(Redirect("/")), anonymous=200),
    page("logout", "logout", "POST", "/logout/", **everyone(Redirect(LOGIN_URL))),
    page("healthz", "healthz", "GET", "/healthz", **everyone(200), anonymous=200),
    page("readyz", "readyz", "GET", "/readyz", **everyone(200), anonymous=200),
    page("catalog", "catalog", "GET", "/catalog/", **everyone(200)),
    page("nodes", "nodes", "GET", "/nodes/", **everyone(200)),
    page("jobs", "jobs", "GET", "/jobs/", **everyone(200)),
    page("deployments", "deployments", "GET", "/deployments/", **everyone(200)),
    page("history", "history", "GET", "/history/", **everyone(200)),
    page("history-detail", "history-detail", "GET", "/history/{event}/", **everyone(200)),
    page("settings", "settings", "GET", "/settings/", **everyone(Redirect("/settings/tokens/"))),
    page("settings-tokens", "settings-tokens", "GET", "/settings/tokens/", **everyone(200)),
    page(
        "settings-tokens-create",
        "settings-tokens",
        "POST",
        "/settings/tokens/",
        **everyone(201),
        body={"name": "page-token", "scope": "read"},
    ),
    page(
        "settings-token-revoke-own",
        "settings-token-revoke",
        "POST",
        "/settings/tokens/{own_token}/revoke/",
        **everyone(Redirect("/settings/tokens/")),
        check=check_token_revoked("own"),
    ),
    page(
        "settings-token-revoke-other",
        "settings-token-revoke",
        "POST",
        "/settings/tokens/{other_token}/revoke/",
        **admin_only(Redirect("/settings/tokens/"), denied=404),
        check=check_token_revoked("other"),
    ),
    page("settings-secrets", "settings-secrets", "GET", "/settings/secrets/", **everyone(200)),
    page(
        "settings-secrets-create",
        "settings-secrets",
        "POST",
        "/settings/secrets/",
        **operators(Redirect("/settings/secrets/")),
        body=SECRET_BODY,
        check=check_secret_created,
    ),
    page(
        "settings-secret-edit",
        "settings-secret-edit",
        "GET",
        "/settings/secrets/{secret}/",
        **operators(200),
    ),
    page(
        "settings-secret-edit-post",
        "settings-secret-edit",
        "POST",
        "/settings/secrets/{secret}/",
        **operators(Redirect("/settings/secrets/")),
        body={"kind": "generic", "description": "edited", "version": "{secret_version}"},
    ),
    page(
        "settings-secret-delete",
        "settings-secret-delete",
        "POST",
        "/settings/secrets/{secret}/delete/",
        **operators(Redirect("/settings/secrets/")),
        check=check_secret_deleted,
    ),
    page("settings-password", "settings-password", "GET", "/settings/password/", **everyone(200)),
    page("settings-users", "settings-users", "GET", "/settings/users/", **admin_only(200)),
    page(
        "settings-users-create",
        "settings-users",
        "POST",
        "/settings/users/",
        **admin_only(201),
        body={"username": "pageuser", "role": "viewer"},
    ),
    page(
        "settings-user-edit",
        "settings-user-edit",
        "GET",
        "/settings/users/{user}/",
        **admin_only(200),
    ),
    page(
        "settings-user-edit-post",
        "settings-user-edit",
        "POST",
        "/settings/users/{user}/",
        **admin_only(Redirect("/settings/users/")),
        body={"role": "operator", "is_active": "on", "version": "{user_version}"},
    ),
]

FLEET_PAGE_ROWS = [
    page("nodes-detail", "nodes-detail", "GET", "/nodes/{node}/", **everyone(200)),
    page(
        "nodes-action-cordon",
        "nodes-action",
        "POST",
        "/nodes/{node}/action/",
        **operators(Redirect("/nodes/")),
        body={"action": "cordon"},
    ),
    page("nodes-join-tokens", "nodes-join-tokens", "GET", "/nodes/join-tokens/", **operators(200)),
    page(
        "nodes-join-tokens-create",
        "nodes-join-tokens",
        "POST",
        "/nodes/join-tokens/",
        **operators(201),
        body={"name": "page-join", "max_uses": "2", "expires_in_hours": "24", "labels": "a=b"},
    ),
    page(
        "nodes-join-token-revoke",
        "nodes-join-token-revoke",
        "POST",
        "/nodes/join-tokens/{join_token}/revoke/",
        **operators(Redirect("/nodes/join-tokens/")),
    ),
]


def check_imported(response: Any, persona: str, world: World) -> None:
    exists = CatalogModel.objects.filter(repo_id=TINY_GGUF).exists()
    assert exists == _succeeded(response)


def check_catalog_deleted(response: Any, persona: str, world: World) -> None:
    gone = not CatalogModel.objects.filter(pk=world.catalog_model.pk).exists()
    assert gone == _succeeded(response)


def check_repinned(response: Any, persona: str, world: World) -> None:
    world.catalog_model.refresh_from_db()
    moved = world.catalog_model.commit_sha == world.catalog_head
    assert moved == _succeeded(response)


def check_licence_policy(response: Any, persona: str, world: World) -> None:
    from models_catalog.services import get_allowed_licences

    assert (get_allowed_licences() == ["mit"]) == _succeeded(response)


CATALOG_MODEL = "/api/v1/catalog/models/{catalog_model}/"
CATALOG_VARIANT = "/api/v1/catalog/variants/{variant}/"
CATALOG_API_ROWS = [
    api(
        "catalog-models-list",
        "catalogmodel-list",
        "GET",
        "/api/v1/catalog/models/",
        **everyone(200),
    ),
    api("catalog-models-retrieve", "catalogmodel-detail", "GET", CATALOG_MODEL, **everyone(200)),
    api(
        "catalog-models-import",
        "catalogmodel-list",
        "POST",
        "/api/v1/catalog/models/",
        **operators(201),
        body={"repo_id": TINY_GGUF, "reason": "matrix"},
        check=check_imported,
    ),
    api(
        "catalog-models-patch",
        "catalogmodel-detail",
        "PATCH",
        CATALOG_MODEL,
        **operators(405),
        body={},
    ),
    api(
        "catalog-models-delete",
        "catalogmodel-detail",
        "DELETE",
        CATALOG_MODEL,
        **operators(204),
        check=check_catalog_deleted,
    ),
    api(
        "catalog-models-resync",
        "catalogmodel-resync",
        "POST",
        CATALOG_MODEL + "resync/",
        **operators(200),
    ),
    api(
        "catalog-models-repin",
        "catalogmodel-repin",
        "POST",
        CATALOG_MODEL + "repin/",
        **operators(200),
        body={"commit": "{catalog_head}"},
        check=check_repinned,
    ),
    api(
        "catalog-variants-list", "variant-list", "GET", "/api/v1/catalog/variants/", **everyone(200)
    ),
    api("catalog-variants-retrieve", "variant-detail", "GET", CATALOG_VARIANT, **everyone(200)),
    api(
        "catalog-variants-footprint",
        "variant-footprint",
        "GET",
        CATALOG_VARIANT + "footprint/",
        **everyone(200),
    ),
    api(
        "catalog-variants-fits-on",
        "variant-fits-on",
        "GET",
        CATALOG_VARIANT + "fits-on/",
        **everyone(200),
    ),
    api(
        "catalog-variants-delete",
        "variant-detail",
        "DELETE",
        CATALOG_VARIANT,
        **operators(405),
    ),
    api(
        "catalog-search-api",
        "catalog-search-api",
        "GET",
        "/api/v1/catalog/search/",
        **everyone(200),
    ),
    api(
        "catalog-licence-policy-get",
        "catalog-licence-policy-api",
        "GET",
        "/api/v1/catalog/licence-policy/",
        **everyone(200),
    ),
    api(
        "catalog-licence-policy-put",
        "catalog-licence-policy-api",
        "PUT",
        "/api/v1/catalog/licence-policy/",
        **admin_only(200),
        body={"licences": ["mit"]},
        check=check_licence_policy,
    ),
]

CATALOG_PAGE_ROWS = [
    page(
        "catalog-variant-cache",
        "catalog-variant-cache",
        "POST",
        "/catalog/variants/{variant}/cache/",
        **operators(Redirect("/catalog/")),
    ),
    page(
        "catalog-variant-put",
        "catalog-variant-put",
        "POST",
        "/catalog/variants/{variant}/put-on-nodes/",
        **operators(Redirect("/catalog/")),
        body={"nodes": "{node}", "source": "mirror"},
    ),
    page("catalog-import", "catalog-import", "GET", "/catalog/import/", **operators(200)),
    page(
        "catalog-import-post",
        "catalog-import",
        "POST",
        "/catalog/import/",
        **operators(Redirect("/catalog/")),
        body={"repo_id": TINY_GGUF},
        check=check_imported,
    ),
    page("catalog-search", "catalog-search", "GET", "/catalog/search/", **everyone(200)),
    page("catalog-detail", "catalog-detail", "GET", "/catalog/{catalog_model}/", **everyone(200)),
    page(
        "catalog-resync",
        "catalog-resync",
        "POST",
        "/catalog/{catalog_model}/resync/",
        **operators(200),
    ),
    page(
        "catalog-repin",
        "catalog-repin",
        "POST",
        "/catalog/{catalog_model}/repin/",
        **operators(Redirect("/catalog/")),
        body={"commit": "{catalog_head}", "version": "{catalog_model_version}"},
        check=check_repinned,
    ),
    page(
        "catalog-delete",
        "catalog-delete",
        "POST",
        "/catalog/{catalog_model}/delete/",
        **operators(Redirect("/catalog/")),
        check=check_catalog_deleted,
    ),
    page(
        "catalog-licence-policy",
        "catalog-licence-policy",
        "GET",
        "/catalog/licence-policy/",
        **everyone(200),
    ),
    page(
        "catalog-licence-policy-post",
        "catalog-licence-policy",
        "POST",
        "/catalog/licence-policy/",
        **admin_only(Redirect("/catalog/licence-policy/")),
        body={"licences": "mit", "version": "0"},
        check=check_licence_policy,
    ),
]


def _job_state_is(world: World, state: str) -> None:
    world.job.refresh_from_db()
    assert world.job.state == state


def check_cancelled(response: Any, persona: str, world: World) -> None:
    world.job.refresh_from_db()
    assert (world.job.state == "cancelled") == _succeeded(response)


def check_retried(response: Any, persona: str, world: World) -> None:
    world.failed_job.refresh_from_db()
    assert (world.failed_job.state == "queued") == _succeeded(response)


def check_put_on_nodes(response: Any, persona: str, world: World) -> None:
    # the world holds one queued download of the variant; a put adds none (same node: the
    # queued job is reused) but answers with it, and creates nothing for the refused
    assert Job.objects.filter(kind=JobKind.DOWNLOAD, node=world.node).count() == 2
    if _succeeded(response):
        assert [row["id"] for row in _json(response)] == [world.job.pk]


def check_node_model_deleted(response: Any, persona: str, world: World) -> None:
    gone = not NodeModel.objects.filter(pk=world.node_model.pk).exists()
    assert gone == _succeeded(response)


DOWNLOAD_API_ROWS = [
    # /api/v1/jobs/: everyone reads, operators cancel and retry
    api("jobs-list", "job-list", "GET", "/api/v1/jobs/", **everyone(200)),
    api("jobs-retrieve", "job-detail", "GET", "/api/v1/jobs/{job}/", **everyone(200)),
    api("jobs-post", "job-list", "POST", "/api/v1/jobs/", **operators(405), body={}),
    api("jobs-delete", "job-detail", "DELETE", "/api/v1/jobs/{job}/", **operators(405)),
    api(
        "jobs-cancel",
        "job-cancel",
        "POST",
        "/api/v1/jobs/{job}/cancel/",
        **operators(200),
        check=check_cancelled,
    ),
    api(
        "jobs-retry",
        "job-retry",
        "POST",
        "/api/v1/jobs/{failed_job}/retry/",
        **operators(200),
        check=check_retried,
    ),
    # /api/v1/downloads/: operators put variants on nodes and fill the store
    api(
        "downloads-put",
        "downloads",
        "POST",
        "/api/v1/downloads/",
        **operators(202),
        body={"variant": "{variant}", "nodes": ["{node}"], "source": "upstream"},
        check=check_put_on_nodes,
    ),
    api("downloads-get", "downloads", "GET", "/api/v1/downloads/", **operators(405)),
    api(
        "downloads-cache",
        "downloads-cache",
        "POST",
        "/api/v1/downloads/cache/",
        **operators(202),
        body={"variant": "{variant}"},
    ),
    # /api/v1/node-models/: everyone reads the inventory, operators pin and delete
    api("node-models-list", "nodemodel-list", "GET", "/api/v1/node-models/", **everyone(200)),
    api(
        "node-models-retrieve",
        "nodemodel-detail",
        "GET",
        "/api/v1/node-models/{node_model}/",
        **everyone(200),
    ),
    api(
        "node-models-pin",
        "nodemodel-detail",
        "PATCH",
        "/api/v1/node-models/{node_model}/",
        **operators(200),
        body={"pinned": True},
    ),
    api(
        "node-models-delete",
        "nodemodel-detail",
        "DELETE",
        "/api/v1/node-models/{node_model}/",
        **operators(202),
        check=check_node_model_deleted,
    ),
]

DOWNLOAD_PAGE_ROWS = [
    page("jobs-detail", "jobs-detail", "GET", "/jobs/{job}/", **everyone(200)),
    page(
        "jobs-action-cancel",
        "jobs-action",
        "POST",
        "/jobs/{job}/action/",
        **operators(Redirect("/jobs/")),
        body={"action": "cancel"},
        check=check_cancelled,
    ),
]


def check_deployment_created(response: Any, persona: str, world: World) -> None:
    exists = Deployment.objects.filter(name="matrix-new").exists()
    assert exists == _succeeded(response)


def check_deployment_deleted(response: Any, persona: str, world: World) -> None:
    gone = not Deployment.objects.filter(pk=world.deployment.pk).exists()
    assert gone == _succeeded(response)


def check_deployment_revision(number: int) -> Check:
    def check(response: Any, persona: str, world: World) -> None:
        world.deployment.refresh_from_db()
        changed = world.deployment.current_revision.number == number  # type: ignore[union-attr]
        assert changed == _succeeded(response)

    return check


def check_deployment_field(field: str, value: Any) -> Check:
    def check(response: Any, persona: str, world: World) -> None:
        world.deployment.refresh_from_db()
        assert (getattr(world.deployment, field) == value) == _succeeded(response)

    return check


DEPLOYMENT = "/api/v1/deployments/{deployment}/"
NEW_SPEC = {"variant": "{deploy_variant}", "runtime": "llamacpp"}
DEPLOYMENT_API_ROWS = [
    api("deployments-list", "deployment-list", "GET", "/api/v1/deployments/", **everyone(200)),
    api(
        "deployments-create",
        "deployment-list",
        "POST",
        "/api/v1/deployments/",
        **operators(201),
        body={"name": "matrix-new", "spec": NEW_SPEC, "reason": "matrix"},
        check=check_deployment_created,
    ),
    api("deployments-retrieve", "deployment-detail", "GET", DEPLOYMENT, **everyone(200)),
    api(
        "deployments-patch",
        "deployment-detail",
        "PATCH",
        DEPLOYMENT,
        **operators(200),
        body={"spec": {"runtime_args": {"parallel": 4}}},
        check=check_deployment_revision(3),
    ),
    api("deployments-put", "deployment-detail", "PUT", DEPLOYMENT, **operators(405), body={}),
    api(
        "deployments-delete",
        "deployment-detail",
        "DELETE",
        DEPLOYMENT,
        **operators(204),
        check=check_deployment_deleted,
    ),
    api(
        "deployments-revisions",
        "deployment-revisions",
        "GET",
        DEPLOYMENT + "revisions/",
        **everyone(200),
    ),
    api(
        "deployments-autoscaling",
        "deployment-autoscaling",
        "GET",
        DEPLOYMENT + "autoscaling/",
        **everyone(200),
    ),
    api(
        "deployments-scale",
        "deployment-scale",
        "POST",
        DEPLOYMENT + "scale/",
        **operators(200),
        body={"replicas": 2},
        check=check_deployment_field("desired_replicas", 2),
    ),
    api(
        "deployments-pause",
        "deployment-pause",
        "POST",
        DEPLOYMENT + "pause/",
        **operators(200),
        check=check_deployment_field("state", "paused"),
    ),
    api(
        "deployments-resume", "deployment-resume", "POST", DEPLOYMENT + "resume/", **operators(200)
    ),
    api(
        "deployments-stop",
        "deployment-stop",
        "POST",
        DEPLOYMENT + "stop/",
        **operators(200),
        check=check_deployment_field("state", "stopped"),
    ),
    api("deployments-start", "deployment-start", "POST", DEPLOYMENT + "start/", **operators(200)),
    api(
        "deployments-rollback",
        "deployment-rollback",
        "POST",
        DEPLOYMENT + "rollback/",
        **operators(200),
        body={"revision": 1},
        check=check_deployment_revision(3),
    ),
    api("replicas-list", "replica-list", "GET", "/api/v1/replicas/", **everyone(200)),
    api(
        "replicas-retrieve", "replica-detail", "GET", "/api/v1/replicas/{replica}/", **everyone(200)
    ),
    api("replicas-post", "replica-list", "POST", "/api/v1/replicas/", **operators(405), body={}),
    # logs can hold prompts: operators only, reading included; the world's replica is gone,
    # so fetching answers 409 while its kept lines read fine
    api(
        "replicas-logs-get",
        "replica-logs",
        "GET",
        "/api/v1/replicas/{replica}/logs/",
        **operators(200),
    ),
    api(
        "replicas-logs-post",
        "replica-logs",
        "POST",
        "/api/v1/replicas/{replica}/logs/",
        **operators(409),
        body={"tail": 50},
    ),
    # try it spends compute: operators only (no serving replica in the world: 409)
    api(
        "deployments-try",
        "deployment-try",
        "POST",
        DEPLOYMENT + "try/",
        **operators(409),
        body={"prompt": "Hello", "max_tokens": 4},
    ),
    api("rollouts-list", "rollout-list", "GET", "/api/v1/rollouts/", **everyone(200)),
    api(
        "rollouts-retrieve", "rollout-detail", "GET", "/api/v1/rollouts/{rollout}/", **everyone(200)
    ),
    api(
        "rollouts-delete",
        "rollout-detail",
        "DELETE",
        "/api/v1/rollouts/{rollout}/",
        **operators(405),
    ),
]

DEPLOYMENT_FORM = {
    "variant": "{deploy_variant}",
    "runtime": "llamacpp",
    "runtime_args": '{{"parallel": 3}}',  # doubled braces: the body is str.format()ed
    "replicas": "1",
    "placement_strategy": "spread",
    "max_surge": "1",
    "max_unavailable": "0",
    "min_healthy_seconds": "10",
    "healthy_deadline_seconds": "300",
    "progress_deadline_seconds": "600",
    "auto_revert": "on",
    "revision_history_limit": "10",
}
DEPLOYMENT_PAGE_ROWS = [
    page(
        "deployments-create-page",
        "deployments-create",
        "GET",
        "/deployments/new/",
        **operators(200),
    ),
    page(
        "deployments-create-post",
        "deployments-create",
        "POST",
        "/deployments/new/",
        **operators(Redirect("/deployments/")),
        body={**DEPLOYMENT_FORM, "name": "matrix-new"},
        check=check_deployment_created,
    ),
    page(
        "deployments-detail",
        "deployments-detail",
        "GET",
        "/deployments/{deployment}/",
        **everyone(200),
    ),
    page(
        "deployments-edit",
        "deployments-edit",
        "GET",
        "/deployments/{deployment}/edit/",
        **operators(200),
    ),
    page(
        "deployments-edit-post",
        "deployments-edit",
        "POST",
        "/deployments/{deployment}/edit/",
        **operators(Redirect("/deployments/")),
        body={**DEPLOYMENT_FORM, "version": "{deployment_version}"},
        check=check_deployment_revision(3),
    ),
    page(
        "deployments-action-pause",
        "deployments-action",
        "POST",
        "/deployments/{deployment}/action/",
        **operators(Redirect("/deployments/")),
        body={"action": "pause"},
        check=check_deployment_field("state", "paused"),
    ),
    page(
        "deployments-replica-logs-page",
        "deployments-replica-logs",
        "POST",
        "/deployments/replicas/{replica}/logs/",
        **operators(200),
    ),
    page(
        "deployments-replica-logs-download",
        "deployments-replica-logs-download",
        "GET",
        "/deployments/replicas/{replica}/logs/download/",
        **operators(200),
    ),
    page(
        "deployments-try-page",
        "deployments-try",
        "POST",
        "/deployments/{deployment}/try/",
        **operators(409),
        body={"prompt": "Hello", "max_tokens": "4"},
    ),
    page(
        "deployments-action-delete",
        "deployments-action",
        "POST",
        "/deployments/{deployment}/action/",
        **operators(Redirect("/deployments/")),
        body={"action": "delete"},
        check=check_deployment_deleted,
    ),
]

ROWS = (
    API_ROWS
    + HUB_API_ROWS
    + FLEET_API_ROWS
    + CATALOG_API_ROWS
    + DOWNLOAD_API_ROWS
    + DEPLOYMENT_API_ROWS
    + PAGE_ROWS
    + FLEET_PAGE_ROWS
    + CATALOG_PAGE_ROWS
    + DOWNLOAD_PAGE_ROWS
    + DEPLOYMENT_PAGE_ROWS
    + [row for module in EXTENSIONS for row in module.ROWS]
)
COVERED_ROUTES = frozenset(row.route for row in ROWS)
assert len({row.id for row in ROWS}) == len(ROWS), "row ids must be unique"


def _fill(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return value.format(**values)
    if isinstance(value, dict):
        return {key: _fill(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, values) for item in value]
    return value


def _keys(data: Any) -> Iterator[str]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield key
            yield from _keys(value)
    elif isinstance(data, list):
        for item in data:
            yield from _keys(item)


def _assert_expected(response: Any, expected: Expected, path: str) -> None:
    if isinstance(expected, Redirect):
        assert response.status_code == 302, (
            f"expected a redirect to {expected.to}, got {response.status_code}: "
            f"{response.content[:300]!r}"
        )
        location = response["Location"]
        assert location.startswith(expected.to), f"redirected to {location}, not {expected.to}"
        if expected is LOGIN:
            assert path in location, f"the login redirect {location} should carry next={path}"
    else:
        assert response.status_code == expected, (
            f"expected {expected}, got {response.status_code}: {response.content[:300]!r}"
        )


@pytest.mark.django_db
@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.id)
def test_permission_matrix(row: Row, persona: str, world: World, api_client_for) -> None:
    values = world.placeholders(persona)
    path = row.path.format(**values)
    assert resolve(path).url_name == row.route, f"{path} does not resolve to {row.route}"
    client: APIClient = api_client_for(persona)
    kwargs: dict[str, Any] = {}
    if row.body is not None:
        kwargs["data"] = _fill(row.body, values)
        kwargs["format"] = "json" if row.api else "multipart"
    response = getattr(client, row.method.lower())(path, **kwargs)

    _assert_expected(response, row.expected[persona], path)

    # Invariants on every answer: no secret material, anonymous API calls are challenged.
    content = response.content if not getattr(response, "streaming", False) else b""
    assert SECRET_VALUE.encode() not in content
    assert world.secret.ciphertext.encode() not in content
    if row.api and persona == "anonymous" and response.status_code == 401:
        assert response["WWW-Authenticate"].startswith("Bearer"), "401 must name the scheme"
    if (
        row.route.startswith("secret-")
        and response.get("Content-Type", "").startswith("application/json")
        and response.content
    ):
        keys = set(_keys(_json(response)))
        assert not keys & {"value", "ciphertext"}, f"secret answer leaks {keys}"
    if row.check is not None:
        row.check(response, persona, world)


# --- Token scope --------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenRow:
    id: str
    route: str
    method: str
    path: str
    scope: str | None  # the operator's token scope sent as Bearer; None = no header
    expected: int
    query: str = ""  # a query string carrying the key ({key}), instead of the header
    body: dict[str, Any] | None = None
    detail_contains: str = ""


TOKEN_ROWS = [
    TokenRow("read-token-reads", "secret-list", "GET", "/api/v1/secrets/", TokenScope.READ, 200),
    TokenRow(
        "read-token-cannot-write",
        "secret-list",
        "POST",
        "/api/v1/secrets/",
        TokenScope.READ,
        403,
        body=SECRET_BODY,
        detail_contains="read scope",
    ),
    TokenRow(
        "write-token-writes",
        "secret-list",
        "POST",
        "/api/v1/secrets/",
        TokenScope.WRITE,
        201,
        body=SECRET_BODY,
    ),
    TokenRow("me-with-token", "me", "GET", "/api/v1/me/", TokenScope.READ, 200),
    TokenRow("token-in-query", "me", "GET", "/api/v1/me/", None, 401, query="?token={key}"),
    TokenRow(
        "access-token-in-query", "me", "GET", "/api/v1/me/", None, 401, query="?access_token={key}"
    ),
    TokenRow(
        "token-in-query-write",
        "secret-list",
        "POST",
        "/api/v1/secrets/",
        None,
        401,
        query="?token={key}",
        body=SECRET_BODY,
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize("row", TOKEN_ROWS, ids=lambda row: row.id)
def test_token_scope(row: TokenRow, operator_user: User) -> None:
    _, read_key = services.create_token(
        ChangeContext.for_user(operator_user), owner=operator_user, name="r", scope="read"
    )
    _, write_key = services.create_token(
        ChangeContext.for_user(operator_user), owner=operator_user, name="w", scope="write"
    )
    client = APIClient()
    if row.scope is not None:
        key = read_key if row.scope == TokenScope.READ else write_key
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    path = row.path + row.query.format(key=write_key)
    assert resolve(row.path).url_name == row.route
    kwargs: dict[str, Any] = {"format": "json"}
    if row.body is not None:
        kwargs["data"] = row.body
    response = getattr(client, row.method.lower())(path, **kwargs)
    assert response.status_code == row.expected, response.content
    if row.detail_contains:
        assert row.detail_contains in response.json()["detail"]
    if row.route == "me" and row.expected == 200:
        assert response.json()["token_scope"] == row.scope
    if row.expected == 401:
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert not Secret.objects.filter(name="new-secret").exists()


# --- Completeness ---------------------------------------------------------------------------
def _walk(resolvers: list[Any], prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for entry in resolvers:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry


def test_matrix_covers_every_route() -> None:
    api_routes: dict[str, str] = {}
    page_routes: dict[str, str] = {}
    unnamed: list[str] = []
    for route, pattern in _walk(get_resolver().url_patterns):
        if not pattern.name:
            unnamed.append(route)
            continue
        is_api = route.lstrip("^").startswith(("api/", "hub/"))
        target = api_routes if is_api else page_routes
        target.setdefault(pattern.name, route)
    assert not unnamed, f"routes without a name cannot be tracked by the matrix: {unnamed}"
    assert api_routes, "the resolver walk found no API routes"
    missing = {
        name: route
        for name, route in {**api_routes, **page_routes}.items()
        if name not in COVERED_ROUTES
    }
    assert not missing, (
        "routes missing from the permission matrix (add rows to API_ROWS / PAGE_ROWS in "
        f"tests/core/test_permissions_matrix.py, or to a tests/<app>/matrix_rows.py): {missing}"
    )
    stale = COVERED_ROUTES - set(api_routes) - set(page_routes)
    assert not stale, f"matrix rows name routes that do not exist: {sorted(stale)}"


def test_personas_have_the_expected_roles(personas) -> None:
    assert personas["admin"].role == Role.ADMIN
    assert personas["operator"].role == Role.OPERATOR
    assert personas["viewer"].role == Role.VIEWER
    assert personas["anonymous"] is None
