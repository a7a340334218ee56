"""Console pages for deployments: list, detail, create, edit, and the actions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from core import diff_names
from core.choices import Role
from core.errors import ServiceError
from core.history import ChangeContext, events_about
from core.views.mixins import require_role
from deployments import autoscaler, logs, queries, services, try_it
from deployments.autoscaling import Metric, Policy
from deployments.choices import ReplicaState
from deployments.filtersets import DeploymentFilterSet
from deployments.forms import DeploymentEditForm, DeploymentForm, ScaleForm, initial_from_spec
from deployments.models import Deployment, Replica
from deployments.spec import SpecError, current_spec, runtime_help
from models_catalog.models import Variant

PAGE_SIZE = 50
RECENT_GONE = 10


def deployments(request: HttpRequest) -> HttpResponse:
    filterset = DeploymentFilterSet(request.GET, queryset=queries.deployments())
    page = Paginator(filterset.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    for deployment in page.object_list:
        nodes = {r.node for r in deployment.live_replicas if r.node is not None}
        deployment.node_list = sorted(nodes, key=lambda n: n.name)
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "filterset": filterset,
        "page": page,
        "query": query.urlencode(),
        "total": Deployment.objects.count(),
    }
    rows = request.headers.get("HX-Request")
    return render(
        request, "deployments/list_rows.html" if rows else "deployments/list.html", context
    )


def _variant_names(variant_ids: set[int]) -> dict[int, str]:
    return {
        v.pk: str(v) for v in Variant.objects.select_related("model").filter(pk__in=variant_ids)
    }


def deployment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = get_object_or_404(queries.deployments(), pk=pk)
    gone = (
        Replica.objects.filter(deployment=deployment, state=ReplicaState.GONE)
        .select_related("node", "revision")
        .order_by("-stopped_at", "-created_at")[:RECENT_GONE]
    )
    revisions = list(deployment.revisions.select_related("variant__model").order_by("-number"))
    for revision in revisions:
        revision.diff_rows = _diff_rows(revision.diff)  # type: ignore[attr-defined]
    rollouts = list(
        deployment.rollouts.select_related("from_revision", "to_revision").order_by(
            "-started_at", "-id"
        )[:10]
    )
    events = events_about(deployment, 30)
    policy = deployment.autoscaling
    context = {
        "deployment": deployment,
        "autoscaling": policy,
        "spec": current_spec(deployment),
        "status": deployment.status,  # type: ignore[attr-defined]
        "replicas": deployment.live_replicas,  # type: ignore[attr-defined]
        "gone_replicas": gone,
        "rollouts": rollouts,
        "revisions": revisions,
        "variant_names": _variant_names({r.variant_id for r in revisions}),
        "events": events,
        "scale_form": ScaleForm(initial={"replicas": deployment.desired_replicas}),
        "live_group": f"deployment.{deployment.pk}",
        "logs_replicas": [*deployment.live_replicas, *gone],  # type: ignore[attr-defined]
        "try_max_tokens": try_it.MAX_TOKENS,
    }
    if request.headers.get("HX-Request"):  # periodic refresh of the live part
        return render(request, "deployments/_live.html", context)
    context["autoscaling_status"] = _autoscaling_status(deployment, policy)
    return render(request, "deployments/detail.html", context)


def _autoscaling_status(deployment: Deployment, policy: Policy) -> dict[str, Any] | None:
    """The Autoscaling card's first paint; autoscaling.js then polls the API every 2 s."""
    if not policy.enabled:
        return None
    status = autoscaler.status(deployment)
    decision = status["last_decision"]
    if decision and decision.get("at"):
        decision = status["last_decision"] = dict(decision)
        decision["at"] = datetime.fromtimestamp(decision["at"], tz=UTC)
    status["unit"] = Metric.UNITS.get(policy.metric, policy.metric)
    return status


def _diff_rows(changes: dict[str, Any]) -> list[dict[str, Any]]:
    return diff_names.rows(changes)


def _form_page(request: HttpRequest, form: DeploymentForm, **context: Any) -> HttpResponse:
    return render(
        request,
        "deployments/form.html",
        {"form": form, "runtimes": runtime_help(), **context},
        status=400 if form.is_bound and form.errors else 200,
    )


@require_http_methods(["GET", "POST"])
def deployment_create(request: HttpRequest) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    form = DeploymentForm(request.POST or None, initial={"variant": request.GET.get("variant")})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        ctx = ChangeContext.from_request(request, reason=data["reason"])
        try:
            deployment = services.create_deployment(
                ctx,
                data["name"],
                form.to_spec(),
                revision_history_limit=data["revision_history_limit"],
            )
        except SpecError as error:
            form.add_spec_errors(error)
        except ServiceError as error:
            form.add_error(error.field if error.field in form.fields else None, error.message)
        else:
            messages.success(request, f"Deployment {deployment.name} created (revision 1).")
            return redirect("deployments-detail", pk=deployment.pk)
    return _form_page(request, form, title="New deployment")


