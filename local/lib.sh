# Shared by local/up, local/test and local/bench: install what is missing, start servers.
# Sourced, not run. Everything it installs or keeps lives under .local/ (git-ignored).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/.local"
VENV="$STATE/venv"
MOTO_VERSION="5.2.5"
mkdir -p "$STATE"

log() { printf '[relay] %s\n' "$*" >&2; }

apt_install() {
  log "installing $* with apt-get"
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

ensure_redis() {
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
}

ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || { log "cargo not found: install Rust (rustup) first"; exit 1; }
}

# A venv with moto's DynamoDB-API server, pinned.
ensure_moto() {
  local installed=""
  [ -x "$VENV/bin/pip" ] && installed="$("$VENV/bin/pip" show moto 2>/dev/null || true)"
  if [ ! -x "$VENV/bin/moto_server" ] || ! grep -q "^Version: $MOTO_VERSION\$" <<<"$installed"; then
    log "installing moto[server]==$MOTO_VERSION into .local/venv"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  fi
  export MOTO_SERVER="$VENV/bin/moto_server"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # host port seconds
  local deadline=$((SECONDS + ${3:-30}))
  until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { log "nothing answers on $1:$2"; return 1; }
    sleep 0.2
  done
}

PIDS=()
# A negative pid stands for a whole process group (a server that starts children of its own).
stop_all() {
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill -- "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && wait "${pid#-}" 2>/dev/null || true
  done
}

start_redis() { # port dir
  mkdir -p "$2"
  redis-server --port "$1" --bind 127.0.0.1 --dir "$2" --save "" --appendonly no \
    --logfile "$2/redis.log" --daemonize no >/dev/null &
  PIDS+=($!)
  wait_port 127.0.0.1 "$1" 20
}

start_moto() { # port dir
  mkdir -p "$2"
  "$MOTO_SERVER" -H 127.0.0.1 -p "$1" >"$2/moto.log" 2>&1 &
  PIDS+=($!)
  wait_port 127.0.0.1 "$1" 60
}

# Dummy credentials: moto accepts any; real AWS credentials are never needed locally.
local_aws_env() {
  export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-local}"
  export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-local}"
  export AWS_REGION="${AWS_REGION:-us-east-1}"
}

# A development JWT secret, generated once and kept under .local/ (never committed).
dev_secret() {
  local f="$STATE/jwt_secret"
  [ -s "$f" ] || { python3 -c 'import secrets; print(secrets.token_urlsafe(48))' >"$f"; chmod 600 "$f"; }
  cat "$f"
}
