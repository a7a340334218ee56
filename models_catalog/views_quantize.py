"""Model page pieces for quantization: the "Quantize" form and the variants comparison table."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from core.choices import Role
from core.errors import ServiceError
from core.history import ChangeContext
from core.views.mixins import require_role
from fleet.models import Node
from models_catalog.models import CatalogModel, Variant
from models_catalog.quantize import levels as lv
from models_catalog.quantize.comparison import comparison
from models_catalog.quantize.services import DEFAULT_PPL_CONTEXT, request_quantization

LEVEL_CHOICES = [(x, f"GGUF {x}") for x in lv.GGUF_LEVELS] + [
    (x, f"ONNX {x}") for x in lv.ONNX_LEVELS
]


class QuantizeForm(forms.Form):
    variant = forms.ModelChoiceField(queryset=Variant.objects.none(), label="Source variant")
    format = forms.ChoiceField(
        choices=[(lv.FORMAT_GGUF, "GGUF (llama.cpp)"), (lv.FORMAT_ONNX, "ONNX (ONNX Runtime)")]
    )
    levels = forms.MultipleChoiceField(
        choices=LEVEL_CHOICES,
        help_text="GGUF types for GGUF, int8/int4 for ONNX.",
        widget=forms.SelectMultiple(attrs={"size": 8}),
    )
    node = forms.ModelChoiceField(
        queryset=Node.objects.order_by("name"),
        required=False,
        empty_label="let the scheduler pick (enough RAM and disk)",
    )
    imatrix = forms.BooleanField(required=False, label="Importance matrix for low-bit types")
    evaluate = forms.BooleanField(
        required=False, initial=True, label="Evaluate (perplexity, tokens/s)"
    )
    threads = forms.IntegerField(required=False, min_value=1, max_value=256)
    memory_mb = forms.IntegerField(required=False, min_value=256, label="Memory limit (MB)")
    ppl_context = forms.IntegerField(
        required=False,
        initial=DEFAULT_PPL_CONTEXT,
        min_value=16,
        max_value=8192,
        label="Perplexity context",
    )
    reason = forms.CharField(required=False, max_length=500)

    def __init__(self, model: CatalogModel, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["variant"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = model.variants.filter(format__in=("safetensors", "gguf")).order_by("name")


@require_http_methods(["GET", "POST"])
def catalog_quantize(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    model = get_object_or_404(CatalogModel, pk=pk)
    form = QuantizeForm(model, request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                job = request_quantization(
                    ChangeContext.from_request(request, reason=data.get("reason")),
                    data["variant"],
                    fmt=data["format"],
                    levels=list(data["levels"]),
                    node=data.get("node"),
                    imatrix=bool(data.get("imatrix")),
                    evaluate=bool(data.get("evaluate")),
                    threads=data.get("threads"),
                    memory_mb=data.get("memory_mb"),
                    ppl_context=data.get("ppl_context") or DEFAULT_PPL_CONTEXT,
                )
            except ServiceError as error:
                form.add_error(error.field if error.field in form.fields else None, error.message)
            else:
                messages.success(request, f"Quantize job #{job.pk} created.")
                return redirect("jobs-detail", pk=job.pk)
        status = 400
    return render(
        request, "models_catalog/quantize_form.html", {"model": model, "form": form}, status=status
    )


@require_GET
def catalog_quantize_comparison(request: HttpRequest, pk: int) -> HttpResponse:
    model = get_object_or_404(CatalogModel, pk=pk)
    return render(
        request, "models_catalog/quantize_comparison.html", {"model": model, **comparison(model)}
    )
