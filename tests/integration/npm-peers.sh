#!/usr/bin/env bash
# Install the pinned upstream test peers (kinesalite, s3rver) and the lake reader of `make chaos`
# (@duckdb/node-api, a real query engine over the lake folder) from tests/package-lock.json into
# tests/node_modules. A no-op when the pinned versions are already there, so `make integration`
# can call it every time; `npm ci` (not `npm install`) so the lock file is the only truth.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
want() { # want PKG VERSION: true when node_modules holds exactly that version
  local pj="$here/node_modules/$1/package.json"
  [ -f "$pj" ] && [ "$(node -p "require('$pj').version" 2>/dev/null)" = "$2" ]
}
if want kinesalite 3.3.3 && want s3rver 3.7.1 && want @duckdb/node-api 1.5.6-r.1; then
  exit 0
fi
command -v npm >/dev/null || { echo "npm-peers: npm not found (apt-get install npm)" >&2; exit 1; }
echo "npm-peers: installing kinesalite 3.3.3, s3rver 3.7.1 and @duckdb/node-api 1.5.6-r.1 into $here/node_modules" >&2
cd "$here" && npm ci --no-audit --no-fund --loglevel=error
want kinesalite 3.3.3 && want s3rver 3.7.1 && want @duckdb/node-api 1.5.6-r.1 || { echo "npm-peers: install did not yield the pinned versions" >&2; exit 1; }
