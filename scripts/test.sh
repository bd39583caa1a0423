#!/usr/bin/env bash
# test.sh: run every test with the race detector against a real PostgreSQL.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
if [ -z "${VAULT_TEST_DATABASE_URL:-}" ]; then
  eval "$(scripts/devdb.sh start | sed 's/^/export /')"
fi
export VAULT_TEST_DATABASE_URL
go vet ./...
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt needed: $unformatted" >&2; exit 1; fi
exec go test -race -count=1 -timeout 30m ./... "$@"
