"""Autoscaling: the policy's validation (400 per field), the decision rules (windows, panic,
stabilization, rates, idle to zero), the refusal of a manual scale, the autoscaler's history
events, and the status endpoint."""

from __future__ import annotations

from typing import Any

import pytest

from core.history import ChangeContext
from core.models import HistoryEvent
from deployments import autoscaler, services, traffic
from deployments.autoscaler import State, decide
from deployments.autoscaling import policy_of
from deployments.models import Deployment
from deployments.spec import SpecError, normalize_spec
from tests.deployments.builders import gguf_variant, spec

POLICY = {"enabled": True, "min_replicas": 1, "max_replicas": 4, "target": 2}


def policy(**changes: Any) -> Any:
    return policy_of({"autoscaling": {**POLICY, **changes}})


def errors_of(**autoscaling: Any) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        normalize_spec(spec(gguf_variant(), autoscaling={"enabled": True, **autoscaling}))
    return caught.value.flat


# --- Validation ---------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "key", "words"),
    [
        ({"min_replicas": 5, "max_replicas": 2}, "autoscaling.min_replicas", "above max_replicas"),
        ({"max_replicas": 0, "min_replicas": 0}, "autoscaling.max_replicas", "At least 1"),
        ({"target": 0}, "autoscaling.target", "above 0"),
        ({"target": -3}, "autoscaling.target", "above 0"),
        ({"metric": "cpu"}, "autoscaling.target", "Give a target"),
        ({"idle_seconds": 30}, "autoscaling.idle_seconds", "stable window (60 s)"),
        ({"panic_window_seconds": 60}, "autoscaling.panic_window_seconds", "shorter"),
        ({"metric": "gpu", "target": 70}, "autoscaling.metric", "use no GPU"),
        ({"metric": "tokens"}, "autoscaling.metric", "not a valid choice"),
        ({"colour": "red"}, "autoscaling.colour", "Unknown field"),
    ],
)
def test_bad_policies_are_refused_per_field(fields: dict[str, Any], key: str, words: str):
    errors = errors_of(**fields)
    assert key in errors, errors
    assert words in errors[key]


@pytest.mark.django_db
def test_a_metric_the_runtime_does_not_expose_names_runtime_and_metric():
    raw = {**spec(gguf_variant(), runtime="ollama"), "autoscaling": {**POLICY, "metric": "queue"}}
    with pytest.raises(SpecError) as caught:
        normalize_spec(raw)
    message = caught.value.flat["autoscaling.metric"]
    assert "Ollama" in message and "requests_waiting" in message


@pytest.mark.django_db
def test_a_good_policy_fills_defaults_and_clamps_the_count():
    normalized = normalize_spec(spec(gguf_variant(), replicas=9, autoscaling=POLICY))
    assert normalized["replicas"] == 4
    assert normalized["autoscaling"]["stable_window_seconds"] == 60
    assert normalize_spec(normalized) == normalized
    queue = normalize_spec(spec(gguf_variant(), autoscaling={**POLICY, "metric": "queue"}))
    assert queue["autoscaling"]["metric"] == "queue"  # llama.cpp exposes requests_waiting


def test_a_spec_from_before_autoscaling_reads_as_off():
    assert policy_of({"variant": 1, "runtime": "llamacpp"}).enabled is False


# --- Decisions ----------------------------------------------------------------------------
def fed(values: list[tuple[float, float]], **state: Any) -> State:
    return State(
        samples=[[t, v] for t, v in values], last_active=state.pop("last_active", 1), **state
    )


def test_stable_window_mean_over_target():
    p = policy(panic_threshold=10)
    state = fed([(t, 6.0) for t in range(50, 100)])
    decision = decide(p, state, 100, current=1, ready=1)
    assert (decision.desired, decision.mode) == (3, "stable")


def test_panic_on_a_burst_and_never_down_while_panicking():
    p = policy(max_replicas=10)
    state = fed([(t, 0.0) for t in range(40, 95)] + [(t, 12.0) for t in range(95, 101)])
    decision = decide(p, state, 100, current=1, ready=1)
    assert decision.mode == "panic" and decision.desired == 6  # 12 / 2, panic window
    state.samples = [[t, 0.0] for t in range(41, 102)]
    calm = decide(p, state, 101, current=6, ready=6)
    assert calm.mode == "panic" and calm.desired == 6  # panic holds for a stable window
    state.samples = [[t, 0.0] for t in range(41, 162)]
    after = decide(p, state, 100 + 61, current=6, ready=6)
    assert after.mode == "stable"


def test_scale_up_rate_limits_a_step():
    p = policy(max_replicas=64, max_scale_up_rate=2, panic_threshold=100)
    state = fed([(t, 100.0) for t in range(50, 100)])
    assert decide(p, state, 100, current=2, ready=2).desired == 4


