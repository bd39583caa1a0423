#!/usr/bin/env bash
# test.sh: run every test with the race detector against a real PostgreSQL.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
# Tests create databases as the owner (VAULT_TEST_DATABASE_URL) and connect
# as the runtime login (VAULT_TEST_RUNTIME_URL), as the server does.
if [ -z "${VAULT_TEST_DATABASE_URL:-}" ]; then
  eval "$(scripts/devdb.sh start | sed 's/^/export /')"
fi
export VAULT_TEST_DATABASE_URL VAULT_TEST_RUNTIME_URL
# The restic integration tests run the real client (Debian's restic
# package): install it as root when missing, as devdb.sh does PostgreSQL.
# Without it they fail, unless VAULT_SKIP_RESTIC=1 (developers only; never CI).
if ! command -v restic >/dev/null 2>&1; then
  if [ "${VAULT_SKIP_RESTIC:-}" = 1 ]; then
    echo "test.sh: WARNING: VAULT_SKIP_RESTIC=1 and restic is not installed: the restic client tests are SKIPPED" >&2
  elif [ "$(id -u)" -eq 0 ]; then
    echo "test.sh: installing restic (apt-get install restic)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq restic >&2 || { apt-get update -qq >&2 && apt-get install -y -qq restic >&2; } ||
      echo "test.sh: could not install restic: the restic tests will fail" >&2
  else
    echo "test.sh: restic is not installed and this is not root: the restic tests will fail." \
      "Install it (sudo apt-get install restic) or set VAULT_SKIP_RESTIC=1 to skip them." >&2
  fi
fi
go vet ./...
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt needed: $unformatted" >&2; exit 1; fi
# A short fuzz run of every parser of untrusted input (scripts/fuzz.sh).
FUZZTIME=${FUZZTIME:-5s} scripts/fuzz.sh
exec go test -race -count=1 -timeout 30m ./... "$@"
