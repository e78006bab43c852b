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

# The test servers are stopped when this script ends, however it ends.
s3_dir= smtp_dir=
stop_servers() {
  [ -n "$s3_dir" ] && { scripts/s3-down.sh "$s3_dir" >/dev/null 2>&1 || true; }
  [ -n "$smtp_dir" ] && { scripts/smtp-down.sh "$smtp_dir" >/dev/null 2>&1 || true; }
  return 0
}
trap stop_servers EXIT

# The S3 test server (Ceph RGW on loopback), unless the caller points the tests at one already.
if [ -z "${REVERSA_TEST_S3_ENDPOINT:-}" ]; then
  s3_dir=${REVERSA_S3_DIR:-target/s3-test}
  # One retry: a first start on a loaded machine occasionally loses the OSD's registration.
  s3_env=$(scripts/s3-up.sh "$s3_dir") || s3_env=$(scripts/s3-up.sh "$s3_dir")
  eval "$s3_env"
fi

# The SMTP test server (aiosmtpd on loopback, STARTTLS required), unless the caller gives one.
if [ -z "${REVERSA_TEST_SMTP:-}" ]; then
  smtp_dir=${REVERSA_SMTP_DIR:-target/smtp-test}
  # aiosmtpd comes from PyPI into a virtualenv, which needs Python's venv module.
  python3 -c 'import ensurepip' 2>/dev/null || need_pkg_anyway python3-venv
  smtp_env=$(scripts/smtp-up.sh "$smtp_dir")
  eval "$smtp_env"
fi

cargo test --locked "$@"
