"""The benchmarks API: bad input is a 400 naming the field; figures export as CSV and JSON."""

from __future__ import annotations

import csv
import io

import pytest

from benchmarks import services
from core.history import ChangeContext
from core.models import HistoryEvent
from deployments import services as deployment_services
from deployments.spec import SpecError, normalize_spec
from tests.benchmarks.support import benchmark_run
from tests.deployments.builders import gguf_variant, qwen

pytestmark = pytest.mark.django_db

API = "/api/v1/benchmarks/"


@pytest.fixture
def operator(api_client_for):
    return api_client_for("operator")


def errors_of(response) -> dict:
    assert response.status_code == 400, response.content
    return response.json()["errors"]


def test_profile_bad_spec_names_the_field(operator):
    answer = operator.post(
        API + "profiles/", {"name": "p", "spec": {"levels": [1, -2]}}, format="json"
    )
    assert "spec.levels[1]" in errors_of(answer)
    answer = operator.post(
        API + "profiles/", {"name": "p", "spec": {"prompt_set": "x"}}, format="json"
    )
    assert "spec.prompt_set" in errors_of(answer)


def test_profile_round_trip_with_history(operator):
    answer = operator.post(
        API + "profiles/", {"name": "sweep", "spec": {"levels": [1, 2, 4, 8]}}, format="json"
    )
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["spec"]["levels"] == [1, 2, 4, 8] and body["spec"]["stream"] is True
    changed = operator.patch(
        f"{API}profiles/{body['id']}/",
        {"spec": {"output_tokens": 128}},
        format="json",
        HTTP_IF_MATCH='"1"',
    )
    assert changed.status_code == 200 and changed.json()["spec"]["output_tokens"] == 128
    stale = operator.patch(
        f"{API}profiles/{body['id']}/",
        {"spec": {"output_tokens": 8}},
        format="json",
        HTTP_IF_MATCH='"1"',
    )
    assert stale.status_code == 412
    verbs = set(
        HistoryEvent.objects.filter(target_type="benchmarks.benchmarkprofile").values_list(
            "verb", flat=True
        )
    )
    assert verbs == {"created", "updated"}
    assert (
        operator.post(API + "profiles/", {"name": "sweep", "spec": {}}, format="json").status_code
        == 409
    )


@pytest.mark.parametrize(
    ("cases", "field"),
    [
        ([], "cases"),
        ([{"name": "a", "prompt": "x"}], "cases[0].check"),
        (
            [{"name": "a", "prompt": "x", "check": {"type": "regex", "pattern": "(("}}],
            "cases[0].check.pattern",
        ),
        (
            [{"name": "a", "prompt": "x", "check": {"type": "json_schema", "schema": {"type": 3}}}],
            "cases[0].check.schema",
        ),
    ],
)
def test_suite_bad_input_is_a_400_naming_case_and_field(operator, cases, field):
    answer = operator.post(API + "suites/", {"name": "s", "cases": cases}, format="json")
    assert field in errors_of(answer)


def test_runs_need_a_target_that_can_answer(operator, personas):
    ctx = ChangeContext.for_user(personas["admin"])
    services.create_profile(ctx, name="p1", spec={})
    variant = gguf_variant(qwen("fleet-test/bench-api"))
    deployment_services.create_deployment(
        ctx, "quiet", {"variant": variant.pk, "runtime": "llamacpp"}
    )
    assert "deployment" in errors_of(operator.post(API + "runs/", {"profile": "p1"}, format="json"))
    assert "deployment" in errors_of(
        operator.post(API + "runs/", {"profile": "p1", "deployment": "nope"}, format="json")
    )
    answer = operator.post(API + "runs/", {"profile": "p1", "deployment": "quiet"}, format="json")
    assert "no available replica" in answer.json()["detail"]
    assert "profile" in errors_of(
        operator.post(API + "runs/", {"profile": "nope", "deployment": "quiet"}, format="json")
    )
    assert "replicas" in errors_of(
        operator.post(API + "runs/", {"profile": "p1", "replicas": [99999]}, format="json")
    )


