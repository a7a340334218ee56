"""The create / edit form: one field per part of the spec, turned into the spec the service
validates; the service's per-field errors come back onto the fields."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from core.forms import ReasonFormMixin
from deployments.choices import PlacementStrategy, Runtime
from deployments.services import MAX_HISTORY_LIMIT
from deployments.spec import MAX_REPLICAS, STRATEGY_DEFAULTS, SpecError, parse_bytes
from fleet.forms import LabelsField, format_labels
from models_catalog.models import Variant
from models_catalog.services import check_licence, get_allowed_licences

# Spec paths (as SpecError.flat names them) → form fields; the longest prefix wins.
FIELD_FOR = {
    "variant": "variant",
    "runtime": "runtime",
    "image": "image",
    "runtime_args": "runtime_args",
    "replicas": "replicas",
    "resources.cpus": "cpus",
    "resources.memory_bytes": "memory",
    "resources.gpus": "gpus",
    "placement.selector": "selector",
    "placement.strategy": "placement_strategy",
    "port": "port",
    "env": "env",
    **{f"strategy.{key}": key for key in STRATEGY_DEFAULTS},
}


def parse_env(text: str) -> dict[str, str]:
    """``KEY=value`` per line (values may hold ``=`` and ``,``); raises ValidationError."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise forms.ValidationError(f"{line!r} is not KEY=value.")
        env[key.strip()] = value
    return env


