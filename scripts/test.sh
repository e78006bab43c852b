#!/usr/bin/env bash
# The whole test suite, servers included: installs what the tests need (idempotently), starts the
# test servers on loopback, runs every test, and stops the servers again.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

need_cargo
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cargo test --locked "$@"
