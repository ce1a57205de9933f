#!/usr/bin/env bash
# Regenerate deploy/chart/crds/ from the `arcane` binary's kinds (`arcane crd KIND`; the binary
# built with every kind, `--features full`), rewrite the table of kinds in deploy/README.md, and
# print the `kinds:` list for deploy/chart/values.yaml. The chart and arcane-deploy tests fail
# while any of them is out of date.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The suite's own build (the same features, dev-dependencies included): a plain `cargo build`
# would resolve features differently and compile the dependencies a second time.
cargo nextest run --workspace --all-features --no-run >&2
bin="${CARGO_TARGET_DIR:-target}/debug/arcane"
rm -f deploy/chart/crds/*.yaml
echo "kinds:"
for kind in $("$bin" kinds --json | python3 -c 'import json,sys; print(" ".join(k["name"] for k in json.load(sys.stdin)))'); do
  crd="$("$bin" crd "$kind")"
  plural="$(printf '%s\n' "$crd" | sed -n 's/^    plural: //p' | head -1)"
  crd_kind="$(printf '%s\n' "$crd" | sed -n 's/^    kind: //p' | head -1)"
  printf '%s\n' "$crd" > "deploy/chart/crds/$plural.yaml"
  printf '  - kind: %s\n    crdKind: %s\n    plural: %s\n' "$kind" "$crd_kind" "$plural"
  # A kind whose source has an `address` receives pushed data (KindManifest::push_endpoint).
  if printf '%s\n' "$crd" | grep -q '^                  address:$'; then
    printf '    pushEndpoint: true\n'
  fi
  printf '    secretRefs:\n      - storageSecretRef\n      - sourceSecretRef\n'
done
ARCANE_BLESS=1 cargo nextest run --workspace --all-features -E 'binary(chart) | package(arcane-deploy)' >&2
