from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def catalog(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "empty_state.html",
        {
            "title": "Catalog",
            "headline": "The catalog is empty",
            "body": (
                "Models imported from Hugging Face, with pinned revisions, variants and "
                "memory footprints, will be listed here."
            ),
        },
    )
