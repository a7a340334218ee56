from __future__ import annotations

from typing import Any

from django import forms

from core.forms import ReasonFormMixin
from core.models import Secret
from models_catalog.hub import SEARCH_SORTS


class ImportForm(ReasonFormMixin):
    repo_id = forms.CharField(
        max_length=200,
        label="Repository",
        help_text="owner/name on Hugging Face, e.g. Qwen/Qwen2.5-0.5B-Instruct",
    )
    revision = forms.CharField(
        max_length=200,
        required=False,
        help_text="Branch, tag or commit; empty = the default branch. The commit is pinned.",
    )
    secret_name = forms.ChoiceField(
        required=False,
        label="Token secret",
        help_text="For gated or private repositories: a stored secret holding a token.",
    )
    field_order = ["repo_id", "revision", "secret_name", "reason"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = Secret.objects.order_by("name").values_list("name", flat=True)
        self.fields["secret_name"].choices = [("", "— none —"), *((n, n) for n in names)]  # type: ignore[attr-defined]


class SearchForm(forms.Form):
    q = forms.CharField(required=False, label="Text", max_length=200)
    task = forms.CharField(
        required=False,
        max_length=60,
        widget=forms.TextInput(attrs={"placeholder": "text-generation"}),
    )
    library = forms.CharField(
        required=False, max_length=60, widget=forms.TextInput(attrs={"placeholder": "gguf"})
    )
    sort = forms.ChoiceField(
        choices=[(s, s.replace("_", " ")) for s in SEARCH_SORTS],
        required=False,
        initial="downloads",
    )

    def has_query(self) -> bool:
        data = self.cleaned_data if self.is_bound and self.is_valid() else {}
        return any(data.get(name) for name in ("q", "task", "library"))


class RepinForm(ReasonFormMixin):
    commit = forms.RegexField(regex=r"^[0-9a-f]{40}$", widget=forms.HiddenInput)
    version = forms.IntegerField(widget=forms.HiddenInput)
    field_order = ["reason", "commit", "version"]


class LicencePolicyForm(ReasonFormMixin):
    licences = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8}),
        required=False,
        help_text="One licence id per line (as Hugging Face names them, e.g. apache-2.0, mit).",
    )
    version = forms.IntegerField(widget=forms.HiddenInput)
    field_order = ["licences", "reason", "version"]

    def clean_licences(self) -> list[str]:
        text = self.cleaned_data.get("licences") or ""
        return [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]
