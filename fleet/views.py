from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def nodes(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "empty_state.html",
        {
            "title": "Nodes",
            "headline": "No nodes yet",
            "body": (
                "Nodes are hosts that run the SLM Fleet agent. Joining nodes with join "
                "tokens, their inventory and liveness arrive with the node agent."
            ),
        },
    )
