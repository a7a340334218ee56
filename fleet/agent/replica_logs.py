"""Agent task ``fleet.agent.replica_logs``: a replica container's last log lines.

No Django here. The control plane sends a ``replica_logs`` command (deployments/logs.py)
with ``container_name``, ``tail`` (how many lines at most) and ``since`` (a timestamp this
module returned before, or ""); the agent answers over the command-result endpoint with the
lines, each prefixed by Docker's timestamp normalised to nanoseconds
(``2025-01-02T03:04:05.123456789Z <text>``), so the control plane can compare them as
strings, drop lines it already holds and keep the rest.

What Docker keeps: the engine's json-file / local log drivers keep a container's output for
as long as the container exists, across restarts of that same container (the restart policy
``on-failure`` restarts it in place, and ``docker logs`` then shows every run's output, oldest
first, within the driver's rotation limits). Once a container is removed (the agent replaces
a crashed or changed container by removing it and running a new one of the same name) its
logs are gone from the node: only what the control plane fetched before is left, on the
Replica row (``last_logs``).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from fleet.agent import containers
from fleet.agent.docker_driver import DockerDriver, translated_errors
from fleet.agent.errors import AdapterError
from fleet.agent.runtime import Runtime, app

log = logging.getLogger("fleet.agent")

MAX_TAIL = 1000
MAX_LINE_CHARS = 4000
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)\s?(.*)$")


def normalise_line(raw: str) -> str | None:
    """``<timestamp> <text>`` with the timestamp's fraction padded to 9 digits; None if the
    line does not start with a Docker timestamp (it then belongs to the previous line)."""
    match = _STAMP.match(raw)
    if match is None:
        return None
    seconds, fraction, zone, text = match.groups()
    if zone != "Z":  # Docker writes UTC; anything else is converted to keep string order
        moment = datetime.fromisoformat(f"{seconds}{zone}").astimezone(UTC)
        seconds = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{seconds}.{(fraction or '').ljust(9, '0')}Z {text[:MAX_LINE_CHARS]}"


def parse_lines(raw: bytes) -> list[str]:
    """Docker's ``timestamps=True`` output as normalised lines (oldest first)."""
    lines: list[str] = []
    for part in raw.decode("utf-8", errors="replace").splitlines():
        line = normalise_line(part.rstrip("\r"))
        if line is not None:
            lines.append(line)
        elif lines and part:
            lines[-1] = (lines[-1] + " " + part)[: MAX_LINE_CHARS + 32]
    return lines


def since_seconds(since: str) -> float | None:
    """A returned line's timestamp as UNIX seconds for Docker's ``since`` (None if empty)."""
    if not since:
        return None
    stamp = since.split(" ", 1)[0].replace("Z", "+00:00")
    whole, _, rest = stamp.partition(".")
    fraction, zone = (rest[:9], rest[9:]) if rest else ("0", "+00:00")
    try:
        moment = datetime.fromisoformat(whole + zone)
    except ValueError:
        return None
    return moment.timestamp() + int(fraction.ljust(9, "0")[:9]) / 1e9


def read_logs(name: str, *, tail: int, since: str, driver: DockerDriver) -> dict[str, Any]:
    """The container's last ``tail`` lines (after ``since`` when given), with its state.

    ``restarts`` says how many earlier runs of this same container the lines may include.
    """
    tail = max(1, min(int(tail or 200), MAX_TAIL))
    client = driver.sdk()
    with translated_errors("read the replica's logs"):
        container = containers._find(client, name)
        if container is None:
            return {"container": name, "found": False, "lines": [], "restarts": 0}
        kwargs: dict[str, Any] = {"stdout": True, "stderr": True, "timestamps": True, "tail": tail}
        after = since_seconds(since)
        if after:
            kwargs["since"] = after
        raw = bytes(container.logs(**kwargs))
    attrs = getattr(container, "attrs", None) or {}
    state = attrs.get("State") or {}
    return {
        "container": name,
        "found": True,
        "container_id": str(getattr(container, "id", ""))[:12],
        "status": str(getattr(container, "status", "")),
        "started_at": str(state.get("StartedAt") or ""),
        "restarts": int(attrs.get("RestartCount") or 0),
        "lines": parse_lines(raw),
        "tail": tail,
        "since": since,
    }


@app.task(name="fleet.agent.replica_logs", ignore_result=True)
def replica_logs(command_id: int, arguments: dict[str, Any] | None = None) -> None:
    """Answer a ``replica_logs`` command with the container's last lines (or the error)."""
    args = arguments or {}
    driver = DockerDriver(base_url=Runtime.docker_url, timeout=30)
    try:
        result = read_logs(
            str(args.get("container_name", "")),
            tail=int(args.get("tail") or 200),
            since=str(args.get("since") or ""),
            driver=driver,
        )
    except AdapterError as exc:
        Runtime.client().command_result(command_id, result=None, error=exc.message)
        return
    finally:
        driver.close()
    Runtime.client().command_result(command_id, result=result, error=None)
    log.info("replica_logs %s: %d lines", command_id, len(result["lines"]))
