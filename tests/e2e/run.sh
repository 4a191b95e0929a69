#!/usr/bin/env bash
# Runs the libsignal end-to-end suite against a running relay.
#   RELAY_URL  base URL of the relay (default http://127.0.0.1:8080); the
#              WebSocket URL is derived from it (ws://HOST/ws) unless
#              RELAY_WS_URL is set.
# The clients are the client library's (clients/js): its pinned packages are installed with
# `npm ci` there only when its node_modules is missing or older than its package-lock.json.
# This suite has no dependencies of its own. Extra arguments go to `node --test`
# (e.g. ./run.sh --test-name-pattern=Kyber).
set -euo pipefail
cd "$(dirname "$0")"
export RELAY_URL="${RELAY_URL:-http://127.0.0.1:8080}"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "e2e: node and npm (Node 20 or newer) are required" >&2
  exit 1
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
  echo "e2e: Node 20 or newer is required (found $(node --version))" >&2
  exit 1
fi

# npm ci in DIR when its node_modules is missing, older than its lockfile, or (libsignal) broken.
npm_ci_if_stale() { # dir [module to import]
  local stamp="$1/node_modules/.package-lock.json"
  if [ ! -f "$stamp" ] || [ "$1/package-lock.json" -nt "$stamp" ] ||
     { [ -n "${2:-}" ] && ! (cd "$1" && node -e "import('$2').then(S => S.KEMKeyPair.generate())") >/dev/null 2>&1; }; then
    (cd "$1" && npm ci --no-audit --no-fund)
  fi
}
npm_ci_if_stale ../../clients/js @signalapp/libsignal-client
if node -e 'process.exit(Object.keys(require("./package.json").dependencies || {}).length ? 0 : 1)'; then
  npm_ci_if_stale .
fi

echo "e2e: relay at $RELAY_URL"
# Wait once here (RELAY_WAIT_MS, default 30 s) so a missing relay fails fast,
# then let each test file re-check only briefly.
node --input-type=module -e "import { waitForRelay } from './lib/relay.mjs'; await waitForRelay(Number(process.env.RELAY_WAIT_MS || 30000)).catch((e) => { console.error('e2e: ' + e.message); process.exit(1); });" || {
  exit 1
}
export RELAY_WAIT_MS=5000
if [ "$#" -gt 0 ]; then
  exec npm test -- "$@"
fi
exec npm test
