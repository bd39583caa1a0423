#!/usr/bin/env bash
# devdb.sh: a private, local PostgreSQL for `make run` and `make test`.
#
#   scripts/devdb.sh start   install (Debian, as root) if missing, init, start; print the URLs
#   scripts/devdb.sh stop    stop the server
#   scripts/devdb.sh status  say whether it runs
#   scripts/devdb.sh port    print the port start would use
#
# The cluster lives under .devdb/ in the work tree (git-ignored) when the
# server's user can reach it, otherwise under /var/tmp. It listens on
# 127.0.0.1 only, with password authentication, on port $VAULT_PG_PORT
# (default 55432) the first time; that port is kept in .devdb/port and
# used again whenever VAULT_PG_PORT is unset. A VAULT_PG_PORT that differs
# from .devdb/port is refused: the URLs already handed out (.devdb/env,
# shells that eval'ed them) name the old one. To move the cluster:
# `make db-stop`, then `echo NEWPORT > .devdb/port`. PostgreSQL refuses to run as root, so as root the server
# runs as the "postgres" system user.
#
# Roles (see migrations/009_least_privilege.sql):
#   vault              the schema owner: runs `vault migrate`; CREATEDB so
#                      that tests can make their own databases; neither
#                      superuser nor CREATEROLE. Password in .devdb/password.
#   wormvault_runtime  NOLOGIN group role the migrations grant to.
#   vault_app          the server's login, member of wormvault_runtime; owns
#                      nothing. Password in .devdb/runtime-password.
# Printed (and kept in .devdb/env):
#   VAULT_DATABASE_URL        vault_app on database vault (vault serve)
#   VAULT_OWNER_DATABASE_URL  vault on database vault (vault migrate)
#   VAULT_TEST_DATABASE_URL   vault on database postgres (tests create databases)
#   VAULT_TEST_RUNTIME_URL    vault_app on database postgres (tests connect as it)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
state="$top/.devdb"
mkdir -p "$state"
log() { printf 'devdb: %s\n' "$*" >&2; }

valid_port() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1024 ] && [ "$1" -le 65535 ]; }

