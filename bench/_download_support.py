"""Settings and nginx helpers shared by bench/download.py and its agent part."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from _common import ROOT, log

FLEET_CONF = ROOT / "docker" / "nginx" / "fleet.conf"
REDIS_URL = "redis://127.0.0.1:6379/13"
ACCEL_PREFIX = "/_store/"
REPO_ID = "bench/tiny-llama-1g"
TARGETS = {"mirror_vs_nginx": 0.9, "resume_bytes_ratio": 1.05}
MB = 1_000_000


# --- nginx ----------------------------------------------------------------------------------
def nginx_binary() -> str:
    """Debian's nginx, installed with apt-get when missing."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        raise RuntimeError("nginx is missing; install it (apt-get install nginx) and rerun")
    log("installing nginx (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)  # noqa: S607
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "nginx"],  # noqa: S607
        env=env,
        check=True,
        capture_output=True,
    )
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(found, os.X_OK):
        raise RuntimeError("apt-get installed nginx but no nginx binary was found")
    return found


def nginx_version(binary: str) -> str:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=True)  # noqa: S603
    return (out.stderr or out.stdout).strip().split("/")[-1]


def production_snippet(
    *, upstream_port: int, mirror_port: int, redirect_port: int, store: Path
) -> str:
    """docker/nginx/fleet.conf with its placeholders filled for loopback and TLS left out.

    Every substitution must match exactly as often as expected: when the file changes shape,
    the bench says so instead of measuring something else.
    """
    text = FLEET_CONF.read_text()
    replacements = [
        ("server web:8000;", f"server 127.0.0.1:{upstream_port};", 1),
        ("alias /var/lib/fleet/store/;", f"alias {store}/;", 1),
        ("listen 443 ssl;", f"listen 127.0.0.1:{mirror_port};", 1),
        ("listen 80;", f"listen 127.0.0.1:{redirect_port};", 1),
    ]
    for old, new, count in replacements:
        found = text.count(old)
        if found != count:
            raise RuntimeError(f"{FLEET_CONF}: expected {count}x {old!r}, found {found}")
        text = text.replace(old, new)
    # IPv6 listeners, HTTP/2 (plain-text HTTP/1.1 here, as the clients speak) and TLS.
    dropped = re.compile(r"^\s*(listen \[::\]:\d+.*|http2 on;|ssl_\w+\s.*)$")
    lines = [line for line in text.splitlines() if not dropped.match(line)]
    if sum(1 for line in text.splitlines() if dropped.match(line)) < 4:
        raise RuntimeError(f"{FLEET_CONF}: the TLS lines the bench drops were not found")
    return "\n".join(lines) + "\n"


def static_server(
    *, port: int, root: Path, resolve_prefix: str, files: list[dict[str, Any]]
) -> str:
    """A plain nginx static server for the same files under the same URLs, no application."""
    locations = []
    for entry in files:
        headers = "".join(
            f'        add_header {name} "{value}" always;\n'
            for name, value in entry["headers"].items()
        )
        locations.append(
            f"    location = {resolve_prefix}{entry['path']} {{\n"
            "        etag off;\n"
            f"{headers}"
            "    }\n"
        )
    return (
        "server {\n"
        f"    listen 127.0.0.1:{port};\n"
        f"    root {root};\n"
        "    sendfile on;\n"
        "    tcp_nopush on;\n"
        "    location /hub/api/ {\n"
        "        default_type application/json;\n"
        "    }\n" + "".join(locations) + "}\n"
    )


def nginx_main_conf(*, prefix: Path, snippet: Path, static: Path) -> str:
    mime = Path("/etc/nginx/mime.types")
    types = f"include {mime};" if mime.is_file() else "types { application/json json; }"
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # http-level settings as in Debian's /etc/nginx/nginx.conf (sendfile, tcp_nopush, types)
    return f"""worker_processes auto;
daemon off;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{
    worker_connections 1024;
}}
http {{
    {types}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    types_hash_max_size 2048;
    log_format bench '$server_port $request_method "$request_uri" $status $body_bytes_sent '
                     '$request_time "$http_range" "$uri"';
    access_log {prefix / "access.log"} bench;
{temp}
    include {snippet};
    include {static};
}}
"""


def read_access_log(path: Path, offset: int, port: int) -> list[dict[str, Any]]:
    """The access-log entries of one server (by port) written after ``offset``."""
    pattern = re.compile(r'^(\d+) (\S+) "([^"]*)" (\d+) (\d+) (\S+) "([^"]*)" "([^"]*)"$')
    entries = []
    with path.open("rb") as handle:
        handle.seek(offset)
        for raw in handle.read().decode(errors="replace").splitlines():
            match = pattern.match(raw)
            if match and int(match.group(1)) == port:
                entries.append(
                    {
                        "method": match.group(2),
                        "uri": match.group(3),
                        "status": int(match.group(4)),
                        "bytes": int(match.group(5)),
                        "seconds": float(match.group(6)),
                        "range": match.group(7),
                        # where nginx served it from: the internal location after X-Accel-Redirect
                        "served_uri": match.group(8),
                    }
                )
    return entries
