# Shared helpers for scripts/run and scripts/test (sourced, not executed).
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

pick_python() {
    local candidate
    for candidate in "${FLEET_PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    die "Python 3.11 or newer is needed (set FLEET_PYTHON to its path)."
}

# ensure_venv [dev]: create .venv and install the project when needed: its dependencies from
# the lock file (requirements/runtime.txt, or requirements/dev.txt with dev), every file
# checked against the lock's sha256 (pip --require-hashes), then the project itself.
ensure_venv() {
    local extras="${1:-}" lock="$ROOT/requirements/runtime.txt" stamp
    if [ "$extras" = dev ]; then lock="$ROOT/requirements/dev.txt"; fi
    if [ ! -x "$PY" ]; then
        say "creating the virtual environment in .venv"
        "$(pick_python)" -m venv "$VENV"
    fi
    stamp="$VENV/.installed-$(cat "$ROOT/pyproject.toml" "$lock" | sha256sum | cut -c1-16)-${extras:-runtime}"
    if [ ! -f "$stamp" ]; then
        say "installing $(basename "$lock") into .venv (hashes checked)"
        "$PY" -m pip install --quiet --disable-pip-version-check --require-hashes -r "$lock"
        # the project itself: its dependencies are the locked ones installed above
        (cd "$ROOT" && "$PY" -m pip install --quiet --disable-pip-version-check \
            --no-deps --no-build-isolation -e .)
        rm -f "$VENV"/.installed-*
        touch "$stamp"
        # a dev install also satisfies a runtime install (dev.txt holds runtime.txt's pins)
        if [ "$extras" = dev ]; then
            touch "$VENV/.installed-$(cat "$ROOT/pyproject.toml" "$ROOT/requirements/runtime.txt" \
                | sha256sum | cut -c1-16)-runtime"
        fi
    fi
}

APT_UPDATED=""
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get is missing: install $* by hand."
    [ "$(id -u)" = 0 ] || die "installing $* needs root (apt-get); run as root or install it first."
    if [ -z "$APT_UPDATED" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

ensure_postgres() {
    if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return; fi
    say "starting PostgreSQL"
    local version
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)"
    [ -n "$version" ] || die "PostgreSQL is not installed (no /etc/postgresql)."
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && return; sleep 1; done
    die "PostgreSQL did not become ready on 127.0.0.1:5432"
}

ensure_redis() {
    if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
    say "starting Redis"
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return; sleep 0.5; done
    die "Redis did not become ready on 127.0.0.1:6379"
}

DOCKERD_PID=""
# Starts the Docker engine when it is not running. Private bridge networks are off: these
# machines flag traffic to private ranges, so test containers use the host network.
ensure_docker() {
    if docker info >/dev/null 2>&1; then return; fi
    command -v dockerd >/dev/null 2>&1 || { say "installing the Docker engine"; apt_install docker.io; }
    say "starting the Docker engine"
    mkdir -p "$ROOT/var/test"
    dockerd --bridge=none --iptables=false >"$ROOT/var/test/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 1
    done
    tail -n 30 "$ROOT/var/test/dockerd.log" >&2 || true
    die "the Docker engine did not start (log above, full log in var/test/dockerd.log)"
}

stop_docker_if_started() {
    if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        say "stopping the Docker engine we started (pid $DOCKERD_PID)"
        kill "$DOCKERD_PID" 2>/dev/null || true
        for _ in $(seq 1 20); do kill -0 "$DOCKERD_PID" 2>/dev/null || return 0; sleep 0.5; done
        kill -9 "$DOCKERD_PID" 2>/dev/null || true
    fi
}

ensure_chromium() {
    [ -x /usr/bin/chromium ] && return
    say "installing Chromium (for the browser tests)"
    apt_install chromium chromium-driver fonts-dejavu-core
}

# Debian's prometheus (with promtool): the monitoring tests check the shipped rules and config
# and start a real Prometheus (by PID, on a free port) against a live test server.
ensure_prometheus() {
    [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] && return
    say "installing Prometheus (for the monitoring tests)"
    apt_install prometheus
}

# Debian's wrk: bench/gateway.py's throughput clients (a Python client would spend more CPU a
# request than the replicas it measures). Benchmarks run after scripts/test has set things up.
ensure_wrk() {
    command -v wrk >/dev/null 2>&1 && return
    say "installing wrk (for bench/gateway.py)"
    apt_install wrk
}

# ensure_database URL: create the PostgreSQL database named in URL when it is missing.
ensure_database() {
    "$PY" - "$1" <<'PYEOF'
import sys
from urllib.parse import urlsplit

import psycopg

url = urlsplit(sys.argv[1])
name = url.path.lstrip("/")
admin = url._replace(path="/postgres").geturl()
with psycopg.connect(admin, autocommit=True) as conn:
    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
        conn.execute(f'CREATE DATABASE "{name}"')
        print(f"created database {name}", file=sys.stderr)
PYEOF
}
