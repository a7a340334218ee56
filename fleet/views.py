"""Console pages for nodes and join tokens."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from core.choices import Role
from core.errors import ServiceError
from core.history import ChangeContext, events_about
from core.views.mixins import require_role
from fleet import services
from fleet.api.views import agent_command, server_url
from fleet.choices import CommandKind
from fleet.filtersets import NodeFilterSet
from fleet.forms import JoinTokenForm, NodeLabelsForm, format_labels
from fleet.models import JoinToken, Node

PAGE_SIZE = 50


def nodes(request: HttpRequest) -> HttpResponse:
    filterset = NodeFilterSet(request.GET, queryset=Node.objects.all())
    page = Paginator(filterset.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "filterset": filterset,
        "page": page,
        "query": query.urlencode(),
        "total": Node.objects.count(),
    }
    template = "fleet/nodes_rows.html" if request.headers.get("HX-Request") else "fleet/nodes.html"
    return render(request, template, context)


def node_detail(request: HttpRequest, pk: int) -> HttpResponse:
    node = get_object_or_404(Node, pk=pk)
    events = events_about(node)
    commands = node.commands.all()[:10]
    labels_form = NodeLabelsForm(
        initial={"labels": format_labels(node.labels), "version": node.version}
    )
    placements = node.models.select_related("node", "variant__model")  # type: ignore[attr-defined]
    download_jobs = node.jobs.select_related("node")[:10]  # type: ignore[attr-defined]
    context = {
        "node": node,
        "events": events,
        "commands": commands,
        "labels_form": labels_form,
        "placements": placements,
        "download_jobs": download_jobs,
        "live_group": f"node.{node.pk}",
    }
    if request.headers.get("HX-Request"):  # live resync of the models and downloads panel
        return render(request, "core/_downloads_panel_body.html", context)
    return render(request, "fleet/node_detail.html", context)


ACTIONS = {
    "cordon": {"cordoned": True},
    "uncordon": {"cordoned": False},
    "drain": {"draining": True},
    "undrain": {"draining": False},
    "maintenance-on": {"maintenance": True},
    "maintenance-off": {"maintenance": False},
}


@require_POST
def node_action(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    node = get_object_or_404(Node, pk=pk)
    action = request.POST.get("action", "")
    ctx = ChangeContext.from_request(request, reason=request.POST.get("reason"))
    try:
        if action in ACTIONS:
            services.update_node(ctx, node, **ACTIONS[action])
            messages.success(request, f"{node.name}: {action.replace('-', ' ')} done.")
        elif action == "labels":
            form = NodeLabelsForm(request.POST)
            if not form.is_valid():
                messages.error(
                    request,
                    " ".join(str(e) for e in form.errors.get("labels", ["Invalid labels."])),
                )
                return redirect("nodes-detail", pk=node.pk)
            services.update_node(
                ctx,
                node,
                expected_version=form.cleaned_data["version"],
                labels=form.cleaned_data["labels"],
            )
            messages.success(request, f"Labels of {node.name} saved.")
        elif action == "rotate-credential":
            services.rotate_credential(ctx, node)
            messages.success(
                request, "New credential issued; the agent switches with its next heartbeat."
            )
        elif action == "probe":
            command = services.send_command(ctx, node, CommandKind.PROBE)
            messages.info(
                request, f"Probe #{command.pk} sent; its answer appears below within seconds."
            )
        elif action == "delete":
            services.delete_node(ctx, node)
            messages.success(request, f"Node {node.name} deleted; its agent stops.")
            return redirect("nodes")
        else:
            messages.error(request, f"Unknown action {action!r}.")
    except ServiceError as error:
        messages.error(request, error.message)
    return redirect("nodes-detail", pk=node.pk)


@require_http_methods(["GET", "POST"])
def join_tokens(request: HttpRequest) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    form = JoinTokenForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        ctx = ChangeContext.from_request(request, reason=form.cleaned_data["reason"])
        try:
            token, key = services.create_join_token(
                ctx,
                name=form.cleaned_data["name"],
                max_uses=form.cleaned_data["max_uses"],
                expires_at=form.expires_at(),
                labels=form.cleaned_data["labels"],
            )
        except ServiceError as error:
            form.add_error(error.field if error.field in form.fields else None, error.message)
        else:
            created = {
                "token": token,
                "key": key,
                "command": agent_command(server_url(request), key),
            }
            form = JoinTokenForm()
    tokens = JoinToken.objects.select_related("created_by")[:100]
    return render(
        request,
        "fleet/join_tokens.html",
        {"form": form, "tokens": tokens, "created": created},
        status=201 if created else 200,
    )


@require_POST
def join_token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    token = get_object_or_404(JoinToken, pk=pk)
    services.revoke_join_token(ChangeContext.from_request(request), token)
    messages.success(request, f"Join token {token.name} revoked.")
    return redirect("nodes-join-tokens")
