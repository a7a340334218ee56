"""Console pages: the gateway's live figures, access keys, aliases and usage."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from core.choices import Role
from core.errors import ServiceError
from core.history import ChangeContext, events_about
from core.views.mixins import require_role
from gateway import live, queries, services
from gateway.filtersets import UsageFilterSet
from gateway.forms import AccessKeyForm, AliasForm, targets_text
from gateway.models import AccessKey, Alias

PAGE_SIZE = 50


def _form_error(form: AccessKeyForm | AliasForm, error: ServiceError) -> None:
    field = error.field if error.field in form.fields else None
    form.add_error(field, error.message)


def overview(request: HttpRequest) -> HttpResponse:
    context = {
        "figures": live.fleet_figures(),
        "base_url": request.build_absolute_uri("/v1"),
        "keys": AccessKey.objects.usable().count(),
        "aliases": queries.aliases(),
    }
    return render(request, "gateway/overview.html", context)


def live_figures(request: HttpRequest) -> HttpResponse:
    return render(request, "gateway/_live.html", {"figures": live.fleet_figures()})


def keys(request: HttpRequest) -> HttpResponse:
    form = AccessKeyForm()
    new_key = None
    if request.method == "POST":
        require_role(request, Role.OPERATOR)
        form = AccessKeyForm(request.POST)
        if form.is_valid():
            try:
                key, new_key = services.create_key(
                    ChangeContext.from_request(request), **form.service_fields()
                )
            except ServiceError as error:
                _form_error(form, error)
            else:
                messages.success(request, f"Key {key.name} created.")
                form = AccessKeyForm()
    rows = Paginator(queries.keys(), PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"form": form, "page": rows, "new_key": new_key}
    return render(request, "gateway/keys.html", context, status=400 if form.errors else 200)


def key_detail(request: HttpRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(queries.keys(), pk=pk)
    initial = {
        "name": key.name,
        "description": key.description,
        "all_models": key.all_models,
        "allowed_models": ", ".join(key.allowed_models),
        "requests_per_minute": key.requests_per_minute,
        "tokens_per_minute": key.tokens_per_minute,
        "expires_at": key.expires_at,
    }
    form = AccessKeyForm(initial=initial)
    if request.method == "POST":
        require_role(request, Role.OPERATOR)
        form = AccessKeyForm(request.POST, initial=initial)
        if form.is_valid():
            try:
                services.update_key(
                    ChangeContext.from_request(request), key, **form.service_fields()
                )
            except ServiceError as error:
                _form_error(form, error)
            else:
                messages.success(request, f"Key {key.name} saved.")
                return redirect("gateway-key", pk=key.pk)
    usage = queries.usage().filter(key=key)
    context = {
        "key": key,
        "form": form,
        "usage": usage[:30],
        "totals": queries.usage_totals(usage),
        "events": events_about(key),
    }
    return render(request, "gateway/key_detail.html", context, status=400 if form.errors else 200)


@require_POST
def key_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    key = get_object_or_404(AccessKey, pk=pk)
    services.revoke_key(ChangeContext.from_request(request), key)
    messages.success(request, f"Key {key.name} revoked; gateways refuse it now.")
    return redirect("gateway-key", pk=key.pk)


def aliases(request: HttpRequest) -> HttpResponse:
    form = AliasForm()
    if request.method == "POST":
        require_role(request, Role.OPERATOR)
        form = AliasForm(request.POST)
        if form.is_valid():
            try:
                alias = services.create_alias(
                    ChangeContext.from_request(request), **form.cleaned_data
                )
            except ServiceError as error:
                _form_error(form, error)
            else:
                messages.success(request, f"Alias {alias.name} created.")
                return redirect("gateway-aliases")
    context = {"form": form, "aliases": queries.aliases()}
    return render(request, "gateway/aliases.html", context, status=400 if form.errors else 200)


def alias_detail(request: HttpRequest, pk: int) -> HttpResponse:
    alias = get_object_or_404(queries.aliases(), pk=pk)
    initial = {
        "name": alias.name,
        "description": alias.description,
        "targets": targets_text(alias.target_list()),
    }
    form = AliasForm(initial=initial)
    form.fields["name"].disabled = True
    if request.method == "POST":
        require_role(request, Role.OPERATOR)
        form = AliasForm(request.POST, initial=initial)
        form.fields["name"].disabled = True
        if form.is_valid():
            try:
                services.update_alias(
                    ChangeContext.from_request(request),
                    alias,
                    targets=form.cleaned_data["targets"],
                    description=form.cleaned_data["description"],
                )
            except ServiceError as error:
                _form_error(form, error)
            else:
                messages.success(request, f"Alias {alias.name} saved.")
                return redirect("gateway-alias", pk=alias.pk)
    context = {
        "alias": alias,
        "form": form,
        "events": events_about(alias),
    }
    return render(request, "gateway/alias_detail.html", context, status=400 if form.errors else 200)


@require_POST
def alias_delete(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    alias = get_object_or_404(Alias, pk=pk)
    services.delete_alias(ChangeContext.from_request(request), alias)
    messages.success(request, f"Alias {alias.name} deleted.")
    return redirect("gateway-aliases")


def usage(request: HttpRequest) -> HttpResponse:
    filterset = UsageFilterSet(request.GET, queryset=queries.usage())
    rows = filterset.qs
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "filterset": filterset,
        "page": page,
        "totals": queries.usage_totals(rows),
        "query": query.urlencode(),
    }
    return render(request, "gateway/usage.html", context)
