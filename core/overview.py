"""The overview page's figures, contributed by the apps that own them.

The overview leads with the fleet (nodes, replicas, deployments, jobs, GPU memory, gateway
traffic) but lives in core, which imports none of those apps: each app registers a provider
in its ``AppConfig.ready()`` (:func:`register_tiles`, :func:`register_steps`), and the page
renders what they return, each tile a link to the filtered list behind its number.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tile:
    """One figure: ``value`` big, ``label`` under it, ``hint`` in small type; the whole tile
    links to ``url``. ``tone``: "" (plain), "ok", "warn" or "bad"."""

    key: str
    label: str
    value: str
    url: str
    hint: str = ""
    tone: str = ""


@dataclass(frozen=True)
class Step:
    """A next thing to do for a newcomer (import, deploy, try), done or not."""

    key: str
    text: str
    url: str
    action: str
    done: bool = False
    note: str = ""


TileProvider = Callable[[], Sequence[Tile]]
StepProvider = Callable[[], Sequence[Step]]
_tiles: list[tuple[int, str, TileProvider]] = []
_steps: list[tuple[int, str, StepProvider]] = []


def register_tiles(order: int, name: str, provider: TileProvider) -> None:
    """Tiles appear by ``order``; registering ``name`` again replaces it."""
    _tiles[:] = [entry for entry in _tiles if entry[1] != name]
    _tiles.append((order, name, provider))
    _tiles.sort(key=lambda entry: entry[0])


def register_steps(order: int, name: str, provider: StepProvider) -> None:
    _steps[:] = [entry for entry in _steps if entry[1] != name]
    _steps.append((order, name, provider))
    _steps.sort(key=lambda entry: entry[0])


def tiles() -> list[Tile]:
    """Every provider's tiles; one that fails shows as an "unavailable" tile, not a 500."""
    out: list[Tile] = []
    for _, name, provider in _tiles:
        try:
            out.extend(provider())
        except Exception:
            log.exception("overview tiles %r failed", name)
            out.append(Tile(name, name.replace("_", " "), "?", "", "could not be read", "bad"))
    return out


def steps() -> list[Step]:
    """The getting-started steps, or none once every one is done."""
    out: list[Step] = []
    for _, name, provider in _steps:
        try:
            out.extend(provider())
        except Exception:
            log.exception("overview steps %r failed", name)
    return [] if all(step.done for step in out) else out


def plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def job_tiles() -> list[Tile]:
    from core.jobs import Job, JobState

    running = Job.objects.filter(state=JobState.RUNNING).count()
    queued = Job.objects.filter(state=JobState.QUEUED).count()
    return [
        Tile(
            "jobs",
            "Jobs running",
            str(running),
            "/jobs/?active=true",
            f"{queued} queued" if queued else "none queued",
        )
    ]
