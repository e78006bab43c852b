#!/usr/bin/env bash
# The whole test suite, servers included: installs what the tests need (idempotently), starts the
# test servers on loopback, runs every test, and stops the servers again.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

need_cargo
# The export tests check archives with 7-Zip and workbooks with LibreOffice, as customers open them.
need_pkg 7zz 7zip
need_pkg soffice libreoffice-calc
need_pkg setpriv util-linux
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cargo test --locked "$@"
