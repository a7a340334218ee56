#!/bin/sh
# Entrypoint of the SLM Fleet image: prepares the PostgreSQL password, then runs the command.
#
# The database password is kept out of DATABASE_URL (and so out of `docker inspect`): compose
# sets DATABASE_URL without a password, FLEET_DB_PASSWORD_FILE to the mounted secret and
# PGPASSFILE to a path on the container's tmpfs. This script writes the password there in
# libpq's password-file format (mode 0600); libpq reads it whenever the URL has no password.
# Because the file lives as long as the container, `docker compose exec` commands use it too.
set -eu

if [ -n "${FLEET_DB_PASSWORD_FILE:-}" ]; then
    if [ ! -r "$FLEET_DB_PASSWORD_FILE" ]; then
        echo "fleet-entrypoint: FLEET_DB_PASSWORD_FILE=$FLEET_DB_PASSWORD_FILE cannot be read" \
            "by uid $(id -u); check the secret file's permissions." >&2
        exit 1
    fi
    password=$(cat "$FLEET_DB_PASSWORD_FILE")
    if [ -z "$password" ]; then
        echo "fleet-entrypoint: FLEET_DB_PASSWORD_FILE=$FLEET_DB_PASSWORD_FILE is empty." >&2
        exit 1
    fi
    PGPASSFILE=${PGPASSFILE:-/tmp/.pgpass}
    export PGPASSFILE
    # Backslash and colon are the only characters the format needs escaped.
    escaped=$(printf '%s' "$password" | sed -e 's/\\/\\\\/g' -e 's/:/\\:/g')
    (
        umask 077
        printf '*:*:*:*:%s\n' "$escaped" > "$PGPASSFILE"
    )
    unset password escaped
fi

exec "$@"
