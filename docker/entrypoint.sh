#!/bin/sh
# Initialise the vault on first start (a volume with no vault.json), then run
# the given vault command. `migrate` runs alone: it needs no data directory
# (docker-compose.yml runs it as a one-shot service with the owner's URL).
set -eu
: "${VAULT_DATA_DIR:=/var/lib/wormvault}"
export VAULT_DATA_DIR
case "${1:-}" in
  init)
    shift
    exec vault init --data-dir "$VAULT_DATA_DIR" "$@"
    ;;
  migrate)
    exec vault "$@"
    ;;
esac
if [ ! -f "$VAULT_DATA_DIR/vault.json" ]; then
  vault init --data-dir "$VAULT_DATA_DIR"
fi
exec vault "$@"
