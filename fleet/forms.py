from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.utils import timezone

from core.forms import ReasonFormMixin


def parse_labels(text: str) -> dict[str, str]:
    """``key=value`` per line (or comma separated) into a dict; raises ValidationError."""
    labels: dict[str, str] = {}
    for raw in text.replace(",", "\n").splitlines():
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise forms.ValidationError(f"{line!r} is not key=value.")
        labels[key.strip()] = value.strip()
    return labels


def format_labels(labels: dict[str, Any]) -> str:
    return "\n".join(f"{key}={value}" for key, value in sorted(labels.items()))


class LabelsField(forms.CharField):
    widget = forms.Textarea(attrs={"rows": 3, "placeholder": "zone=eu-1\ngpu=h100"})

    def clean(self, value: Any) -> dict[str, str]:  # type: ignore[override]
        return parse_labels(super().clean(value) or "")


class JoinTokenForm(ReasonFormMixin):
    name = forms.CharField(max_length=100, help_text="e.g. 'rack-3 GPU hosts'")
    max_uses = forms.IntegerField(min_value=1, max_value=100000, initial=1, label="Uses")
    expires_in_hours = forms.IntegerField(
        min_value=1, max_value=24 * 90, initial=24, label="Expires in (hours)"
    )
    labels = LabelsField(
        required=False, help_text="Applied to every node that joins with it: key=value per line."
    )
    field_order = ["name", "max_uses", "expires_in_hours", "labels", "reason"]

    def expires_at(self) -> Any:
        return timezone.now() + timedelta(hours=self.cleaned_data["expires_in_hours"])


class NodeLabelsForm(ReasonFormMixin):
    labels = LabelsField(required=False, help_text="key=value per line; used by placement.")
    version = forms.IntegerField(widget=forms.HiddenInput)
    field_order = ["labels", "reason", "version"]
