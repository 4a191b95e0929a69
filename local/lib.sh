# Shared by local/up, local/test and local/bench: install what is missing, start servers.
# Sourced, not run. Everything it installs or keeps lives under .local/ (git-ignored).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/.local"
# What ./local/up keeps across restarts (Redis' append-only file, the DynamoDB database file, the
# attachments' objects, the development JWT and S3 secrets); only ./local/up --reset deletes it.
DATA="${RELAY_DATA_DIR:-$STATE}"
VENV="$STATE/venv"
MOTO_VERSION="5.2.5"
FUZZ_VENV="$STATE/venv-fuzz"
SCHEMATHESIS_VERSION="4.32.5"
# The local S3-API server (attachments): s3s-fs from crates.io, built into .local/s3s/. It checks
# SigV4 signatures (presigned URLs included), their expiry and the signed Content-Length, which
# is what bounds an attachment's size. 0.17 needs a newer rustc than the workspace's.
S3S_VERSION="0.14.1"
S3S_ROOT="$STATE/s3s"
# The bucket ./local/up and ./local/test give the gateway (a directory under the server's root).
LOCAL_BUCKET="relay-attachments"
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

# Debian's Prometheus (prometheus and promtool), for ./local/up --monitor and the monitoring test.
ensure_prometheus() {
  command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || apt_install prometheus
}

# Prometheus on 127.0.0.1:PORT scraping the gateway's management listener TARGET (HOST:PORT) every
# SCRAPE seconds with the rules of infra/prometheus/rules.yml; its database in DIR (kept: a restart
# keeps the history), its configuration in DIR.yml and its log in DIR.log.
start_prometheus() { # port dir target [scrape_secs]
  local port="$1" dir="$2" target="$3" every="${4:-5}s"
  mkdir -p "$dir"
  cat >"$dir.yml" <<YAML
# Written by ./local/up --monitor at each start.
global:
  scrape_interval: $every
  evaluation_interval: $every
rule_files:
  - $ROOT/infra/prometheus/rules.yml
scrape_configs:
  - job_name: relay-gateway
    static_configs:
      - targets: ['$target']
YAML
  prometheus --config.file="$dir.yml" --storage.tsdb.path="$dir" \
    --web.listen-address="127.0.0.1:$port" >"$dir.log" 2>&1 9>&- &
  PIDS+=($!)
  wait_port 127.0.0.1 "$port" 30 || { log "Prometheus did not start; see $dir.log"; return 1; }
}

ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || { log "cargo not found: install Rust (rustup) first"; exit 1; }
}

# Installs a pinned PyPI package into a venv of its own unless that version is there already.
pip_tool() { # venv requirement package version executable
  local venv="$1" requirement="$2" package="$3" version="$4" exe="$5" installed=""
  [ -x "$venv/bin/pip" ] && installed="$("$venv/bin/pip" show "$package" 2>/dev/null || true)"
  if [ ! -x "$venv/bin/$exe" ] || ! grep -q "^Version: $version\$" <<<"$installed"; then
    log "installing $requirement into ${venv#"$ROOT"/}"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "$requirement"
  fi
}

# moto's DynamoDB-API server: the second engine of the DynamoDB adapter suite.
ensure_moto() {
  pip_tool "$VENV" "moto[server]==$MOTO_VERSION" moto "$MOTO_VERSION" moto_server
  export MOTO_SERVER="$VENV/bin/moto_server"
}

# schemathesis, the OpenAPI-driven fuzzer of tests/tests/contract.rs (a venv of its own,
# so that its dependencies and moto's are kept apart).
ensure_schemathesis() {
  pip_tool "$FUZZ_VENV" "schemathesis==$SCHEMATHESIS_VERSION" schemathesis "$SCHEMATHESIS_VERSION" schemathesis
  export RELAY_SCHEMATHESIS="$FUZZ_VENV/bin/schemathesis"
}

