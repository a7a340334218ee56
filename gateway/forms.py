"""Console forms for access keys and aliases (the services validate what matters)."""

from __future__ import annotations

from typing import Any

from django import forms


class AccessKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(max_length=200, required=False)
    all_models = forms.BooleanField(
        required=False, initial=True, label="May use every model (deployment or alias)"
    )
    allowed_models = forms.CharField(
        required=False,
        label="Models",
        help_text="When not every model: deployment or alias names, separated by commas.",
    )
    requests_per_minute = forms.IntegerField(
        required=False, min_value=1, help_text="Empty: no limit."
    )
    tokens_per_minute = forms.IntegerField(
        required=False, min_value=1, help_text="Empty: no limit."
    )
    expires_at = forms.DateTimeField(
        required=False,
        label="Expires (UTC)",
        help_text="YYYY-MM-DD HH:MM; empty: never.",
        widget=forms.DateTimeInput(attrs={"placeholder": "2027-01-31 00:00"}),
    )

    def clean_allowed_models(self) -> list[str]:
        raw = self.cleaned_data.get("allowed_models") or ""
        return [name.strip() for name in raw.split(",") if name.strip()]

    def service_fields(self) -> dict[str, Any]:
        return dict(self.cleaned_data)


class AliasForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(max_length=200, required=False)
    targets = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "qwen-r1=90\nqwen-r2=10"}),
        help_text="One deployment per line as name=weight (weights 0–1000; 0 sends nothing).",
    )

    def clean_targets(self) -> list[dict[str, Any]]:
        targets = []
        for number, line in enumerate(self.cleaned_data["targets"].splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            name, sep, weight = line.partition("=")
            try:
                value = int(weight) if sep else 1
            except ValueError:
                raise forms.ValidationError(
                    f"Line {number}: the weight {weight.strip()!r} is not a whole number."
                ) from None
            targets.append({"deployment": name.strip(), "weight": value})
        if not targets:
            raise forms.ValidationError("Name at least one deployment.")
        return targets


def targets_text(targets: list[dict[str, Any]]) -> str:
    return "\n".join(f"{t['deployment']}={t['weight']}" for t in targets)
