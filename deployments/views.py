from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def deployments(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "empty_state.html",
        {
            "title": "Deployments",
            "headline": "No deployments yet",
            "body": (
                "Deployments run catalog models as inference containers (llama.cpp, "
                "vLLM, Ollama or a custom image) on your nodes."
            ),
        },
    )
