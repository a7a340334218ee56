"""The Celery broker a REDIS_URL stands for (or the embedded file-system broker without one).

settings.py configures the control plane's own processes with it; ``runfleet`` hands the same
to the local node's agent, whose stored broker may predate a change of mode.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit


def celery_broker_url(redis_url: str) -> str:
    """kombu spells a Redis Unix socket ``redis+socket:///path`` (redis-py and Channels read
    ``unix:///path``); its database is kombu's ``virtual_host``."""
    if not redis_url.startswith("unix://"):
        return redis_url
    parts = urlsplit(redis_url)
    query = [("virtual_host" if k == "db" else k, v) for k, v in parse_qsl(parts.query)]
    return f"redis+socket://{parts.path}" + (f"?{urlencode(query)}" if query else "")


def broker(redis_url: str, state_dir: Path) -> tuple[str, dict[str, object]]:
    """(broker URL, transport options): Redis when there is a REDIS_URL, else the file system
    under ``state_dir/broker`` (its folders are made here)."""
    if redis_url:
        return celery_broker_url(redis_url), {"visibility_timeout": 3600}
    folder = state_dir / "broker"
    for name in ("queue", "control"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    return "filesystem://localhost//", {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
    }
