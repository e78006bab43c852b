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
# Certificates are printed in a real browser, and the PDF read back, as an auditor would.
need_pkg chromium chromium
need_pkg pdftotext poppler-utils
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

# The S3 test server (Ceph RGW on loopback), unless the caller points the tests at one already.
# It is stopped when this script ends, however it ends.
if [ -z "${REVERSA_TEST_S3_ENDPOINT:-}" ]; then
  s3_dir=${REVERSA_S3_DIR:-target/s3-test}
  trap 'scripts/s3-down.sh "$s3_dir" >/dev/null 2>&1 || true' EXIT
  # One retry: a first start on a loaded machine occasionally loses the OSD's registration.
  s3_env=$(scripts/s3-up.sh "$s3_dir") || s3_env=$(scripts/s3-up.sh "$s3_dir")
  eval "$s3_env"
fi

cargo test --locked "$@"
