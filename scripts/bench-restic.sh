#!/usr/bin/env bash
# bench-restic.sh: restic against the vault, in one run with the same
# ~1 GiB dataset, next to restic against a local repository (no HTTP: the
# client's own floor) and, when REST_SERVER names a rest-server binary,
# against restic's rest-server --append-only.
#
#   scripts/bench-restic.sh                 # vault + local
#   REST_SERVER=/path/to/rest-server scripts/bench-restic.sh
#
# Needs restic and the dev PostgreSQL (started like `make test` does). Work
# files go to BENCH_DIR (default: a new directory under /var/tmp, on disk:
# fsync is free on tmpfs), removed at the end. Prints a Markdown table.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
command -v restic >/dev/null || { echo "bench-restic: restic is not installed (apt-get install restic)" >&2; exit 1; }
if [ -z "${VAULT_TEST_DATABASE_URL:-}" ]; then
  eval "$(scripts/devdb.sh start | sed 's/^/export /')"
fi
bench=${BENCH_DIR:-$(mktemp -d /var/tmp/wv-restic-bench.XXXXXX)}
mkdir -p "$bench"
db="wv_bench_restic_$$"
base=${VAULT_TEST_DATABASE_URL%/*}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  psql -q "$VAULT_TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$bench"
}
trap cleanup EXIT

go build -o "$bench/bin/vault" ./cmd/vault

# The dataset of docs/restic.md: 21 files of random bytes (640 MiB unique)
# and copies of the first 13 of them (407 MiB): 1047 MiB, 34 files.
src="$bench/src"
mkdir -p "$src/unique" "$src/copies"
sizes=(45 43 28 5 3 7 25 28 64 34 54 39 32 10 9 24 60 41 63 19 7)
for i in "${!sizes[@]}"; do
  head -c "$((sizes[i] << 20))" /dev/urandom > "$src/unique/f$(printf %03d "$i")"
  if [ "$i" -lt 13 ]; then cp "$src/unique/f$(printf %03d "$i")" "$src/copies/"; fi
done
sync

export RESTIC_PASSWORD=bench
now() { date +%s.%N; }
cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat"; } # utime+stime, USER_HZ=100
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# run NAME REPO READ-REPO [SERVER-PID]: init, backup, unchanged backup,
# restore; one table row.
run() {
  local name=$1 repo=$2 rrepo=$3 spid=${4:-}
  local cache="$bench/cache-$name" target="$bench/restore-$name" t0 t1 t2 t3 cpu0=0 cpu1=0
  export RESTIC_CACHE_DIR=$cache
  restic -q -r "$repo" init >/dev/null
  [ -n "$spid" ] && cpu0=$(cpu "$spid")
  t0=$(now); restic -q -r "$repo" backup --host bench "$src" >/dev/null
  t1=$(now); [ -n "$spid" ] && cpu1=$(cpu "$spid")
  restic -q -r "$repo" backup --host bench "$src" >/dev/null
  t2=$(now)
  restic -q -r "$rrepo" restore latest --target "$target" >/dev/null
  t3=$(now)
  diff -r "$src" "$target$src" >/dev/null || { echo "bench-restic: $name restore differs" >&2; exit 1; }
  awk -v n="$name" -v t0="$t0" -v t1="$t1" -v t2="$t2" -v t3="$t3" -v c0="$cpu0" -v c1="$cpu1" -v s="$spid" 'BEGIN {
    printf "| %s | %.2f s | %.0f MiB/s | %s | %.2f s | %.2f s |\n", n, t1 - t0, 1047 / (t1 - t0),
      (s == "" ? "-" : sprintf("%.2f s", c1 - c0)), t2 - t1, t3 - t2 }'
  rm -rf "$target" "$cache"
}

echo "restic $(restic version | cut -d' ' -f2), $(nproc) cores, $(awk '/MemTotal/ {printf "%d MiB", $2/1024}' /proc/meminfo), dataset 1047 MiB (640 MiB unique)"
echo
echo "| server | backup (empty repo) | throughput | server CPU in backup | backup (unchanged) | restore |"
echo "|---|---|---|---|---|---|"

# The vault: its own database and data directory, plain HTTP on loopback.
psql -q "$VAULT_TEST_DATABASE_URL" -c "CREATE DATABASE $db" >/dev/null
"$bench/bin/vault" init --data-dir "$bench/vault" >/dev/null 2>&1
"$bench/bin/vault" serve --data-dir "$bench/vault" --database-url "$base/$db" --listen 127.0.0.1:18431 \
  --log-level warn >"$bench/vault.log" 2>&1 &
pids+=($!)
wait_port 18431 || { cat "$bench/vault.log" >&2; exit 1; }
agent=$("$bench/bin/vault" token issue --data-dir "$bench/vault" --database-url "$base/$db" --role agent --subject bench-agent --restic-repo bench --ttl 1h 2>/dev/null)
reader=$("$bench/bin/vault" token issue --data-dir "$bench/vault" --database-url "$base/$db" --role reader --subject bench-reader --restic-repo bench --ttl 1h 2>/dev/null)
run wormvault "rest:http://bench:$agent@127.0.0.1:18431/restic/bench/" \
  "rest:http://bench:$reader@127.0.0.1:18431/restic/bench/" "${pids[-1]}"

if [ -n "${REST_SERVER:-}" ]; then
  "$REST_SERVER" --path "$bench/rest-server" --no-auth --append-only --listen 127.0.0.1:18432 >"$bench/rest-server.log" 2>&1 &
  pids+=($!)
  wait_port 18432 || { cat "$bench/rest-server.log" >&2; exit 1; }
  run "rest-server --append-only" "rest:http://127.0.0.1:18432/" "rest:http://127.0.0.1:18432/" "${pids[-1]}"
fi

run "local repository (no HTTP)" "$bench/local" "$bench/local"
