#!/bin/sh
# Initialise the vault on first start (a volume with no vault.json), then run
# the given vault command.
set -eu
: "${VAULT_DATA_DIR:=/var/lib/wormvault}"
export VAULT_DATA_DIR
if [ "${1:-}" = init ]; then
  shift
  exec vault init --data-dir "$VAULT_DATA_DIR" "$@"
fi
if [ ! -f "$VAULT_DATA_DIR/vault.json" ]; then
  vault init --data-dir "$VAULT_DATA_DIR"
fi
exec vault "$@"
