#!/usr/bin/env bash
# Install the browser test's pinned driver (playwright-core, tests/browser/package-lock.json)
# into tests/browser/node_modules: `npm ci`, so the lock file is the only truth. No browser is
# downloaded: playwright-core has no install step, and the test drives Debian's
# /usr/bin/chromium (packaging/install-deps.sh). A no-op when the pinned version is there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
want=1.65.2
pj="$here/node_modules/playwright-core/package.json"
if [ -f "$pj" ] && [ "$(node -p "require('$pj').version" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "browser-install: npm not found (apt-get install npm)" >&2; exit 1; }
echo "browser-install: installing playwright-core $want into $here/node_modules" >&2
cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
[ "$(node -p "require('$pj').version")" = "$want" ] || { echo "browser-install: did not get playwright-core $want" >&2; exit 1; }