def format_size(size: int | None) -> str:
    if not size:
        return ""
    for unit, factor in (("Gi", 1024**3), ("Mi", 1024**2)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


class VariantChoiceField(forms.ModelChoiceField):  # type: ignore[type-arg]
    """Catalog variants, each saying when the licence policy refuses it."""

    def __init__(self, **kwargs: Any) -> None:
        variants = Variant.objects.select_related("model").order_by("model__repo_id", "name")
        super().__init__(variants, **kwargs)
        self.allowed: list[str] | None = None  # read once per form, when the options render

    def label_from_instance(self, obj: Variant) -> str:
        if self.allowed is None:
            self.allowed = get_allowed_licences()
        refusal = check_licence(obj, self.allowed)
        return f"{obj} ({obj.format})" + (f" — refused: {refusal}" if refusal else "")


class DeploymentForm(ReasonFormMixin):
    name = forms.RegexField(
        regex=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        max_length=63,
        help_text="Lower-case letters, digits and '-'; it names the containers.",
    )
    variant = VariantChoiceField(label="Catalog variant")
    runtime = forms.ChoiceField(choices=Runtime.choices, initial=Runtime.LLAMACPP)
    image = forms.CharField(
        required=False,
        max_length=255,
        help_text="Leave empty for this install's image of the runtime (custom: in the args).",
    )
    runtime_args = forms.CharField(
        required=False,
        label="Runtime arguments (JSON)",
        widget=forms.Textarea(
            attrs={"rows": 5, "class": "mono", "placeholder": '{"context_size": 8192}'}
        ),
        help_text="A JSON object; the arguments each runtime knows are listed below.",
    )
    replicas = forms.IntegerField(min_value=0, max_value=MAX_REPLICAS, initial=1)
    cpus = forms.FloatField(required=False, min_value=0.1, label="CPU limit", help_text="Cores.")
    memory = forms.CharField(
        required=False, label="Memory limit", help_text="e.g. 8Gi or 4G; empty: none."
    )
    gpus = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=16,
        label="GPUs",
        help_text="Per replica; empty: 1 when the runtime needs a GPU, else 0.",
    )
    selector = LabelsField(
        required=False, label="Node selector", help_text="key=value per line; all must match."
    )
    placement_strategy = forms.ChoiceField(
        choices=PlacementStrategy.choices, initial=PlacementStrategy.SPREAD, label="Placement"
    )
    port = forms.IntegerField(
        required=False,
        min_value=1024,
        max_value=65535,
        help_text="Fixed host port; empty: one per replica from the node's range.",
    )
    env = forms.CharField(
        required=False,
        label="Environment",
        widget=forms.Textarea(
            attrs={"rows": 3, "class": "mono", "placeholder": "OMP_NUM_THREADS=4"}
        ),
        help_text="KEY=value per line; plain values only, no secrets.",
    )
    max_surge = forms.IntegerField(min_value=0, max_value=MAX_REPLICAS, initial=1)
    max_unavailable = forms.IntegerField(min_value=0, max_value=MAX_REPLICAS, initial=0)
    min_healthy_seconds = forms.IntegerField(min_value=0, max_value=3600, initial=10)
    healthy_deadline_seconds = forms.IntegerField(min_value=10, max_value=86400, initial=300)
    progress_deadline_seconds = forms.IntegerField(min_value=30, max_value=86400, initial=600)
    auto_revert = forms.BooleanField(
        required=False, initial=True, help_text="Roll back to the last stable revision on failure."
    )
    revision_history_limit = forms.IntegerField(
        min_value=0,
        max_value=MAX_HISTORY_LIMIT,
        initial=10,
        help_text="Old revisions kept rollback-able (their history is kept forever).",
    )
    field_order = [
        "name",
        "variant",
        "runtime",
        "image",
        "runtime_args",
        "replicas",
        "cpus",
        "memory",
        "gpus",
        "selector",
        "placement_strategy",
        "port",
        "env",
        "max_surge",
        "max_unavailable",
        "min_healthy_seconds",
        "healthy_deadline_seconds",
        "progress_deadline_seconds",
        "auto_revert",
        "revision_history_limit",
        "reason",
    ]

    def clean_runtime_args(self) -> dict[str, Any]:
        text = (self.cleaned_data.get("runtime_args") or "").strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg} (line {exc.lineno}).") from None
        if not isinstance(value, dict):
            raise forms.ValidationError('Give a JSON object, e.g. {"context_size": 8192}.')
        return value

    def clean_memory(self) -> int | None:
        text = (self.cleaned_data.get("memory") or "").strip()
        if not text:
            return None
        try:
            return parse_bytes(text)
        except ValueError:
            raise forms.ValidationError("Give a size such as 8Gi, 4G or 512Mi.") from None

    def clean_env(self) -> dict[str, str]:
        return parse_env(self.cleaned_data.get("env") or "")

    def to_spec(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "variant": data["variant"].pk,
            "runtime": data["runtime"],
            "image": data["image"] or "",
            "runtime_args": data["runtime_args"],
            "replicas": data["replicas"],
            "resources": {
                "cpus": data["cpus"],
                "memory_bytes": data["memory"],
                "gpus": data["gpus"],
            },
            "placement": {"selector": data["selector"], "strategy": data["placement_strategy"]},
            "port": data["port"],
            "env": data["env"],
            "strategy": {key: data[key] for key in STRATEGY_DEFAULTS},
        }

    def add_spec_errors(self, error: SpecError) -> None:
        for path, message in error.flat.items():
            prefix = max(
                (p for p in FIELD_FOR if path == p or path.startswith(p + ".")),
                key=len,
                default=None,
            )
            if prefix is None:
                self.add_error(None, f"{path}: {message}")
                continue
            rest = path[len(prefix) + 1 :]
            self.add_error(FIELD_FOR[prefix], f"{rest}: {message}" if rest else message)


def initial_from_spec(spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    resources = spec.get("resources") or {}
    placement = spec.get("placement") or {}
    strategy = {**STRATEGY_DEFAULTS, **(spec.get("strategy") or {})}
    return {
        "variant": spec.get("variant"),
        "runtime": spec.get("runtime"),
        "image": spec.get("image") or "",
        "runtime_args": json.dumps(spec.get("runtime_args") or {}, indent=2)
        if spec.get("runtime_args")
        else "",
        "replicas": spec.get("replicas", 1),
        "cpus": resources.get("cpus"),
        "memory": format_size(resources.get("memory_bytes")),
        "gpus": resources.get("gpus"),
        "selector": format_labels(placement.get("selector") or {}),
        "placement_strategy": placement.get("strategy") or PlacementStrategy.SPREAD,
        "port": spec.get("port"),
        "env": "\n".join(f"{k}={v}" for k, v in (spec.get("env") or {}).items()),
        **strategy,
        **extra,
    }


class DeploymentEditForm(DeploymentForm):
    """The same fields without the name (it names containers and never changes)."""

    version = forms.IntegerField(widget=forms.HiddenInput)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        del self.fields["name"]
        self.fields["replicas"].help_text = "Changing only this scales without a new revision."


class ScaleForm(ReasonFormMixin):
    replicas = forms.IntegerField(min_value=0, max_value=MAX_REPLICAS)