@require_http_methods(["GET", "POST"])
def deployment_edit(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    deployment = get_object_or_404(Deployment.objects.select_related("current_revision"), pk=pk)
    initial = initial_from_spec(
        current_spec(deployment),
        version=deployment.version,
        revision_history_limit=deployment.revision_history_limit,
    )
    form = DeploymentEditForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        ctx = ChangeContext.from_request(request, reason=data["reason"])
        before = deployment.current_revision_id
        try:
            deployment = services.update_spec(
                ctx,
                deployment,
                form.to_spec(),
                data["version"],
                revision_history_limit=data["revision_history_limit"],
                replace=True,
            )
        except SpecError as error:
            form.add_spec_errors(error)
        except ServiceError as error:
            form.add_error(error.field if error.field in form.fields else None, error.message)
        else:
            if deployment.current_revision_id != before:
                number = deployment.current_revision.number  # type: ignore[union-attr]
                messages.success(request, f"{deployment.name}: revision {number} created.")
            else:
                messages.info(request, f"{deployment.name}: no change to the spec, no revision.")
            return redirect("deployments-detail", pk=deployment.pk)
    return _form_page(request, form, title=f"Edit {deployment.name}", deployment=deployment)


ACTIONS = {
    "pause": services.pause,
    "resume": services.resume,
    "stop": services.stop,
    "start": services.start,
}


@require_POST
def deployment_action(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    deployment = get_object_or_404(Deployment, pk=pk)
    action = request.POST.get("action", "")
    ctx = ChangeContext.from_request(request, reason=request.POST.get("reason"))
    try:
        if action in ACTIONS:
            ACTIONS[action](ctx, deployment)
            messages.success(request, f"{deployment.name}: {action} done.")
        elif action == "scale":
            form = ScaleForm(request.POST)
            if not form.is_valid():
                messages.error(request, " ".join(str(e) for e in form.errors.get("replicas", [])))
            else:
                services.scale(ctx, deployment, form.cleaned_data["replicas"])
                messages.success(
                    request, f"{deployment.name}: scaled to {form.cleaned_data['replicas']}."
                )
        elif action == "rollback":
            number = int(request.POST.get("revision") or 0)
            services.rollback(ctx, deployment, number)
            messages.success(request, f"{deployment.name}: rolled back to r{number}.")
        elif action == "delete":
            if services.delete_deployment(ctx, deployment):
                messages.success(request, f"Deployment {deployment.name} deleted.")
            else:
                messages.info(
                    request,
                    f"{deployment.name} is stopping; it is deleted once its replicas are gone.",
                )
            return redirect("deployments")
        else:
            messages.error(request, f"Unknown action {action!r}.")
    except ValueError:
        messages.error(request, "Name the revision to roll back to.")
    except ServiceError as error:
        messages.error(request, error.message)
    return redirect("deployments-detail", pk=deployment.pk)


# --- Logs and "try it" (operators only: logs can hold prompts, a completion spends compute) --
@require_POST
def replica_logs(request: HttpRequest, pk: int) -> HttpResponse:
    """The logs panel (htmx, polled every 2 s while open): merge what the agent sent back,
    ask for the lines after the newest kept one, show the kept lines."""
    require_role(request, Role.OPERATOR)
    replica = get_object_or_404(Replica.objects.select_related("node", "deployment"), pk=pk)
    error = ""
    if logs.can_fetch(replica):
        try:
            logs.request_logs(ChangeContext.from_request(request), replica)
        except ServiceError as exc:
            error = exc.message
    logs.collect(replica)
    context = {
        "replica": replica,
        "lines": logs.kept_lines(replica),
        "pending": logs.in_flight(replica),
        "error": error or logs.last_error(replica),
        "live": logs.can_fetch(replica),
    }
    return render(request, "deployments/_logs.html", context)


def replica_logs_download(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    replica = get_object_or_404(Replica.objects.select_related("deployment"), pk=pk)
    response = HttpResponse(logs.logs_text(replica), content_type="text/plain; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    name = f"{replica.deployment.name}-s{replica.slot}-{replica.pk}-{stamp}.log"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@require_POST
def deployment_try(request: HttpRequest, pk: int) -> HttpResponse:
    """The "try it" box (htmx): one completion from one replica, with timings."""
    require_role(request, Role.OPERATOR)
    deployment = get_object_or_404(Deployment, pk=pk)
    context: dict[str, Any] = {"deployment": deployment}
    try:
        max_tokens = int(request.POST.get("max_tokens") or 64)
        replica = int(request.POST["replica"]) if request.POST.get("replica") else None
    except ValueError:
        context["error"] = "max_tokens and the replica must be whole numbers."
        return render(request, "deployments/_try.html", context, status=400)
    try:
        context["result"] = try_it.try_completion(
            deployment, request.POST.get("prompt", ""), max_tokens, replica=replica
        )
    except ServiceError as exc:
        context["error"] = exc.message
        return render(request, "deployments/_try.html", context, status=exc.status_code)
    return render(request, "deployments/_try.html", context)