def test_export_csv_and_json_and_compare(operator, personas):
    ctx = ChangeContext.for_user(personas["admin"])
    profile = services.create_profile(ctx, name="p2", spec={"levels": [1, 2]})
    variant = gguf_variant(qwen("fleet-test/bench-export"))
    deployment = deployment_services.create_deployment(
        ctx, "measured", {"variant": variant.pk, "runtime": "llamacpp"}
    )
    first, second = benchmark_run(deployment, profile), benchmark_run(deployment, profile)
    answer = operator.get(API + "runs/export/", {"ids": f"{first.pk},{second.pk}", "file": "csv"})
    assert answer.status_code == 200 and answer["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.content.decode())))
    assert len(rows) == 4 and {r["level"] for r in rows} == {"concurrency 1", "concurrency 2"}
    assert float(rows[0]["output_tokens_per_s"]) > 0 and float(rows[0]["ttft_p50_ms"]) > 0
    assert rows[0]["tokens_from"] == "usage"
    answer = operator.get(API + "runs/export/", {"ids": str(first.pk)})
    assert answer.json()[0]["results"][0]["levels"][0]["latency_ms"]["p99"] > 0
    compared = operator.get(API + "runs/compare/", {"ids": f"{first.pk},{second.pk}"}).json()
    assert len(compared["series"]) == 2 and compared["series"][0]["x"] == [1, 2]
    assert "ids" in errors_of(operator.get(API + "runs/compare/", {"ids": "x"}))
    assert "ids" in errors_of(operator.get(API + "runs/compare/", {"ids": "99999"}))


def test_gates_in_the_strategy_are_checked(personas):
    ctx = ChangeContext.for_user(personas["admin"])
    services.create_profile(ctx, name="gate-profile", spec={})
    variant = gguf_variant(qwen("fleet-test/bench-gates"))
    base = {"variant": variant.pk, "runtime": "llamacpp"}

    def problems(gates):
        with pytest.raises(SpecError) as caught:
            normalize_spec({**base, "strategy": {"gates": gates}})
        return caught.value.flat

    assert "strategy.gates.benchmark" in problems({"benchmark": "missing"})
    assert "strategy.gates.suites" in problems({"suites": ["missing"]})
    assert "strategy.gates.benchmark" in problems({})
    assert "strategy.gates.thresholds" in problems(
        {"benchmark": "gate-profile", "thresholds": {"min_pass_rate": 0.5}}
    )
    spec = normalize_spec({**base, "strategy": {"gates": {"benchmark": "gate-profile"}}})
    assert spec["strategy"]["gates"]["thresholds"] == {
        "min_tokens_per_s_ratio": 0.95,
        "max_p99_latency_ratio": 1.10,
    }
    assert "gates" not in normalize_spec(base)["strategy"]  # no gates unless asked


def test_variant_comparison_shows_the_latest_serving_figures(operator, personas):
    ctx = ChangeContext.for_user(personas["admin"])
    profile = services.create_profile(ctx, name="p3", spec={"levels": [1, 2]})
    variant = gguf_variant(qwen("fleet-test/bench-compare"))
    deployment = deployment_services.create_deployment(
        ctx, "compared", {"variant": variant.pk, "runtime": "llamacpp"}
    )
    benchmark_run(deployment, profile, variant=variant.pk)  # older, same node kind
    newest = benchmark_run(deployment, profile, variant=variant.pk)
    gpu = benchmark_run(deployment, profile, variant=variant.pk, node_kind="NVIDIA H100 ×1")
    answer = operator.get(f"/api/v1/quantize/comparison/{variant.model_id}/")
    assert answer.status_code == 200, answer.content
    [row] = [v for v in answer.json()["variants"] if v["id"] == variant.pk]
    by_kind = {f["node_kind"]: f for f in row["serving"]}
    assert set(by_kind) == {"CPU (2 cores)", "NVIDIA H100 ×1"}
    assert (
        by_kind["CPU (2 cores)"]["run"] == newest.pk and by_kind["NVIDIA H100 ×1"]["run"] == gpu.pk
    )
    best = max(newest.results[0]["levels"], key=lambda lv: lv["output_tokens_per_s"])
    assert by_kind["CPU (2 cores)"]["output_tokens_per_s"] == best["output_tokens_per_s"]
