#!/usr/bin/env python3
"""Container health check for the web process: GET /healthz, healthy on HTTP 200.

Standard library only (the slim image has no curl). The request carries a Host header taken
from ALLOWED_HOSTS, because Django answers 400 to a host it does not allow, and
``X-Forwarded-Proto: https`` as the reverse proxy would send it. Redirects are not followed: a
redirect means a misconfiguration and counts as unhealthy.

Environment: FLEET_HEALTHCHECK_URL (default http://127.0.0.1:8000/healthz),
FLEET_HEALTHCHECK_TIMEOUT seconds (default 4).
"""

from __future__ import annotations

import http.client
import os
import sys
from urllib.parse import urlsplit


def host_header() -> str:
    for entry in os.environ.get("ALLOWED_HOSTS", "").split(","):
        entry = entry.strip()
        if not entry or "*" in entry:
            continue
        return entry.lstrip(".")  # ".example.com" allows example.com and its subdomains
    return "localhost"


def main() -> int:
    url = urlsplit(os.environ.get("FLEET_HEALTHCHECK_URL", "http://127.0.0.1:8000/healthz"))
    timeout = float(os.environ.get("FLEET_HEALTHCHECK_TIMEOUT", "4"))
    connection = http.client.HTTPConnection(
        url.hostname or "127.0.0.1", url.port or 80, timeout=timeout
    )
    try:
        connection.request(
            "GET",
            url.path or "/healthz",
            headers={
                "Host": host_header(),
                "X-Forwarded-Proto": "https",
                "User-Agent": "fleet-healthcheck",
            },
        )
        response = connection.getresponse()
        response.read()
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    if response.status != 200:
        print(f"unhealthy: HTTP {response.status} from {url.path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