def test_scale_down_waits_for_the_stabilization_window_and_is_rate_limited():
    p = policy(scale_down_stabilization_seconds=30, max_replicas=8, panic_threshold=100)
    state = fed([(t, 16.0) for t in range(1, 100)])
    assert decide(p, state, 100, current=8, ready=8).desired == 8
    state.samples = [[t, 2.0] for t in range(41, 110)]
    assert decide(p, state, 110, current=8, ready=8).desired == 8  # 8 wanted 10 s ago
    state.samples = [[t, 2.0] for t in range(81, 140)]
    assert decide(p, state, 140, current=8, ready=8).desired == 4  # halved at most
    assert decide(p, state, 141, current=4, ready=4).desired == 2


def test_idle_goes_to_zero_only_with_min_zero_and_a_request_wakes_it():
    p = policy(min_replicas=0, idle_seconds=60, scale_down_stabilization_seconds=0)
    quiet = fed([(t, 0.0) for t in range(40, 100)], last_active=50)
    assert decide(p, quiet, 100, current=1, ready=1).desired == 1  # 50 s idle: not yet
    assert decide(p, quiet, 111, current=1, ready=1).desired == 0
    one = policy(idle_seconds=60)
    assert decide(one, quiet, 111, current=1, ready=1).desired == 1  # min 1 stays
    woken = fed([(t, 0.0) for t in range(40, 100)] + [(100, 1.0)], last_active=100)
    decision = decide(p, woken, 100.5, current=0, ready=0)
    assert (decision.desired, decision.mode) == (1, "wake")


def test_no_signal_holds_the_count():
    decision = decide(policy(), State(), 100, current=3, ready=3)
    assert (decision.desired, decision.mode) == (3, "hold")


# --- Services and the tick ----------------------------------------------------------------
@pytest.fixture
def client(api_client_for: Any) -> Any:
    return api_client_for("operator")


@pytest.fixture
def autoscaled(admin_user: Any) -> Deployment:
    ctx = ChangeContext.for_user(admin_user)
    deployment = services.create_deployment(ctx, "auto", spec(gguf_variant(), autoscaling=POLICY))
    return deployment


@pytest.mark.django_db
def test_a_manual_scale_is_refused_naming_the_policy(autoscaled: Deployment):
    ctx = ChangeContext.system("test")
    with pytest.raises(services.ConflictError) as caught:
        services.scale(ctx, autoscaled, 3)
    assert "autoscaled 1–4" in caught.value.message and "min_replicas" in caught.value.message
    with pytest.raises(services.ConflictError):
        services.update_spec(ctx, autoscaled, {"replicas": 3})
    # turning it off makes manual scaling work again
    services.update_spec(ctx, autoscaled, {"autoscaling": {"enabled": False}})
    services.scale(ctx, Deployment.objects.get(pk=autoscaled.pk), 3)
    assert Deployment.objects.get(pk=autoscaled.pk).desired_replicas == 3


@pytest.mark.django_db
def test_manual_scale_through_the_api_is_a_409(client: Any, autoscaled: Deployment):
    answer = client.post(
        f"/api/v1/deployments/{autoscaled.pk}/scale/", {"replicas": 2}, format="json"
    )
    assert answer.status_code == 409, answer.content
    assert "autoscaled" in answer.json()["detail"]


@pytest.mark.django_db
def test_a_tick_sets_the_count_with_one_event_by_the_autoscaler(autoscaled: Deployment):
    def reader(ids: list[int]) -> dict[int, traffic.Reading]:
        return {pk: traffic.Reading(7.0, active=True) for pk in ids}

    traffic.register_signal("concurrency", reader)
    try:
        for second in range(3):
            autoscaler.tick(now=1000.0 + second)
    finally:
        from gateway import signals

        signals.connect()
    deployment = Deployment.objects.get(pk=autoscaled.pk)
    assert deployment.desired_replicas == 4  # ceil(7 / 2), bounded by max 4
    events = HistoryEvent.objects.filter(target_id=str(autoscaled.pk), verb="scaled")
    assert events.count() == 1
    event = events.get()
    assert event.actor_name == "autoscaler" and event.changes["replicas"] == {
        "before": 1,
        "after": 4,
    }
    assert event.changes["autoscaler"]["after"]["mode"] == "panic"
    status = autoscaler.status(deployment)
    assert status["last_decision"]["desired"] == 4 and len(status["chart"]) == 3
    # no node to place them on: one event with placement's reason, and the status says so
    blocked = HistoryEvent.objects.filter(target_id=str(autoscaled.pk), verb="autoscale_blocked")
    assert blocked.count() == 1, list(blocked.values("changes"))
    assert status["blocked"] and status["blocked"] == blocked.get().reason


@pytest.mark.django_db
def test_the_status_endpoint(client: Any, autoscaled: Deployment):
    answer = client.get(f"/api/v1/deployments/{autoscaled.pk}/autoscaling/")
    assert answer.status_code == 200
    body = answer.json()
    assert body["enabled"] is True and body["summary"].startswith("autoscaled 1–4")
    listed = client.get("/api/v1/deployments/").json()["results"][0]
    assert listed["autoscaling"]["max_replicas"] == 4
