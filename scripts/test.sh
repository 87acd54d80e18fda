#!/usr/bin/env bash
# Runs every test of insitu on a fresh machine that has cargo, node/npm and python3.
# It installs what it needs itself: the npm tools (solc, OpenZeppelin, anvil) from the
# committed lock file, a Python venv with the pinned client libraries, and a second one
# with Feast's OpenLineage receiver. Then it checks
# that the committed contract artifacts match their sources, checks formatting and
# lints, and runs all tests. As root it installs Debian's postgresql for the Postgres
# catalog test.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# Build outputs live outside the clone so CI runs on the same machine reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/insitu/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A one-shot build gains nothing from incremental compilation, which costs disk (tens
# of GiB across the workspace's test targets) and time.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { printf '\n== %s\n' "$*"; }

step "shared data"
if [ -d ../shared ]; then
  echo "../shared found"
else
  echo "warning: ../shared is missing; tests that read shared data will say so"
fi

step "npm tools (solc, OpenZeppelin, anvil) from package-lock.json"
(cd ledger/contracts && npm ci --no-audit --no-fund --loglevel=error)

step "contract artifacts match their sources"
(cd ledger/contracts && node scripts/compile.mjs --check)

step "python venv for client tests"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r integration-tests/python/requirements.txt

step "python venv for the OpenLineage receiver (Feast's lineage server)"
if [ ! -x .venv-lineage/bin/python ]; then
  python3 -m venv .venv-lineage
fi
.venv-lineage/bin/python -m pip install --quiet --disable-pip-version-check -r integration-tests/python/lineage-requirements.txt

step "Debian packages: PostgreSQL server for the catalog tests"
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "PostgreSQL found"
elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  echo "installed PostgreSQL"
else
  echo "warning: no PostgreSQL server and no root to install it; the Postgres catalog test will fail"
fi

step "example compute algorithm (Rust, wasm32-wasip1)"
# The compute tests run it in the WASI sandbox. Where the target cannot be installed,
# they fall back to the hand-written examples/algorithms/fallback/input_size.wat.
if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 \
  || rustup target add wasm32-wasip1; then
  cargo build --release --locked --target wasm32-wasip1 \
    --manifest-path examples/algorithms/summary/Cargo.toml \
    --target-dir "$CARGO_TARGET_DIR/../wasm-target"
  export INSITU_EXAMPLE_WASM="$CARGO_TARGET_DIR/../wasm-target/wasm32-wasip1/release/insitu-example-summary.wasm"
  echo "built $INSITU_EXAMPLE_WASM"
  # The federated training tests run this module on every provider.
  cargo build --release --locked --target wasm32-wasip1 \
    --manifest-path examples/algorithms/train/Cargo.toml \
    --target-dir "$CARGO_TARGET_DIR/../wasm-target"
  export INSITU_TRAIN_WASM="$CARGO_TARGET_DIR/../wasm-target/wasm32-wasip1/release/insitu-example-train.wasm"
  echo "built $INSITU_TRAIN_WASM"
else
  echo "warning: the wasm32-wasip1 target is unavailable; compute tests use the .wat fallback"
fi

step "formatting and lints"
cargo fmt --all --check
cargo fmt --check --manifest-path examples/algorithms/summary/Cargo.toml
cargo fmt --check --manifest-path examples/algorithms/train/Cargo.toml
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build the insitu binary (the CLI tests run it)"
cargo build --locked -p insitu

step "tests"
cargo test --workspace --locked
