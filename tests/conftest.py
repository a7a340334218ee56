"""Shared fixtures: fixed personas (admin, operator, viewer, anonymous) and API clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from rest_framework.test import APIClient

from core import services
from core.choices import Role, TokenScope
from core.history import ChangeContext
from core.models import User
from tests.factories import PASSWORD, UserFactory

pytest_plugins = ["tests.hardening", "tests.hubserver.fixtures", "tests.runtimes.fixtures"]

PERSONAS = ("admin", "operator", "viewer", "anonymous")


@pytest.fixture
def admin_user(db) -> User:
    return UserFactory(username="alice", role=Role.ADMIN)


@pytest.fixture
def operator_user(db) -> User:
    return UserFactory(username="oscar", role=Role.OPERATOR)


@pytest.fixture
def viewer_user(db) -> User:
    return UserFactory(username="victor", role=Role.VIEWER)


@pytest.fixture
def personas(admin_user, operator_user, viewer_user) -> dict[str, User | None]:
    return {
        "admin": admin_user,
        "operator": operator_user,
        "viewer": viewer_user,
        "anonymous": None,
    }


@pytest.fixture
def api_client_for(personas) -> Callable[[str], APIClient]:
    """An API client signed in (session) as the named persona; 'anonymous' is signed out."""

    def make(persona: str) -> APIClient:
        client = APIClient()
        user = personas[persona]
        if user is not None:
            client.force_login(user)
        return client

    return make


@pytest.fixture
def token_for(db) -> Callable[..., str]:
    """Create a real API token for a user and return its key."""

    def make(user: User, scope: str = TokenScope.WRITE, name: str = "test") -> str:
        _, key = services.create_token(
            ChangeContext.for_user(user), owner=user, name=name, scope=scope
        )
        return key

    return make


@pytest.fixture
def bearer_client() -> Callable[[str], APIClient]:
    def make(key: str) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        return client

    return make


@pytest.fixture
def password() -> str:
    return PASSWORD


@pytest.fixture
def purge_broker() -> Iterator[None]:
    """After the test, the orders its API calls queued (reconciles, downloads, jobs) leave the
    broker: no worker runs for them here, and no later test's worker starts on rows this
    test's database no longer has."""
    yield
    from config.celery import app

    app.control.purge()
