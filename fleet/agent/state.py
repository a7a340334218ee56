"""The agent's identity on disk: node id, credential (mode 0600), server and broker."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "agent.json"


@dataclass
class AgentState:
    server: str
    node_id: int
    name: str
    credential: str
    queue: str
    broker_url: str
    broker_transport_options: dict[str, Any] = field(default_factory=dict)
    heartbeat_interval_seconds: int = 5

    @classmethod
    def load(cls, data_dir: Path) -> AgentState | None:
        path = data_dir / STATE_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise SystemExit(
                f"The agent state file {path} cannot be read ({exc}); remove it to join again."
            ) from None
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in raw.items() if key in known})

    def save(self, data_dir: Path) -> None:
        """Write atomically with mode 0600 (the file holds the node credential)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(self), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
