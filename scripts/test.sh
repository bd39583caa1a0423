#!/usr/bin/env bash
# test.sh: run every test with the race detector against a real PostgreSQL.
# Each stage says when it starts, so that a few silent minutes (the race
# build, cmd/vault's tests) do not look like a hang.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
started=$SECONDS
stage() { printf 'test.sh: [%s] %s (%ds so far)\n' "$1" "$2" "$((SECONDS - started))" >&2; }
stage 1/6 "database: the dev PostgreSQL (scripts/devdb.sh) unless VAULT_TEST_DATABASE_URL is set"
# Tests create databases as the owner (VAULT_TEST_DATABASE_URL) and connect
# as the runtime login (VAULT_TEST_RUNTIME_URL), as the server does.
if [ -z "${VAULT_TEST_DATABASE_URL:-}" ]; then
  eval "$(scripts/devdb.sh start | sed 's/^/export /')"
fi
export VAULT_TEST_DATABASE_URL VAULT_TEST_RUNTIME_URL
# Two tests drive real Debian tools: the restic integration tests run the
# restic client, and TestComposeFileIsValidAndLeastPrivileged validates
# docker-compose.yml with docker-compose (no Docker daemon needed). Install
# them as root when missing, as devdb.sh does PostgreSQL. Without them those
# tests fail, unless VAULT_SKIP_RESTIC=1 / VAULT_SKIP_COMPOSE=1 (developers
# only; never CI).
need() { # need TOOL PACKAGE SKIPVAR
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "${!3:-}" = 1 ]; then
    echo "test.sh: WARNING: $3=1 and $1 is not installed: the tests that need it are SKIPPED" >&2
  elif [ "$(id -u)" -eq 0 ]; then
    echo "test.sh: installing $2 (apt-get install $2)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "$2" >&2 || { apt-get update -qq >&2 && apt-get install -y -qq "$2" >&2; } ||
      echo "test.sh: could not install $2: the tests that need it will fail" >&2
  else
    echo "test.sh: $1 is not installed and this is not root: the tests that need it will fail." \
      "Install it (sudo apt-get install $2) or set $3=1 to skip them." >&2
  fi
}
stage 2/6 "tools: restic and docker-compose for the tests that drive them"
need restic restic VAULT_SKIP_RESTIC
need docker-compose docker-compose VAULT_SKIP_COMPOSE
stage 3/6 "go vet and gofmt (the first vet compiles everything: a minute or two)"
go vet ./...
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt needed: $unformatted" >&2; exit 1; fi
# A short fuzz run of every parser of untrusted input (scripts/fuzz.sh).
stage 4/6 "fuzz: every parser of untrusted input, briefly (a line per target)"
FUZZTIME=${FUZZTIME:-20000x} scripts/fuzz.sh
# go test prints results in package order, so cmd/vault (first by name,
# longest by far) would hold back every other line for minutes: it runs
# on its own, last.
stage 5/6 "go test -race: every package but cmd/vault (a line per package)"
rc=0
go test -race -count=1 -timeout 30m $(go list ./... | grep -v '/cmd/vault$') "$@" || rc=$?
stage 6/6 "go test -race ./cmd/vault: the CLI end to end, a few minutes"
go test -race -count=1 -timeout 30m ./cmd/vault "$@" || rc=$?
if [ "$rc" -eq 0 ]; then
  stage done "all tests passed"
else
  stage done "FAILED: see the FAIL lines above"
  exit "$rc"
fi
