"""Model page actions that move files: cache a variant in the fleet store, put it on nodes."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from core.choices import Role
from core.errors import ServiceError
from core.history import ChangeContext
from core.views.mixins import require_role
from fleet.models import Node
from models_catalog import downloads
from models_catalog.models import Variant


@require_POST
def variant_cache(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    variant = get_object_or_404(Variant.objects.select_related("model"), pk=pk)
    try:
        job = downloads.cache_variant(ChangeContext.from_request(request), variant)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Caching {variant.name} in the fleet store: job #{job.pk}.")
    return redirect("catalog-detail", pk=variant.model_id)


@require_POST
def variant_put_on_nodes(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    variant = get_object_or_404(Variant.objects.select_related("model"), pk=pk)
    ids = [value for value in request.POST.getlist("nodes") if value.isdigit()]
    nodes = list(Node.objects.filter(pk__in=ids))
    try:
        jobs = downloads.put_variant_on_nodes(
            ChangeContext.from_request(request, reason=request.POST.get("reason")),
            variant,
            nodes,
            source=request.POST.get("source") or downloads.SOURCE_MIRROR,
        )
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        names = ", ".join(node.name for node in nodes)
        messages.success(
            request,
            f"{variant.name} is on its way to {names}: jobs {', '.join(f'#{j.pk}' for j in jobs)}.",
        )
    return redirect("catalog-detail", pk=variant.model_id)
