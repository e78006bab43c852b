#!/usr/bin/env bash
# Stop the SMTP test server that scripts/smtp-up.sh started in DIR. Idempotent.
# usage: scripts/smtp-down.sh DIR
set -uo pipefail
D=${1:?usage: smtp-down.sh DIR}
[ -f "$D/pid" ] || exit 0
pid=$(cat "$D/pid")
kill "$pid" 2>/dev/null || true
for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
rm -f "$D/pid"
