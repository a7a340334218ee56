"""Console pages for the model catalog."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from core.choices import Role
from core.errors import ServiceError
from core.history import ChangeContext, events_about
from core.jobs import Job
from core.views.mixins import require_role
from fleet.models import Node
from models_catalog import hub, services
from models_catalog.downloads import VARIANT_TARGET
from models_catalog.filtersets import CatalogModelFilterSet
from models_catalog.fits import fits_on, model_architecture, variant_footprints
from models_catalog.footprint import RUNTIMES, default_contexts
from models_catalog.forms import ImportForm, LicencePolicyForm, RepinForm, SearchForm
from models_catalog.models import CatalogModel, NodeModel, Variant
from models_catalog.variants import nominal_bpw

PAGE_SIZE = 50


def catalog(request: HttpRequest) -> HttpResponse:
    queryset = CatalogModel.objects.annotate(variant_count=Count("variants")).order_by("repo_id")
    filterset = CatalogModelFilterSet(request.GET, queryset=queryset)
    page = Paginator(filterset.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    allowed = services.get_allowed_licences()
    for model in page.object_list:
        model.licence_reason = services.check_licence(model, allowed)
    context = {
        "filterset": filterset,
        "page": page,
        "query": query.urlencode(),
        "total": CatalogModel.objects.count(),
    }
    rows = request.headers.get("HX-Request")
    return render(request, "catalog/list_rows.html" if rows else "catalog/list.html", context)


@require_http_methods(["GET", "POST"])
def catalog_import(request: HttpRequest) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    form = ImportForm(request.POST or None, initial={"repo_id": request.GET.get("repo_id", "")})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        ctx = ChangeContext.from_request(request, reason=data["reason"])
        try:
            model = services.import_model(
                ctx,
                repo_id=data["repo_id"],
                revision=data["revision"] or None,
                secret_name=data["secret_name"] or "",
            )
        except ServiceError as error:
            form.add_error(error.field if error.field in form.fields else None, error.message)
        else:
            messages.success(
                request, f"{model.repo_id} imported, pinned to {model.commit_sha[:12]}."
            )
            return redirect("catalog-detail", pk=model.pk)
    return render(request, "catalog/import.html", {"form": form})


def catalog_search(request: HttpRequest) -> HttpResponse:
    form = SearchForm(request.GET or None)
    results: list[dict[str, Any]] | None = None
    error = ""
    if form.is_bound and form.has_query():
        data = form.cleaned_data
        try:
            results = hub.search(
                data["q"], data["task"], data["library"], data["sort"] or "downloads", 30
            )
        except hub.HubError as exc:
            error = exc.message
        else:
            imported = dict(
                CatalogModel.objects.filter(
                    repo_id__in=[r["repo_id"] for r in results]
                ).values_list("repo_id", "pk")
            )
            for result in results:
                result["imported"] = imported.get(result["repo_id"])
    return render(
        request, "catalog/search.html", {"form": form, "results": results, "error": error}
    )


def _footprint_table(variant: Variant, contexts: list[int]) -> dict[str, Any]:
    """Rows per context, one column per runtime × KV cache type."""
    rows: dict[int, list[Any]] = {}
    columns: list[tuple[str, str]] = []
    for item in variant_footprints(variant, contexts):
        column = (RUNTIMES[item.runtime].label, item.kv_cache_type)
        if column not in columns:
            columns.append(column)
        rows.setdefault(item.context, []).append(item)
    first = next(iter(rows.values()), [])
    return {
        "columns": columns,
        "rows": [{"context": c, "cells": cells} for c, cells in rows.items()],
        "weights_bytes": first[0].weights_bytes if first else 0,
        "overheads": {RUNTIMES[i.runtime].label: i.overhead_bytes for i in first},
    }


def catalog_detail(request: HttpRequest, pk: int) -> HttpResponse:
    model = get_object_or_404(
        CatalogModel.objects.prefetch_related(
            "files",
            Prefetch("variants", queryset=Variant.objects.prefetch_related("files")),
        ),
        pk=pk,
    )
    allowed = services.get_allowed_licences()
    contexts = default_contexts(model_architecture(model).max_context)
    variants = []
    for variant in model.variants.all():
        variant.model = model
        variants.append(
            {
                "variant": variant,
                "nominal_bpw": nominal_bpw(variant.format, variant.quantization),
                "licence_reason": services.check_licence(variant, allowed),
                "footprint": _footprint_table(variant, contexts),
                "fits": fits_on(variant, contexts),
            }
        )
    events = events_about(model)
    variant_ids = [variant.pk for variant in model.variants.all()]
    placements = NodeModel.objects.filter(variant_id__in=variant_ids).select_related(
        "node", "variant__model"
    )
    download_jobs = Job.objects.filter(
        target_type=VARIANT_TARGET, target_id__in=[str(pk) for pk in variant_ids]
    ).select_related("node")[:20]
    panel = {
        "placements": placements,
        "download_jobs": download_jobs,
        "live_group": " ".join(f"variant.{pk}" for pk in variant_ids),
        "nodes": Node.objects.order_by("name"),
    }
    if request.headers.get("HX-Request"):  # live resync of the models and downloads panel
        return render(request, "core/_downloads_panel_body.html", panel)
    return render(
        request,
        "catalog/detail.html",
        {
            "model": model,
            "variants": variants,
            "contexts": contexts,
            "licence_reason": services.check_licence(model, allowed),
            "events": events,
            **panel,
        },
    )


@require_POST
def catalog_resync(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    model = get_object_or_404(CatalogModel, pk=pk)
    try:
        diff = services.resync(ChangeContext.from_request(request), model)
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("catalog-detail", pk=model.pk)
    form = RepinForm(initial={"commit": diff["upstream_commit"], "version": diff["version"]})
    return render(request, "catalog/resync.html", {"model": model, "diff": diff, "form": form})


@require_POST
def catalog_repin(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    model = get_object_or_404(CatalogModel, pk=pk)
    form = RepinForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Run re-sync first: the re-pin needs the commit it showed.")
        return redirect("catalog-detail", pk=model.pk)
    data = form.cleaned_data
    try:
        model = services.repin(
            ChangeContext.from_request(request, reason=data["reason"]),
            model,
            expected_version=data["version"],
            commit=data["commit"],
        )
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"{model.repo_id} re-pinned to {model.commit_sha[:12]}.")
    return redirect("catalog-detail", pk=model.pk)


@require_POST
def catalog_delete(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    model = get_object_or_404(CatalogModel, pk=pk)
    try:
        services.delete_model(
            ChangeContext.from_request(request, reason=request.POST.get("reason")), model
        )
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("catalog-detail", pk=model.pk)
    messages.success(request, f"{model.repo_id} deleted from the catalog.")
    return redirect("catalog")


@require_http_methods(["GET", "POST"])
def catalog_licence_policy(request: HttpRequest) -> HttpResponse:
    require_role(request, Role.VIEWER if request.method == "GET" else Role.ADMIN)
    policy = services.policy_as_dict()
    initial = {"licences": "\n".join(policy["licences"]), "version": policy["version"]}
    form = LicencePolicyForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.set_allowed_licences(
                ChangeContext.from_request(request, reason=data["reason"]),
                data["licences"],
                expected_version=data["version"],
            )
        except ServiceError as error:
            form.add_error(error.field if error.field in form.fields else None, error.message)
        else:
            messages.success(request, "Licence policy saved.")
            return redirect("catalog-licence-policy")
    licences = sorted(
        CatalogModel.objects.exclude(licence="").values_list("licence", flat=True).distinct()
    )
    return render(
        request,
        "catalog/licence_policy.html",
        {"form": form, "policy": policy, "seen_licences": licences},
    )


catalog_licence_policy.nav_section = "settings"  # type: ignore[attr-defined]
