"""The suite runs against the real services; a missing one fails here, loudly."""

from __future__ import annotations

import docker
import pytest
import redis
from django.conf import settings
from django.db import connection


@pytest.mark.django_db
def test_database_is_postgresql():
    assert connection.vendor == "postgresql", "the test suite must run on PostgreSQL"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        assert int(cursor.fetchone()[0]) >= 140000


def test_redis_is_reachable():
    assert settings.REDIS_URL, "REDIS_URL must be set for the test suite"
    assert redis.Redis.from_url(settings.REDIS_URL).ping() is True
    assert settings.CELERY_BROKER_URL == settings.REDIS_URL


def test_docker_engine_is_reachable():
    client = docker.from_env()
    try:
        assert client.ping() is True
        assert client.version()["ApiVersion"]
    finally:
        client.close()
