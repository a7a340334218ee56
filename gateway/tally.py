"""Reading token usage from answers while passing them on (JSON bodies and SSE streams)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Tally:
    """What the answer said about tokens, gathered while passing it on."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reported: bool = False
    chunks: int = 0  # streamed chunks carrying choices (the count when usage is missing)

    def take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)
            self.reported = True


class SseFilter:
    """Splits a server-sent event stream into events, reading usage on the way.

    With ``strip_usage`` the usage-only chunk the gateway asked for is not passed on, so
    only whole events are forwarded; otherwise bytes go on exactly as they came.
    """

    def __init__(self, tally: Tally, strip_usage: bool) -> None:
        self.tally = tally
        self.strip_usage = strip_usage
        self.rest = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self.rest + chunk
        events = data.split(b"\n\n")
        self.rest = events.pop()
        kept = [event for event in events if self._keep(event)]
        if not self.strip_usage:
            return chunk
        return b"".join(event + b"\n\n" for event in kept)

    def finish(self) -> bytes:
        rest, self.rest = self.rest, b""
        if rest.strip() and self._keep(rest):
            return rest if self.strip_usage else b""
        return b""

    def _keep(self, event: bytes) -> bool:
        line = event.strip()
        if not line.startswith(b"data:"):
            return True
        payload = line[5:].strip()
        if not payload.startswith(b"{"):
            return True
        if b'"usage"' not in payload:
            if b'"choices"' in payload:
                self.tally.chunks += 1
            return True
        try:
            message = json.loads(payload)
        except ValueError:
            return True
        usage = message.get("usage") if isinstance(message, dict) else None
        if usage:
            self.tally.take_usage(usage)
        choices = message.get("choices") if isinstance(message, dict) else None
        if choices:
            self.tally.chunks += 1
            return True
        return not (self.strip_usage and usage)


def usage_from_json(data: bytes, tally: Tally) -> None:
    try:
        message = json.loads(data)
    except ValueError:
        return
    if isinstance(message, dict):
        tally.take_usage(message.get("usage"))
