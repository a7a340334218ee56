"""Links from a history event to the page of what it is about.

Each app registers its target types in its ``AppConfig.ready()``; a history event
(:attr:`core.models.HistoryEvent.target_url`) and the timeline look the link up here. Its own
home, below :mod:`core.models` and :mod:`core.history`, which both need it.
"""

from __future__ import annotations

from django.urls import NoReverseMatch, reverse

# target_type -> URL pattern name taking the target's id, for links from the timeline.
_TARGET_URLS: dict[str, str] = {}


def register_target_url(target_type: str, url_name: str) -> None:
    _TARGET_URLS[target_type] = url_name


def target_url(target_type: str, target_id: str) -> str | None:
    url_name = _TARGET_URLS.get(target_type)
    if not url_name:
        return None
    try:
        return reverse(url_name, args=[target_id])
    except NoReverseMatch:
        return None
