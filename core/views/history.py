from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from core import diff_names
from core.filtersets import HistoryEventFilterSet
from core.models import HistoryEvent

PAGE_SIZE = 50


def history_list(request: HttpRequest) -> HttpResponse:
    filterset = HistoryEventFilterSet(request.GET, queryset=HistoryEvent.objects.all())
    page = Paginator(filterset.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"filterset": filterset, "page": page, "query": query.urlencode()}
    template = (
        "core/history_rows.html" if request.headers.get("HX-Request") else "core/history.html"
    )
    return render(request, template, context)


def history_detail(request: HttpRequest, pk: int) -> HttpResponse:
    event = get_object_or_404(HistoryEvent, pk=pk)
    return render(
        request,
        "core/history_detail.html",
        {"event": event, "change_rows": diff_names.rows(event.changes)},
    )
