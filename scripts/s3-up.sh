#!/usr/bin/env bash
# Start a throwaway single-node S3 server for the tests: Ceph RADOS Gateway from Debian (the S3
# server many EU providers run), with one monitor and one RAM-backed OSD (memstore), no systemd,
# auth `none` between the daemons, everything bound to 127.0.0.1 and every file under DIR.
#
# usage: scripts/s3-up.sh DIR
#   env (all optional): REVERSA_S3_PORT (default: a free port, remembered in DIR/port),
#   REVERSA_S3_ACCESS_KEY, REVERSA_S3_SECRET_KEY, REVERSA_S3_REGION (default eu-south-1),
#   REVERSA_S3_MEMORY (memstore bytes, default 4 GiB).
# Prints `export VAR=value` lines for the endpoint and credentials on stdout (also written to
# DIR/env), so a caller can `eval "$(scripts/s3-up.sh DIR)"`; progress goes to stderr.
#
# Idempotent: if the gateway of DIR already answers, it only prints the environment again.
# Bounded: every wait has a timeout. scripts/s3-down.sh DIR stops it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

D=${1:?usage: s3-up.sh DIR}
mkdir -p "$D"
D=$(cd "$D" && pwd)
AK=${REVERSA_S3_ACCESS_KEY:-reversatestaccess0001}
SK=${REVERSA_S3_SECRET_KEY:-reversatestsecret000000000000000000000001}
REGION=${REVERSA_S3_REGION:-eu-south-1}
MEMORY=${REVERSA_S3_MEMORY:-4294967296}
export CEPH_CONF="$D/ceph.conf"

log() { echo "s3-up: $*" >&2; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A free loopback port at or after $1.
free_port() {
  local p=$1
  for _ in $(seq 200); do
    port_free "$p" && { echo "$p"; return 0; }
    p=$((p + 1))
  done
  echo "s3-up: no free port found from $1" >&2
  return 1
}

print_env() {
  cat >"$D/env" <<EOF
export REVERSA_TEST_S3_ENDPOINT=http://127.0.0.1:$PORT
export REVERSA_TEST_S3_REGION=$REGION
export AWS_ACCESS_KEY_ID=$AK
export AWS_SECRET_ACCESS_KEY=$SK
export AWS_REGION=$REGION
EOF
  cat "$D/env"
}

answers() { curl -sf -m 2 -o /dev/null "http://127.0.0.1:$1/"; }

if [ -f "$D/port" ] && [ -f "$D/run/client.rgw.pid" ] && kill -0 "$(cat "$D/run/client.rgw.pid")" 2>/dev/null \
  && answers "$(cat "$D/port")"; then
  PORT=$(cat "$D/port")
  log "already up: http://127.0.0.1:$PORT"
  print_env
  exit 0
fi

need_pkg curl curl
need_pkg radosgw radosgw ceph-mon ceph-osd ceph-common
need_pkg ceph-osd ceph-mon ceph-osd ceph-common

# Leftovers of an earlier run in DIR (only our own daemons, by their pid files).
"$here/s3-down.sh" "$D" >/dev/null 2>&1 || true

# Each folder gets its own ports (derived from its path, then the next free one), so two
# worktrees can run their tests at the same time.
base=$((20000 + $(printf '%s' "$D" | cksum | cut -d' ' -f1) % 20000))
PORT=${REVERSA_S3_PORT:-$(free_port "$base")}
MONPORT=$(free_port $((PORT + 1)))

# Wipe DIR only when it is ours (empty, or made by an earlier s3-up.sh), never another folder.
if [ -n "$(ls -A "$D")" ] && [ ! -f "$D/ceph.conf" ]; then
  log "$D is not empty and was not made by s3-up.sh; give an empty or new folder"
  exit 1
fi
find "$D" -mindepth 1 -delete
mkdir -p "$D"/{run,log,mon.a,osd0}
FSID=$(cat /proc/sys/kernel/random/uuid)
cat >"$CEPH_CONF" <<EOF
[global]
fsid = $FSID
mon host = v1:127.0.0.1:$MONPORT
public addr = 127.0.0.1
ms bind msgr2 = false
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon max pg per osd = 1000
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = $MEMORY
run dir = $D/run
log file = $D/log/\$name.log
admin socket = $D/run/\$name.asok
pid file = $D/run/\$name.pid
keyring = $D/keyring
mon data = $D/mon.\$id
osd data = $D/osd\$id
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$PORT
EOF

log "starting ceph-mon on 127.0.0.1:$MONPORT"
ceph-authtool --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
monmaptool --create --add a "v1:127.0.0.1:$MONPORT" --fsid "$FSID" "$D/monmap" >/dev/null
ceph-mon --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring"
ceph-mon -i a
timeout 30 ceph -s >/dev/null

log "starting ceph-osd (memstore, $MEMORY bytes)"
OSDUUID=$(cat /proc/sys/kernel/random/uuid)
ID=$(timeout 30 ceph osd new "$OSDUUID")
ceph-osd -i "$ID" --mkfs --osd-uuid "$OSDUUID" >"$D/log/osd-mkfs.out" 2>&1
ceph-osd -i "$ID" >"$D/log/osd-start.out" 2>&1 || { sleep 2; ceph-osd -i "$ID" >>"$D/log/osd-start.out" 2>&1; }
up=0
for _ in $(seq 60); do
  timeout 10 ceph osd stat 2>/dev/null | grep -q '1 up' && { up=1; break; }
  sleep 1
done
[ $up = 1 ] || { log "the OSD did not come up in 60 s; see $D/log"; exit 1; }

# `user create` initializes the default zone and zonegroup. The zonegroup's api_name is the
# region S3 clients see: without it CreateBucket with LocationConstraint=$REGION is refused.
timeout 60 radosgw-admin user create --uid=ci --display-name=ci --access-key="$AK" --secret-key="$SK" >/dev/null
timeout 60 radosgw-admin zonegroup modify --rgw-zonegroup=default --api-name="$REGION" >/dev/null

log "starting radosgw on 127.0.0.1:$PORT"
radosgw -n client.rgw
for _ in $(seq 60); do
  answers "$PORT" && break
  sleep 1
done
answers "$PORT" || { log "radosgw does not answer on port $PORT after 60 s:"; tail -20 "$D/log/client.rgw.log" >&2; exit 1; }
echo "$PORT" >"$D/port"
log "up: http://127.0.0.1:$PORT region=$REGION access key id=$AK"
print_env
