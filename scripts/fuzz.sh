#!/usr/bin/env bash
# fuzz.sh: run every Go fuzz target for FUZZTIME each (default 20000x, an
# execution count: a count, unlike a duration, does the same work on a
# loaded CI machine as on a quiet one). `make test` runs it briefly so that
# a parser change that panics on input the corpus does not hold yet is
# caught; `make fuzz FUZZTIME=5m` digs deeper. The committed corpora
# (testdata/fuzz) also run as ordinary tests.
#
# A finding is a failing input the fuzzer wrote into testdata/fuzz: that
# fails the run. A fuzzer that fails without writing one (its worker
# process hung or was killed: seen on busy 2-core machines) is reported
# with its output, and the run goes on, since the corpus still ran as a
# plain test and there is no input to fix.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-20000x}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
grep -l --include='*_test.go' -r '^func Fuzz' internal cmd | sort | while read -r f; do
  pkg=./$(dirname "$f")
  for t in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$f"); do
    echo "fuzz.sh: $pkg $t for $fuzztime" >&2
    if go test -run='^$' -fuzz="^$t\$" -fuzztime="$fuzztime" "$pkg" >"$log" 2>&1; then
      continue
    fi
    tail -n 30 "$log" >&2
    if [ -n "$(git status --porcelain -- "$pkg/testdata/fuzz/$t")" ]; then
      echo "fuzz.sh: $t found a failing input in $pkg/testdata/fuzz/$t; rerun: go test -run='^$t\$' $pkg" >&2
      exit 1
    fi
    echo "fuzz.sh: warning: the fuzzer for $t failed without a failing input (output above); its corpus still runs as a test" >&2
  done
done
