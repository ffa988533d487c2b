#!/usr/bin/env bash
# The entrypoint users know from the postgres images: POSTGRES_PASSWORD / POSTGRES_USER /
# POSTGRES_DB (or POSTGRES_HOST_AUTH_METHOD=trust), a data volume, init scripts in
# /docker-entrypoint-initdb.d, and pg_imgembed created in template1 and POSTGRES_DB. Any other
# command (`pg-imgembed worker --dsn ...`) runs as given.
set -Eeuo pipefail

if [ "${1:-}" != postgres ]; then
    exec "$@"
fi
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    # setpriv execs (runuser would stay as PID 1 and keep the stop signal from the server)
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
shift  # "postgres": what follows are the server's own options

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
        echo "error: set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust, for tests only)" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s' "${POSTGRES_PASSWORD:-}" > "$pwfile"
    initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host="$auth" \
        --encoding=UTF8 --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-} >/dev/null
    rm -f "$pwfile"
    printf "listen_addresses = '*'\n" >> "$PGDATA/postgresql.conf"
    # imgembed.model_stats: PostgreSQL 17 needs no preload (the DSM registry), 15 and 16 do; set
    # either way, so an image built with another PG_MAJOR counts too.
    printf "shared_preload_libraries = 'pg_imgembed'\n" >> "$PGDATA/postgresql.conf"
    printf "host all all all %s\n" "$auth" >> "$PGDATA/pg_hba.conf"

    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" -w start >/dev/null
    psql=(psql -v ON_ERROR_STOP=1 -h /var/run/postgresql -U "$POSTGRES_USER" -X -q)
    if [ "$POSTGRES_DB" != postgres ]; then
        "${psql[@]}" -d postgres -c "CREATE DATABASE \"$POSTGRES_DB\""
    fi
    for db in template1 "$POSTGRES_DB"; do
        "${psql[@]}" -d "$db" -c "CREATE EXTENSION IF NOT EXISTS pg_imgembed CASCADE"
    done
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh) echo "running $f"; . "$f" ;;
            *.sql) echo "running $f"; "${psql[@]}" -d "$POSTGRES_DB" -f "$f" ;;
            *.sql.gz) echo "running $f"; gunzip -c "$f" | "${psql[@]}" -d "$POSTGRES_DB" ;;
            *) ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "PostgreSQL init process complete; ready for start up."
fi

exec postgres -D "$PGDATA" "$@"
