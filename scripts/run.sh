#!/usr/bin/env bash
# run.sh: `make run`. A local dev vault on 127.0.0.1:8420 with its own
# PostgreSQL, data under .devdb/vault, and ready-to-paste tokens.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
vault="$top/bin/vault"
export VAULT_DATA_DIR="${VAULT_DATA_DIR:-$top/.devdb/vault}"
export VAULT_LISTEN="${VAULT_LISTEN:-127.0.0.1:8420}"
if [ -z "${VAULT_DATABASE_URL:-}" ]; then
  eval "$(scripts/devdb.sh start | sed 's/^/export /')"
fi
export VAULT_DATABASE_URL

if [ ! -f "$VAULT_DATA_DIR/vault.json" ]; then
  "$vault" init --data-dir "$VAULT_DATA_DIR"
fi
"$vault" migrate >/dev/null 2>&1 || "$vault" migrate

issue() { "$vault" token issue --data-dir "$VAULT_DATA_DIR" --role "$1" --subject "$2" --ttl 24h 2>/dev/null; }
url="http://$VAULT_LISTEN"
cat <<MSG

wormvault dev vault: $url   (data: $VAULT_DATA_DIR)

Tokens (valid 24h). In another terminal, paste:

  export VAULT_URL=$url
  export AGENT=$(issue agent demo-agent)
  export READER=$(issue reader demo-reader)
  export AUDITOR=$(issue auditor demo-auditor)

More tokens: bin/vault token issue --data-dir $VAULT_DATA_DIR --role agent|reader|auditor|admin --subject NAME --ttl 24h

Try it:

  echo 'hello, vault' > hello.txt
  H=\$(bin/vault hash hello.txt)
  curl -sS -X PUT -H "Authorization: Bearer \$AGENT" --data-binary @hello.txt \$VAULT_URL/v1/chunks/\$H

Stop with Ctrl-C. The database keeps running: 'make db-stop' stops it.

MSG
exec "$vault" serve --log-format text