# resolve_port sets port: the one .devdb remembers (.devdb/port, or, for a
# .devdb made before that file existed, the port in .devdb/env), else
# $VAULT_PG_PORT, else 55432.
resolve_port() {
  local kept=""
  if [ -f "$state/port" ]; then
    kept=$(tr -d ' \n' <"$state/port")
  elif [ -f "$state/env" ]; then
    kept=$(sed -n 's|^VAULT_DATABASE_URL=.*@127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$state/env")
  fi
  if [ -n "${VAULT_PG_PORT:-}" ] && ! valid_port "$VAULT_PG_PORT"; then
    log "VAULT_PG_PORT=$VAULT_PG_PORT is not a port number between 1024 and 65535"
    exit 2
  fi
  if [ -n "$kept" ] && ! valid_port "$kept"; then
    log "$state/port holds '$kept', not a port number; write the cluster's port there (or remove the file to use VAULT_PG_PORT)"
    exit 2
  fi
  if [ -n "$kept" ] && [ -n "${VAULT_PG_PORT:-}" ] && [ "$kept" != "$VAULT_PG_PORT" ]; then
    log "this .devdb uses port $kept, but VAULT_PG_PORT=$VAULT_PG_PORT."
    log "Unset VAULT_PG_PORT to use $kept, or move the database: make db-stop; echo $VAULT_PG_PORT > $state/port"
    exit 2
  fi
  port=${kept:-${VAULT_PG_PORT:-55432}}
}

find_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

ensure_installed() {
  if find_bindir >/dev/null; then return 0; fi
  if [ "$(id -u)" -ne 0 ]; then
    log "PostgreSQL is not installed. Install it (Debian: sudo apt-get install postgresql) or set VAULT_DATABASE_URL."
    exit 1
  fi
  log "installing PostgreSQL (apt-get install postgresql)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  find_bindir >/dev/null || { log "PostgreSQL install failed"; exit 1; }
}

# run_as_owner CMD...: run as the cluster owner (postgres when we are root).
owner=$(id -un)
run_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pick_datadir() {
  if [ -f "$state/datadir" ]; then cat "$state/datadir"; return; fi
  local d="$state/pg"
  if [ "$(id -u)" -eq 0 ]; then
    mkdir -p "$d"
    chown postgres:postgres "$d"
    # The server user must be able to reach the work tree; /root usually is not.
    if ! runuser -u postgres -- test -w "$d"; then
      rmdir "$d" 2>/dev/null || true
      d="/var/tmp/wormvault-devdb-$(printf '%s' "$top" | sha256sum | cut -c1-12)"
      mkdir -p "$d"
      chown postgres:postgres "$d"
    fi
  fi
  echo "$d" >"$state/datadir"
  echo "$d"
}

start() {
  resolve_port
  ensure_installed
  local bin datadir sock pw rpw
  bin=$(find_bindir)
  datadir=$(pick_datadir)
  sock="$datadir/sock"
  if [ "$(id -u)" -eq 0 ]; then owner=postgres; fi
  local f
  for f in password runtime-password; do
    if [ ! -f "$state/$f" ]; then
      (umask 077; head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$state/$f")
    fi
  done
  pw=$(cat "$state/password")
  rpw=$(cat "$state/runtime-password")

  if [ ! -f "$datadir/PG_VERSION" ]; then
    log "initialising cluster in $datadir"
    run_as_owner "$bin/initdb" -D "$datadir" -U "$owner" --auth-local=peer --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$state/initdb.log" 2>&1 || { cat "$state/initdb.log" >&2; exit 1; }
    run_as_owner mkdir -p "$sock"
  fi
  if ! run_as_owner "$bin/pg_ctl" -D "$datadir" status >/dev/null 2>&1; then
    log "starting PostgreSQL on 127.0.0.1:$port"
    run_as_owner "$bin/pg_ctl" -D "$datadir" -w -t 60 -l "$datadir/server.log" \
      -o "-p $port -k $sock -c listen_addresses=127.0.0.1 -c max_connections=300" start >&2 \
      || { run_as_owner tail -n 30 "$datadir/server.log" >&2; exit 1; }
  fi
  echo "$port" >"$state/port"
  # Two login roles, so that the server never holds the schema owner's
  # rights (issue 13): the owner "vault" (not a superuser, no CREATEROLE;
  # CREATEDB lets tests make their own databases) and the runtime login
  # "vault_app", a member of the NOLOGIN group wormvault_runtime that the
  # migrations grant to. ALTER on every start keeps an older .devdb right.
  run_as_owner "$bin/psql" -h "$sock" -p "$port" -U "$owner" -d postgres -v ON_ERROR_STOP=1 -q >/dev/null <<SQL
SELECT 'ok';
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vault') THEN
    CREATE ROLE vault LOGIN NOSUPERUSER NOCREATEROLE CREATEDB PASSWORD '$pw';
  ELSE
    ALTER ROLE vault LOGIN NOSUPERUSER NOCREATEROLE CREATEDB PASSWORD '$pw';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wormvault_runtime') THEN
    CREATE ROLE wormvault_runtime NOLOGIN;
  END IF;
  ALTER ROLE wormvault_runtime NOLOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vault_app') THEN
    CREATE ROLE vault_app LOGIN PASSWORD '$rpw';
  END IF;
  ALTER ROLE vault_app LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS PASSWORD '$rpw';
  IF NOT pg_has_role('vault_app', 'wormvault_runtime', 'MEMBER') THEN
    GRANT wormvault_runtime TO vault_app;
  END IF;
END \$\$;
SELECT 'CREATE DATABASE vault OWNER vault' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'vault') \gexec
SQL
  local host="127.0.0.1:$port"
  {
    printf 'VAULT_DATABASE_URL=postgres://vault_app:%s@%s/vault\n' "$rpw" "$host"
    printf 'VAULT_OWNER_DATABASE_URL=postgres://vault:%s@%s/vault\n' "$pw" "$host"
    printf 'VAULT_TEST_DATABASE_URL=postgres://vault:%s@%s/postgres\n' "$pw" "$host"
    printf 'VAULT_TEST_RUNTIME_URL=postgres://vault_app:%s@%s/postgres\n' "$rpw" "$host"
  } >"$state/env"
  chmod 600 "$state/env"
  cat "$state/env"
}

stop() {
  local bin datadir
  bin=$(find_bindir) || exit 0
  [ -f "$state/datadir" ] || exit 0
  datadir=$(cat "$state/datadir")
  run_as_owner "$bin/pg_ctl" -D "$datadir" -m fast stop >&2 || true
}

status() {
  local bin datadir
  bin=$(find_bindir) || { echo "not installed"; exit 1; }
  [ -f "$state/datadir" ] || { echo "not initialised"; exit 1; }
  datadir=$(cat "$state/datadir")
  run_as_owner "$bin/pg_ctl" -D "$datadir" status
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  port) resolve_port; echo "$port" ;;
  *) echo "usage: $0 start|stop|status|port" >&2; exit 2 ;;
esac
