#!/usr/bin/env bash
# Check that the default `arcane` binary stays slim: built with only its default features
# (blob-landing and generator on the local store) it must not compile a cloud SDK, a database
# or broker client, the Kubernetes client or the HTTP client. Fast: `cargo tree` only.
#
#   scripts/check-slim-deps.sh                  # the default features
#   scripts/check-slim-deps.sh --features s3    # extra args go to `cargo tree`
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

tree="$(cargo tree --locked -p arcane-cli -e normal --prefix none -f '{p} {f}' "$@")"
failed=0
forbid() { # pattern, what
  if hits="$(grep -E "$1" <<<"$tree" | sort -u)" && [ -n "$hits" ]; then
    printf 'slim arcane binary compiles %s:\n%s\n' "$2" "$hits" >&2
    failed=1
  fi
}
# object_store's cloud features (the local `fs` store is fine).
forbid '^object_store v[^ ]+ .*\b(aws|azure|gcp)\b' 'a cloud object store (object_store aws/azure/gcp)'
forbid '^(tokio-postgres|postgres-protocol) ' 'the PostgreSQL client'
forbid '^(async-nats|amqprs|rumqttc) ' 'a message-broker client'
forbid '^(kube|kube-client|kube-core) ' 'the Kubernetes client (kube)'
forbid '^reqwest ' 'the HTTP client (reqwest)'
forbid '^arcane-sinks v[^ ]+ .*\bdelta\b' 'the Delta Lake table format (arcane-sinks delta)'
forbid '^arcane-sinks v[^ ]+ .*\biceberg\b' 'the Apache Iceberg table format (arcane-sinks iceberg)'
if [ "$failed" != 0 ]; then
  echo "move the dependency behind a feature of arcane-cli (see the [features] of arcane-cli/Cargo.toml)" >&2
  exit 1
fi
echo "slim arcane binary: no cloud store, database, broker, kube or reqwest client ($(sort -u <<<"$tree" | wc -l) crates)"
