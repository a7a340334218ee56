"""Console pages: runs (live progress, results with plots, compare, export), profiles, suites."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from benchmarks import export, profiles, services
from benchmarks.models import BenchmarkProfile, BenchmarkRun, SuiteRun, TestSuite
from core import job_services
from core.choices import Role
from core.errors import ServiceError
from core.history import ChangeContext, events_about
from core.views.mixins import require_role
from deployments.choices import DeploymentState
from deployments.models import Deployment

RECENT = 50


class StartForm(forms.Form):
    deployment = forms.ModelChoiceField(
        queryset=Deployment.objects.none(),
        required=False,
        to_field_name="name",
        help_text="Measured through the gateway, as applications call it.",
    )
    replicas = forms.CharField(
        required=False,
        label="Or replica ids",
        help_text="Comma-separated ids of one deployment's replicas: each measured directly.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["deployment"].queryset = Deployment.objects.filter(  # type: ignore[attr-defined]
            state=DeploymentState.ACTIVE, deletion_requested_at__isnull=True
        ).order_by("name")

    def targets(self) -> dict[str, Any]:
        raw = self.cleaned_data.get("replicas") or ""
        try:
            ids = [int(part) for part in raw.split(",") if part.strip()]
        except ValueError:
            raise ServiceError("Replica ids are numbers, e.g. 12, 13.", field="replicas") from None
        if ids:
            return {"replicas": services.replicas_by_ids(ids)}
        if self.cleaned_data.get("deployment") is None:
            raise ServiceError("Pick a deployment or give replica ids.", field="deployment")
        return {"deployment": self.cleaned_data["deployment"]}


class BenchmarkStartForm(StartForm):
    profile = forms.ModelChoiceField(queryset=BenchmarkProfile.objects.all(), to_field_name="name")
    field_order = ["profile", "deployment", "replicas"]


class SuiteStartForm(StartForm):
    suite = forms.ModelChoiceField(queryset=TestSuite.objects.all(), to_field_name="name")
    field_order = ["suite", "deployment", "replicas"]


class JsonForm(forms.Form):
    name = forms.SlugField(max_length=100)
    description = forms.CharField(max_length=2000, required=False)
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 12, "class": "mono"}))

    def clean_body(self) -> Any:
        try:
            return json.loads(self.cleaned_data["body"])
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None


def _form_error(form: forms.Form, error: ServiceError) -> None:
    """On its field when the form has one, else above the form, naming the field."""
    if error.field in form.fields:
        form.add_error(error.field, error.message)
    else:
        form.add_error(None, f"{error.field}: {error.message}" if error.field else error.message)


def index(request: HttpRequest) -> HttpResponse:
    bench_form: forms.Form = BenchmarkStartForm(prefix="bench")
    suite_form: forms.Form = SuiteStartForm(prefix="suite")
    if request.method == "POST":
        require_role(request, Role.OPERATOR)
        ctx = ChangeContext.from_request(request)
        if "start-benchmark" in request.POST:
            bench_form = BenchmarkStartForm(request.POST, prefix="bench")
            if bench_form.is_valid():
                try:
                    run = services.start_benchmark(
                        ctx, bench_form.cleaned_data["profile"], **bench_form.targets()
                    )
                except ServiceError as error:
                    _form_error(bench_form, error)
                else:
                    return redirect("benchmarks-run", run.pk)
        elif "start-suite" in request.POST:
            suite_form = SuiteStartForm(request.POST, prefix="suite")
            if suite_form.is_valid():
                try:
                    suite_run = services.start_suite(
                        ctx, suite_form.cleaned_data["suite"], **suite_form.targets()
                    )
                except ServiceError as error:
                    _form_error(suite_form, error)
                else:
                    return redirect("benchmarks-suite-run", suite_run.pk)
    context = {
        "bench_form": bench_form,
        "suite_form": suite_form,
        "runs": BenchmarkRun.objects.select_related("job")[:RECENT],
        "suite_runs": SuiteRun.objects.select_related("job")[:RECENT],
        "profiles": BenchmarkProfile.objects.all(),
        "suites": TestSuite.objects.all(),
    }
    failed = bench_form.errors or suite_form.errors
    return render(request, "benchmarks/index.html", context, status=400 if failed else 200)


def _run_context(run: BenchmarkRun) -> dict[str, Any]:
    return {
        "run": run,
        "job": run.job,
        "rows": export.rows(run),
        "series": export.series([run]),
        "profile_text": profiles.describe(run.profile_spec) if run.profile_spec else "",
    }


def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(BenchmarkRun.objects.select_related("job"), pk=pk)
    return render(request, "benchmarks/run.html", _run_context(run))


def run_body(request: HttpRequest, pk: int) -> HttpResponse:
    """The part of the run page that live updates re-render (jobs.js resync)."""
    run = get_object_or_404(BenchmarkRun.objects.select_related("job"), pk=pk)
    return render(request, "benchmarks/_run_body.html", _run_context(run))


@require_POST
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    run = get_object_or_404(BenchmarkRun.objects.select_related("job"), pk=pk)
    try:
        job_services.request_cancel(ChangeContext.from_request(request), run.job)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, "Cancel requested: the run stops within a second.")
    return redirect("benchmarks-run", pk)


def compare(request: HttpRequest) -> HttpResponse:
    # ?ids=3,4 (typed) or ?ids=3&ids=4 (the runs list's checkboxes)
    raw = ",".join(request.GET.getlist("ids")).split(",")
    ids = [int(part) for part in raw if part.strip().isdigit()]
    runs = list(BenchmarkRun.objects.select_related("job").filter(pk__in=ids).order_by("pk"))
    context = {
        "runs": runs,
        "rows": [row for run in runs for row in export.rows(run)],
        "series": export.series(runs),
        "ids": ",".join(str(r.pk) for r in runs),
    }
    status = 200 if len(runs) >= 1 else 400
    if not runs:
        messages.error(request, "Pick two or more benchmark runs to compare.")
    return render(request, "benchmarks/compare.html", context, status=status)


def suite_run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(SuiteRun.objects.select_related("job"), pk=pk)
    return render(request, "benchmarks/suite_run.html", {"run": run, "job": run.job})


def suite_run_body(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(SuiteRun.objects.select_related("job"), pk=pk)
    return render(request, "benchmarks/_suite_run_body.html", {"run": run, "job": run.job})


# --- Profiles and suites --------------------------------------------------------------------
def _editor(
    request: HttpRequest,
    *,
    obj: BenchmarkProfile | TestSuite | None,
    kind: str,
) -> HttpResponse:
    is_profile = kind == "profile"
    body_of = (lambda o: o.spec) if is_profile else (lambda o: o.cases)
    initial = (
        {
            "name": obj.name,
            "description": obj.description,
            "body": json.dumps(body_of(obj), indent=2),
        }
        if obj is not None
        else {"body": json.dumps(profiles.DEFAULTS if is_profile else [], indent=2)}
    )
    form = JsonForm(initial=initial)
    if request.method == "POST":
        require_role(request, Role.OPERATOR)
        form = JsonForm(request.POST, initial=initial)
        if form.is_valid():
            ctx = ChangeContext.from_request(request)
            data = form.cleaned_data
            try:
                if obj is None and is_profile:
                    obj = services.create_profile(
                        ctx, name=data["name"], description=data["description"], spec=data["body"]
                    )
                elif obj is None:
                    obj = services.create_suite(
                        ctx, name=data["name"], description=data["description"], cases=data["body"]
                    )
                elif isinstance(obj, BenchmarkProfile):
                    services.update_profile(
                        ctx, obj, description=data["description"], spec=data["body"]
                    )
                else:
                    services.update_suite(
                        ctx, obj, description=data["description"], cases=data["body"]
                    )
            except ServiceError as error:
                form.add_error(
                    "body" if error.field not in ("name",) else "name",
                    f"{error.field}: {error.message}" if error.field else error.message,
                )
            else:
                messages.success(request, f"Saved {obj.name}.")
                return redirect(f"benchmarks-{kind}", obj.pk)
    if obj is not None:
        form.fields["name"].disabled = True
    context = {
        "obj": obj,
        "kind": kind,
        "form": form,
        "events": events_about(obj)[:20] if obj is not None else [],
        "spec_text": profiles.describe(obj.spec) if isinstance(obj, BenchmarkProfile) else "",
    }
    return render(request, "benchmarks/editor.html", context, status=400 if form.errors else 200)


def profile_new(request: HttpRequest) -> HttpResponse:
    return _editor(request, obj=None, kind="profile")


def profile_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _editor(request, obj=get_object_or_404(BenchmarkProfile, pk=pk), kind="profile")


def suite_new(request: HttpRequest) -> HttpResponse:
    return _editor(request, obj=None, kind="suite")


def suite_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _editor(request, obj=get_object_or_404(TestSuite, pk=pk), kind="suite")


@require_POST
def profile_delete(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    profile = get_object_or_404(BenchmarkProfile, pk=pk)
    services.delete_profile(ChangeContext.from_request(request), profile)
    messages.success(request, f"Profile {profile.name} deleted; its runs keep their copy.")
    return redirect(reverse("benchmarks"))


@require_POST
def suite_delete(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    suite = get_object_or_404(TestSuite, pk=pk)
    services.delete_suite(ChangeContext.from_request(request), suite)
    messages.success(request, f"Suite {suite.name} deleted; its runs keep their copy.")
    return redirect(reverse("benchmarks"))
