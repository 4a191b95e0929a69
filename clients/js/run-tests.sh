#!/usr/bin/env bash
# Runs the client library's tests (test/*.test.mjs): each test file starts a local stack of its
# own with ./local/up (free ports, a temporary data directory) and stops it at the end.
#   RELAY_GATEWAY_BIN  the gateway binary (default target/debug/local-gateway, built here with
#                      `cargo build -p local-gateway` when missing)
# Installs the pinned packages with `npm ci` only when node_modules is missing or older than
# package-lock.json. Extra arguments go to `node --test` (e.g. --test-name-pattern=refill, or
# test/refill.test.mjs).
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(cd ../.. && pwd)"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "clients/js: node and npm (Node 20 or newer) are required" >&2
  exit 1
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
  echo "clients/js: Node 20 or newer is required (found $(node --version))" >&2
  exit 1
fi

stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] ||
   ! node -e "import('@signalapp/libsignal-client').then(S => S.KEMKeyPair.generate())" >/dev/null 2>&1; then
  npm ci --no-audit --no-fund
fi

export RELAY_GATEWAY_BIN="${RELAY_GATEWAY_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/local-gateway}"
if [ ! -x "$RELAY_GATEWAY_BIN" ]; then
  echo "clients/js: building the gateway (cargo build -p local-gateway)" >&2
  (cd "$ROOT" && cargo build --quiet -p local-gateway)
fi

# Options go before the files (node --test reads what follows a file as files); with no file
# named, every test file runs.
if [ "$#" -gt 0 ]; then
  files=()
  for a in "$@"; do [[ "$a" == -* ]] || files+=("$a"); done
  [ "${#files[@]}" -gt 0 ] || set -- "$@" test/*.test.mjs
  exec node --test --test-timeout=180000 "$@"
fi
exec npm test
