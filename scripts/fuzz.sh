#!/usr/bin/env bash
# fuzz.sh: run every Go fuzz target for FUZZTIME each (default 5s).
# `make test` runs it briefly so that a parser change that panics on input
# the corpus does not hold yet is caught; `make fuzz FUZZTIME=5m` digs
# deeper. The committed corpora (testdata/fuzz) also run as ordinary tests.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-5s}
grep -l --include='*_test.go' -r '^func Fuzz' internal cmd | sort | while read -r f; do
  pkg=./$(dirname "$f")
  for t in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$f"); do
    echo "fuzz.sh: $pkg $t for $fuzztime" >&2
    go test -run='^$' -fuzz="^$t\$" -fuzztime="$fuzztime" "$pkg" >/dev/null ||
      { echo "fuzz.sh: $t failed; rerun: go test -run='^$' -fuzz='^$t\$' $pkg (the failing input is in $pkg/testdata/fuzz/$t)" >&2; exit 1; }
  done
done
