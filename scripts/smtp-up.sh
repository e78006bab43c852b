#!/usr/bin/env bash
# Start the SMTP test server: Python's aiosmtpd (from PyPI, in a virtualenv under DIR/../py) on
# loopback, with STARTTLS required, under a self-signed certificate made here; every message it
# receives lands in the maildir DIR/maildir. Prints the environment the tests read. Idempotent:
# a server already running from DIR is reused.
# usage: eval "$(scripts/smtp-up.sh DIR)"
set -euo pipefail
D=${1:?usage: smtp-up.sh DIR}
mkdir -p "$D"
D=$(cd "$D" && pwd)
# One virtualenv for the tests' Python tools: aiosmtpd, and jsonschema, which checks the
# documented JSON schemas against real output.
venv=$(mkdir -p "$D/../py" && cd "$D/../py" && pwd)
if ! "$venv/bin/python" -c 'import aiosmtpd, jsonschema' 2>/dev/null; then
  echo "smtp-up: installing aiosmtpd and jsonschema into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q 'aiosmtpd==1.4.*' 'jsonschema>=4.18,<5' >&2
fi
# A private CA (what the tests trust, as notices.smtp_ca_file) and the server's certificate
# signed by it: TLS verifiers refuse a CA certificate used as the server's own.
if [ ! -f "$D/cert.pem" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=reversa test CA" \
    -keyout "$D/ca-key.pem" -out "$D/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$D/key.pem" -out "$D/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$D/ext"
  openssl x509 -req -in "$D/server.csr" -CA "$D/ca.pem" -CAkey "$D/ca-key.pem" -CAcreateserial -days 30 \
    -extfile "$D/ext" -out "$D/cert.pem" 2>/dev/null
fi
emit() {
  echo "export REVERSA_TEST_SMTP=127.0.0.1:$(cat "$D/port")"
  echo "export REVERSA_TEST_SMTP_CA=$D/ca.pem"
  echo "export REVERSA_TEST_SMTP_MAILDIR=$D/maildir"
  echo "export REVERSA_TEST_PYTHON=$venv/bin/python"
}
if [ -f "$D/pid" ] && kill -0 "$(cat "$D/pid")" 2>/dev/null; then
  echo "smtp-up: already up on $(cat "$D/port")" >&2
  emit
  exit 0
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "$port" > "$D/port"
nohup "$venv/bin/python" -m aiosmtpd -n -l "127.0.0.1:$port" --tlscert "$D/cert.pem" --tlskey "$D/key.pem" \
  -c aiosmtpd.handlers.Mailbox "$D/maildir" > "$D/log" 2>&1 &
echo $! > "$D/pid"
for _ in $(seq 100); do
  if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
    echo "smtp-up: up on 127.0.0.1:$port" >&2
    emit
    exit 0
  fi
  sleep 0.1
done
echo "smtp-up: aiosmtpd did not start; its log:" >&2
cat "$D/log" >&2
exit 1
