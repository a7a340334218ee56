"""What schemathesis found, kept as tests: bodies are JSON only, instants outside what the
database holds are a 400, fields the schema calls objects refuse other JSON, and answers
carry null or blank where the schema says they may (tests/security/test_schemathesis.py)."""

from __future__ import annotations

import pytest
from django.conf import settings
from drf_spectacular.generators import SchemaGenerator

from core.history import ChangeContext
from core.models import User
from fleet import services as fleet_services

pytestmark = pytest.mark.django_db


def test_a_form_body_is_refused_with_415(api_client_for):
    client = api_client_for("admin")
    answer = client.post(
        "/api/v1/users/",
        "username=formed&role=viewer",
        content_type="application/x-www-form-urlencoded",
    )
    assert answer.status_code == 415, answer.content
    assert "application/x-www-form-urlencoded" in answer.json()["detail"]
    assert not User.objects.filter(username="formed").exists()


@pytest.mark.parametrize(
    "since",
    ["0895-07-10T02:14:41.439756-20:30", "2026-12-08T10:00:00+23:59"],
)
def test_history_since_with_an_offset_postgresql_refuses_is_answered(api_client_for, since):
    answer = api_client_for("viewer").get("/api/v1/history/", {"since": since})
    assert answer.status_code == 200, answer.content


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_history_since_outside_years_1_to_9999_is_a_400(api_client_for, since):
    answer = api_client_for("viewer").get("/api/v1/history/", {"since": since})
    assert answer.status_code == 400, answer.content
    assert "years 1 and 9999" in str(answer.json())


@pytest.mark.parametrize("spec", [7, "levels", [1, 2], None])
def test_a_profile_spec_that_is_not_an_object_is_a_400(api_client_for, spec):
    client = api_client_for("operator")
    created = client.post(
        "/api/v1/benchmarks/profiles/", {"name": "p-shape", "spec": {"levels": [1]}}
    )
    assert created.status_code == 201, created.content
    url = f"/api/v1/benchmarks/profiles/{created.json()['id']}/"
    answer = client.patch(url, {"spec": spec}, format="json")
    assert answer.status_code == 400, answer.content
    assert "spec" in answer.json()["errors"] or "spec" in str(answer.json())
    assert client.get(url).json()["spec"]["levels"] == [1]


def test_suite_cases_that_are_not_a_list_are_a_400(api_client_for):
    answer = api_client_for("operator").post(
        "/api/v1/benchmarks/suites/", {"name": "s-shape", "cases": {"prompt": "hi"}}
    )
    assert answer.status_code == 400, answer.content
    assert "cases" in str(answer.json())


def test_a_join_token_of_a_deleted_user_shows_created_by_null(api_client_for, operator_user):
    token, _ = fleet_services.create_join_token(ChangeContext.system("tests"), name="sys")
    answer = api_client_for("admin").get(f"/api/v1/join-tokens/{token.pk}/")
    assert answer.status_code == 200 and answer.json()["created_by"] is None


def test_the_schema_allows_what_the_answers_carry():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    components = schema["components"]["schemas"]
    assert components["JoinToken"]["properties"]["created_by"].get("nullable") is True
    assert components["CatalogModelDetail"]["properties"]["imported_by"].get("nullable") is True
    email = components["User"]["properties"]["email"]
    assert {"type": "string", "maxLength": 0} in email["anyOf"]
    assert settings.REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"] == [
        "rest_framework.parsers.JSONParser"
    ]


@pytest.mark.parametrize("field", ["requests_per_minute", "tokens_per_minute"])
def test_a_gateway_key_limit_beyond_the_column_is_a_400(api_client_for, field):
    answer = api_client_for("admin").post(
        "/api/v1/gateway/keys/", {"name": f"big-{field}", field: 2**31}, format="json"
    )
    assert answer.status_code == 400, answer.content
    assert field in str(answer.json())
