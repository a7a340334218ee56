"""The jobs pages: every job with live progress, and one job with its log tail."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from core import job_services
from core.choices import Role
from core.errors import ServiceError
from core.filtersets import JobFilterSet
from core.history import ChangeContext, events_about
from core.jobs import Job
from core.views.mixins import require_role

PAGE_SIZE = 50


def job_list(request: HttpRequest) -> HttpResponse:
    filterset = JobFilterSet(request.GET, queryset=Job.objects.select_related("node"))
    page = Paginator(filterset.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "filterset": filterset,
        "page": page,
        "query": query.urlencode(),
        "total": Job.objects.count(),
    }
    template = "core/jobs_rows.html" if request.headers.get("HX-Request") else "core/jobs.html"
    return render(request, template, context)


def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(Job.objects.select_related("node"), pk=pk)
    events = events_about(job)
    context = {"job": job, "events": events, "waiting_for": job_services.waiting_for(job)}
    template = (
        "core/job_detail_body.html" if request.headers.get("HX-Request") else "core/job_detail.html"
    )
    return render(request, template, context)


@require_POST
def job_action(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    job = get_object_or_404(Job, pk=pk)
    action = request.POST.get("action", "")
    ctx = ChangeContext.from_request(request, reason=request.POST.get("reason"))
    try:
        if action == "cancel":
            job = job_services.request_cancel(ctx, job)
            if job.state == "cancelled":
                messages.success(request, f"Job #{job.pk} cancelled.")
            else:
                messages.info(
                    request, f"Cancel sent; job #{job.pk} stops at its next progress report."
                )
        elif action == "retry":
            job_services.retry(ctx, job)
            messages.success(request, f"Job #{job.pk} queued again.")
        else:
            messages.error(request, f"Unknown action {action!r}.")
    except ServiceError as error:
        messages.error(request, error.message)
    return redirect("jobs-detail", pk=pk)
