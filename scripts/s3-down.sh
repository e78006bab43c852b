#!/usr/bin/env bash
# Stop the S3 test server that scripts/s3-up.sh started in DIR: TERM the daemons named by the pid
# files in DIR/run (only those), then wait, at most 20 s, until they are gone, so that a new
# s3-up.sh can bind the same ports. Idempotent: nothing running is not an error.
# usage: scripts/s3-down.sh DIR
set -uo pipefail
D=${1:?usage: s3-down.sh DIR}
pids=()
for n in client.rgw osd.0 mon.a; do
  p="$D/run/$n.pid"
  # The daemons may remove their pid files early while shutting down; keep what we read.
  if [ -f "$p" ]; then
    pid=$(cat "$p" 2>/dev/null || true)
    [ -n "$pid" ] && pids+=("$pid")
  fi
done
if [ ${#pids[@]} -eq 0 ]; then
  echo "s3-down: nothing running in $D" >&2
  exit 0
fi
kill "${pids[@]}" 2>/dev/null || true
for _ in $(seq 40); do
  alive=0
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  sleep 0.5
done
if [ $alive = 1 ]; then
  echo "s3-down: daemons still alive after 20 s, sending KILL: ${pids[*]}" >&2
  kill -9 "${pids[@]}" 2>/dev/null || true
  sleep 1
fi
rm -f "$D"/run/*.pid "$D/port"
echo "s3-down: stopped" >&2
