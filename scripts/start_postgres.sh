#!/usr/bin/env bash
# Start (or reuse) a project-local PostgreSQL server on 127.0.0.1 for tune.py's
# multi-worker studies and their tests, and print its URL on the last line:
#
#   scripts/start_postgres.sh            # -> postgresql://wsol:wsol@127.0.0.1:55432/wsol_optuna
#   scripts/start_postgres.sh --stop     # stop it
#
# Idempotent: installs the Debian package `postgresql` when no server binaries are
# found (as root, or through sudo), creates a cluster in $WSOL_PG_DIR
# (default /tmp/wsol_lightning_pg) listening on 127.0.0.1:$WSOL_PG_PORT (default
# 55432) only, with its socket in the data directory, then a user and a database
# ($WSOL_PG_USER / $WSOL_PG_PASSWORD / $WSOL_PG_DB, default wsol / wsol / wsol_optuna).
# A second call finds the server running and only prints the URL.
# $WSOL_PG_BINDIR, when set, is the folder of the server binaries (initdb, pg_ctl, psql) to use
# instead of searching for them (and nothing is installed).
# Exit status 3: PostgreSQL is not installed and cannot be installed here (the last stderr line says
# why: no root, no apt-get, apt-get failed, no binaries in $WSOL_PG_BINDIR).
set -euo pipefail

DIR="${WSOL_PG_DIR:-/tmp/wsol_lightning_pg}"
PORT="${WSOL_PG_PORT:-55432}"
USER_NAME="${WSOL_PG_USER:-wsol}"
PASSWORD="${WSOL_PG_PASSWORD:-wsol}"
DB="${WSOL_PG_DB:-wsol_optuna}"
LOG="$DIR.log"

say() { echo "start_postgres: $*" >&2; }

find_bindir() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) /usr/local/pgsql/bin; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return 0; fi
    done
    if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir; return 0
    fi
    if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; return 0; fi
    return 1
}

if [ -n "${WSOL_PG_BINDIR:-}" ]; then
    BIN="$WSOL_PG_BINDIR"
    if [ ! -x "$BIN/initdb" ] || [ ! -x "$BIN/pg_ctl" ]; then
        say "WSOL_PG_BINDIR=$BIN holds no PostgreSQL server binaries (initdb, pg_ctl)"; exit 3
    fi
else
    BIN="$(find_bindir || true)"
fi
if [ -z "$BIN" ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"; else
        say "PostgreSQL is not installed and installing it needs root (apt-get install postgresql)"; exit 3
    fi
    if ! command -v apt-get >/dev/null 2>&1; then say "PostgreSQL is not installed and apt-get is not available"; exit 3; fi
    say "installing postgresql (apt-get)"
    if ! { $SUDO apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2; }; then
        say "apt-get install postgresql failed"; exit 3
    fi
    BIN="$(find_bindir || true)"
    [ -n "$BIN" ] || { say "postgresql installed but initdb/pg_ctl not found"; exit 3; }
fi

# The server refuses to run as root: run it as the `postgres` system user then.
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    AS=(runuser -u postgres --)
    SUPERUSER=postgres
else
    AS=()
    SUPERUSER="$(id -un)"
fi

if [ "${1:-}" = "--stop" ]; then
    if [ -f "$DIR/PG_VERSION" ]; then "${AS[@]}" "$BIN/pg_ctl" -D "$DIR" -m fast stop >&2 || true; fi
    exit 0
fi

mkdir -p "$DIR"
chmod 700 "$DIR"
[ "${#AS[@]}" -eq 0 ] || chown -R postgres: "$DIR"
touch "$LOG"; [ "${#AS[@]}" -eq 0 ] || chown postgres: "$LOG"

if [ ! -f "$DIR/PG_VERSION" ]; then
    say "creating a cluster in $DIR"
    "${AS[@]}" "$BIN/initdb" -D "$DIR" -U "$SUPERUSER" --auth-local=trust --auth-host=scram-sha-256 \
        --no-sync -E UTF8 >&2
fi

if ! "${AS[@]}" "$BIN/pg_ctl" -D "$DIR" status >/dev/null 2>&1; then
    say "starting the server on 127.0.0.1:$PORT (log: $LOG)"
    "${AS[@]}" "$BIN/pg_ctl" -D "$DIR" -l "$LOG" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=200 -c fsync=off" start >&2
fi

PSQL=("${AS[@]}" "$BIN/psql" -h "$DIR" -p "$PORT" -U "$SUPERUSER" -d postgres -v ON_ERROR_STOP=1 -qtA)
for _ in $(seq 1 30); do "${PSQL[@]}" -c "select 1" >/dev/null 2>&1 && break; sleep 1; done
if [ "$("${PSQL[@]}" -c "select 1 from pg_roles where rolname = '$USER_NAME'")" != 1 ]; then
    "${PSQL[@]}" -c "create role \"$USER_NAME\" login password '$PASSWORD'" >&2
fi
if [ "$("${PSQL[@]}" -c "select 1 from pg_database where datname = '$DB'")" != 1 ]; then
    "${PSQL[@]}" -c "create database \"$DB\" owner \"$USER_NAME\"" >&2
fi
echo "postgresql://$USER_NAME:$PASSWORD@127.0.0.1:$PORT/$DB"
