#!/bin/sh
# Initialise the vault on first start (a volume with no vault.json), then run
# the given vault command. `migrate` and `health` run alone: they need no
# data directory (docker-compose.yml runs migrate as a one-shot service with
# the owner's URL).
#
# First start enrols the admins whose public keys are mounted in
# $VAULT_ADMIN_KEYS (default /keys): each NAME.pub becomes admin NAME (made
# with `vault admin keygen --out NAME.key` on the admin's own machine; an
# ssh-ed25519 .pub works too). A vault without admins can never delete
# anything, nor ever gain admins, so first start refuses to create one unless
# VAULT_INIT_WITHOUT_ADMINS=1 says that is what you want. VAULT_INIT_FLAGS
# adds flags to init (e.g. "--approvals 2 --deletion-delay 72h").
set -eu
: "${VAULT_DATA_DIR:=/var/lib/wormvault}"
: "${VAULT_ADMIN_KEYS:=/keys}"
export VAULT_DATA_DIR
case "${1:-}" in
  init)
    shift
    exec vault init --data-dir "$VAULT_DATA_DIR" "$@"
    ;;
  migrate|health|version)
    exec vault "$@"
    ;;
esac
# init_vault runs `vault init` with one --admin per mounted public key. A
# function has positional parameters of its own: the command's are kept.
init_vault() {
  set --
  for pub in "$VAULT_ADMIN_KEYS"/*.pub; do
    [ -f "$pub" ] || continue
    set -- "$@" --admin "$(basename "$pub" .pub)=$pub"
  done
  if [ $# -eq 0 ] && [ "${VAULT_INIT_WITHOUT_ADMINS:-}" != 1 ]; then
    echo "vault-entrypoint: no admin public keys (NAME.pub) in $VAULT_ADMIN_KEYS: a vault created without admins" >&2
    echo "vault-entrypoint: can never delete anything nor gain admins. Mount the keys, or set VAULT_INIT_WITHOUT_ADMINS=1." >&2
    exit 1
  fi
  # VAULT_INIT_FLAGS is split into words on purpose.
  # shellcheck disable=SC2086
  vault init --data-dir "$VAULT_DATA_DIR" ${VAULT_INIT_FLAGS:-} "$@"
}
if [ ! -f "$VAULT_DATA_DIR/vault.json" ]; then
  init_vault
fi
exec vault "$@"