# s3s-fs, the local S3-API server: installed with cargo into .local/s3s/ unless that version is
# there already (one install at a time: concurrent ./local/up share the lock).
ensure_s3() {
  local exe="$S3S_ROOT/bin/s3s-fs"
  if [ "$("$exe" --version 2>/dev/null || true)" != "s3s-fs $S3S_VERSION" ]; then
    ensure_cargo
    (
      flock 8
      if [ "$("$exe" --version 2>/dev/null || true)" != "s3s-fs $S3S_VERSION" ]; then
        log "installing s3s-fs $S3S_VERSION into ${S3S_ROOT#"$ROOT"/} (cargo install, a few minutes once)"
        cargo install --quiet --locked --force --root "$S3S_ROOT" s3s-fs --version "$S3S_VERSION" \
          --features binary
      fi
    ) 8>"$STATE/s3s-install.lock"
  fi
  export RELAY_S3_SERVER="$exe"
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

start_redis() { # port dir [persist]
  mkdir -p "$2"
  local keep=(--appendonly no)
  # Append-only file, fsynced every second: a restart keeps everything; a crash of the machine
  # loses at most about the last second of writes (a killed process loses nothing written).
  [ "${3:-}" = persist ] && keep=(--appendonly yes --appendfsync everysec --appenddirname appendonlydir)
  # noeviction: revocations and rate-limit buckets must never be evicted (docs/api.md §7.4).
  redis-server --port "$1" --bind 127.0.0.1 --dir "$2" --save "" "${keep[@]}" \
    --maxmemory-policy noeviction \
    --logfile "$2/redis.log" --daemonize no >/dev/null 9>&- &
  PIDS+=($!)
  wait_port 127.0.0.1 "$1" 20
}

# s3s-fs on 127.0.0.1:PORT serving the buckets under DIR (kept there: a bucket is a directory,
# an object a file), with bucket BUCKET (default LOCAL_BUCKET) created; it accepts requests signed
# with the credentials of local_aws_env (call that first) and nothing else. Log in DIR.log.
start_s3() { # port dir [bucket]
  mkdir -p "$2/${3:-$LOCAL_BUCKET}"
  # `--key=value`: a random secret may begin with `-`, which would read as an option.
  RUST_LOG=error "${RELAY_S3_SERVER:-$S3S_ROOT/bin/s3s-fs}" --host 127.0.0.1 --port "$1" \
    "--access-key=$AWS_ACCESS_KEY_ID" "--secret-key=$AWS_SECRET_ACCESS_KEY" -- "$2" \
    >"${2%/}.log" 2>&1 9>&- &
  PIDS+=($!)
  wait_port 127.0.0.1 "$1" 20
}

# Local credentials, whatever the shell exported (real AWS credentials are never needed locally):
# the DynamoDB engines accept any; the local S3 server accepts only these. The access key id is
# public (every presigned URL carries it), so the secret is random, generated once per data
# directory like the JWT secret; a fixed one would let anyone list, read, overwrite or delete
# the attachments. s3s-fs takes it on its command line (it reads no other source), so local
# users who can list processes can read it, as they can read the data directory.
local_aws_env() {
  export AWS_ACCESS_KEY_ID=local
  AWS_SECRET_ACCESS_KEY="$(kept_secret s3_secret)"
  export AWS_SECRET_ACCESS_KEY
  unset AWS_SESSION_TOKEN AWS_PROFILE
  export AWS_REGION="${AWS_REGION:-us-east-1}"
}

# A development JWT secret, generated once and kept under .local/ (never committed).
dev_secret() {
  kept_secret jwt_secret
}

# A random secret kept in $DATA/NAME (mode 600), made the first time it is asked for.
kept_secret() { # name
  local f="$DATA/$1"
  mkdir -p "$DATA"
  [ -s "$f" ] || (umask 077 && random_secret >"$f")
  cat "$f"
}

# 48 random bytes, URL-safe base64 (64 characters).
random_secret() {
  head -c 48 /dev/urandom | base64 -w0 | tr '+/' '-_'
}

# A local Redis Cluster: PRIMARIES (default 3) primaries with one replica each, on free ports,
# created with `redis-cli --cluster create`, data and logs under DIR (wiped: a fresh cluster every
# time). Sets REDIS_CLUSTER_SEEDS to the comma-separated seed URLs, to run the relay with
# REDIS_URL="$REDIS_CLUSTER_SEEDS" REDIS_CLUSTER=true. The nodes join PIDS (stop_all stops them).
# REDIS_CLUSTER_NODE_TIMEOUT (ms, default 5000) is how long a silent primary waits for failover.
start_redis_cluster() { # dir [primaries]
  local dir="$1" primaries="${2:-3}" ports=() port bus i
  rm -rf "$dir"
  mkdir -p "$dir"
  for ((i = 0; i < primaries * 2; i++)); do
    port="$(free_port)" bus="$(free_port)" # the bus port named: port + 10000 may be taken
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir/$port" \
      --cluster-enabled yes --cluster-port "$bus" --cluster-config-file nodes.conf \
      --cluster-node-timeout "${REDIS_CLUSTER_NODE_TIMEOUT:-5000}" \
      --cluster-require-full-coverage no --save "" --appendonly no \
      --maxmemory-policy noeviction \
      --logfile "$dir/$port/redis.log" --daemonize no >/dev/null 9>&- &
    PIDS+=($!)
    ports+=("$port")
  done
  for port in "${ports[@]}"; do wait_port 127.0.0.1 "$port" 20 || return 1; done
  # shellcheck disable=SC2046 # one argument per node
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") \
    --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
    || { log "redis-cli --cluster create failed; see $dir/create.log"; return 1; }
  local deadline=$((SECONDS + 30)) info
  for port in "${ports[@]}"; do
    until info="$(redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null)" \
      && grep -q '^cluster_state:ok' <<<"$info" && grep -q '^cluster_slots_ok:16384' <<<"$info" \
      && grep -q "^cluster_known_nodes:${#ports[@]}" <<<"$info"; do
      [ $SECONDS -lt $deadline ] || { log "the Redis Cluster on ${ports[*]} is not ready"; return 1; }
      sleep 0.2
    done
  done
  REDIS_CLUSTER_SEEDS="$(printf 'redis://127.0.0.1:%s,' "${ports[@]}")"
  REDIS_CLUSTER_SEEDS="${REDIS_CLUSTER_SEEDS%,}"
  log "Redis Cluster: $primaries primaries + $primaries replicas on ports ${ports[*]}"
}
