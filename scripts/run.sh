#!/usr/bin/env bash
# run.sh: `make run`. A local dev vault on $VAULT_LISTEN (default
# 127.0.0.1:8420) with its own PostgreSQL, data under .devdb/vault, and
# ready-to-paste tokens.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
vault="$top/bin/vault"
export VAULT_DATA_DIR="${VAULT_DATA_DIR:-$top/.devdb/vault}"
export VAULT_LISTEN="${VAULT_LISTEN:-127.0.0.1:8420}"
# devdb.sh gives two roles: the schema owner migrates
# (VAULT_OWNER_DATABASE_URL), the runtime login vault_app serves
# (VAULT_DATABASE_URL). With your own VAULT_DATABASE_URL and no owner URL,
# that one role does both.
if [ -z "${VAULT_DATABASE_URL:-}" ]; then
  eval "$(scripts/devdb.sh start | sed 's/^/export /')"
fi
export VAULT_DATABASE_URL
owner_url=${VAULT_OWNER_DATABASE_URL:-$VAULT_DATABASE_URL}

# Three dev admins with personal keys (never do this for a real vault: each
# admin makes their own key with `vault admin keygen` on their own machine).
admins="$top/.devdb/admins"
if [ ! -f "$VAULT_DATA_DIR/vault.json" ]; then
  mkdir -p "$admins"
  for a in alice bob carol; do
    [ -f "$admins/$a.key" ] || "$vault" admin keygen --out "$admins/$a.key" >/dev/null 2>&1
  done
  "$vault" init --data-dir "$VAULT_DATA_DIR" --dev --deletion-delay "${VAULT_DELETION_DELAY:-1m}" --governance-delay 2m \
    --admin alice="$admins/alice.key.pub" --admin bob="$admins/bob.key.pub" --admin carol="$admins/carol.key.pub"
fi
VAULT_OWNER_DATABASE_URL=$owner_url "$vault" migrate >/dev/null 2>&1 || VAULT_OWNER_DATABASE_URL=$owner_url "$vault" migrate
# The server never holds the owner's credential.
unset VAULT_OWNER_DATABASE_URL VAULT_TEST_DATABASE_URL VAULT_TEST_RUNTIME_URL

# Tokens are registered in the database (vault token list shows them).
# The demo agent writes the walkthrough's sources and restic repository
# only; the demo reader reads every source (a restore token for one
# machine would be --source NAME).
issue() { "$vault" token issue --data-dir "$VAULT_DATA_DIR" --ttl 24h --role "$@" 2>/dev/null; }
url="http://$VAULT_LISTEN"
cat <<MSG

wormvault dev vault: $url   (data: $VAULT_DATA_DIR)

Tokens (valid 24h). In another terminal, paste:

  export VAULT_URL=$url
  export AGENT=$(issue agent --subject demo-agent --source db01,web01,laptop --restic-repo demo)
  export READER=$(issue reader --subject demo-reader --all-sources)
  export AUDITOR=$(issue auditor --subject demo-auditor)

Dev admins (personal signing keys; init enrolled them): $admins/{alice,bob,carol}.key
  sign with: bin/vault admin deletions approve ID --key $admins/bob.key

restic repositories: rest:http://restic:TOKEN@$VAULT_LISTEN/restic/REPO/ (an agent or reader token for --restic-repo REPO)

More tokens: bin/vault token issue --data-dir $VAULT_DATA_DIR --database-url \$VAULT_DATABASE_URL --role agent|reader|auditor|admin|metrics --subject NAME --ttl 24h
  (agent and reader tokens: --source NAME and/or --restic-repo NAME)

Try it:

  echo 'hello, vault' > hello.txt
  H=\$(bin/vault hash hello.txt)
  curl -sS -X PUT -H "Authorization: Bearer \$AGENT" --data-binary @hello.txt \$VAULT_URL/v1/chunks/\$H

Stop with Ctrl-C. The database keeps running: 'make db-stop' stops it.

MSG
exec "$vault" serve --log-format text
