#!/usr/bin/env bash
# Run the cargo steps of deploy/Dockerfile outside Docker, in a temporary directory laid out
# like the image's stages, to check them where no Docker engine is available. The commands are
# read from the Dockerfile itself (its `RUN ... cargo ...` lines, without the BuildKit
# `--mount` options), so they cannot drift from what the image runs.
#
#   scripts/docker-steps.sh          # short: plan, lay out the dependency skeleton, and check
#                                    # that it resolves to the same dependencies as the real
#                                    # build (`cargo tree`, seconds); run by scripts/test.sh
#   scripts/docker-steps.sh --full   # also compile: cook the dependencies, then build the
#                                    # binary and report what the second step recompiled
#                                    # (a cold release build: many minutes)
#
# Needs cargo-chef (installed with `cargo install --locked cargo-chef` into
# $ARCANE_TOOLS_DIR/cargo-chef when missing, at the version the Dockerfile pins).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dockerfile="$root/deploy/Dockerfile"
full=0
[ "${1:-}" = "--full" ] && full=1
log() { printf '[docker-steps %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# The Dockerfile's RUN instructions, continuation lines joined, one per line.
runs="$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$dockerfile" | sed -n 's/^RUN //p' | sed -E 's/--mount=[^ ]+ *//g; s/  +/ /g; s/^ //')"
step() { # the RUN line containing $1
  local line
  line="$(grep -F -- "$1" <<<"$runs" | head -1)"
  [ -n "$line" ] || { log "deploy/Dockerfile has no RUN step with '$1'"; exit 1; }
  printf '%s\n' "$line"
}
install_step="$(step 'cargo install --locked cargo-chef')"
prepare="$(step 'cargo chef prepare')"
cook="$(step 'cargo chef cook')"
build="$(step 'cargo build')"
build="${build%% && *}" # the install of the binary into /out is the image's business
chef_version="$(sed -n 's/^ARG CARGO_CHEF_VERSION=//p' "$dockerfile")"

# cargo-chef, at the Dockerfile's version.
tools="${ARCANE_TOOLS_DIR:-$root/.tools}"
chef_root="$tools/cargo-chef"
if ! PATH="$chef_root/bin:$PATH" cargo chef --version 2>/dev/null | grep -qF "$chef_version"; then
  log "installing cargo-chef $chef_version into $chef_root ($install_step)"
  cargo install --quiet --locked --root "$chef_root" cargo-chef --version "$chef_version"
fi
export PATH="$chef_root/bin:$PATH"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/arcane-docker-steps.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# COPY . . with the .dockerignore applied (.git, .tools, target): the tracked files plus the
# working tree's changes, written over the cooked skeleton (tar replaces the skeleton's files;
# `cp --parents` refused some of them with "File exists", leaving the skeleton's manifests).
copy_context() { # destination
  mkdir -p "$1"
  (cd "$root" && git ls-files -z --cached --others --exclude-standard \
    | grep -zvE '^(\.git|\.tools|target)/|/target/' \
    | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C "$1"
}

log "planner: $prepare"
copy_context "$tmp/planner"
(cd "$tmp/planner" && eval "$prepare")

mkdir -p "$tmp/builder"
cp "$tmp/planner/recipe.json" "$tmp/builder/recipe.json"
export CARGO_TARGET_DIR="$tmp/builder/target"
# Same dependency graph in the skeleton as in the real build: the cooked layer is what the
# binary's build reuses.
tree_args=$(sed -E 's/^cargo build //; s/--release//; s/--bin [^ ]+//' <<<"$build")
deps() { # the workspace's external dependencies with their features
  (cd "$1" && eval "cargo tree -e normal,build --prefix none -f '{p} {f}' $tree_args") \
    | grep -v ' (/' | sed 's/ (\*)//; s/ (proc-macro)//' | sort -u
}
if [ "$full" = 0 ]; then
  log "builder (skeleton only): $cook --no-build"
  (cd "$tmp/builder" && eval "$cook --no-build")
  deps "$tmp/builder" >"$tmp/skeleton.deps"
  copy_context "$tmp/builder"
  deps "$tmp/builder" >"$tmp/real.deps"
  if ! diff -u "$tmp/skeleton.deps" "$tmp/real.deps" >"$tmp/deps.diff"; then
    log "the cooked skeleton resolves to other dependencies than the build; the image would rebuild them:"
    cat "$tmp/deps.diff" >&2
    exit 1
  fi
  log "ok: the dependency layer ($(wc -l <"$tmp/skeleton.deps") crates) is the build's; --full compiles both steps"
  exit 0
fi

log "builder: $cook"
(cd "$tmp/builder" && eval "$cook")
copy_context "$tmp/builder"
log "builder: $build"
(cd "$tmp/builder" && eval "$build") 2>&1 | tee "$tmp/build.log" >&2
compiled="$(grep -E '^ *Compiling ' "$tmp/build.log" | awk '{print $2}' | sort -u | tr '\n' ' ')"
log "the build step after the dependency layer compiled: ${compiled:-nothing}"
if grep -E '^ *Compiling ' "$tmp/build.log" | grep -vq '(/'; then
  log "the build step recompiled dependencies: the cooked layer does not match the build"
  exit 1
fi
test -x "$CARGO_TARGET_DIR/release/arcane"
"$CARGO_TARGET_DIR/release/arcane" kinds >&2
log "ok"
