#!/usr/bin/env bash
# Runs a command with a three-member etcd cluster of its own: members on free
# loopback ports, data in a temporary directory, all stopped and removed when
# the command ends (however it ends). The command gets the client endpoints
# as MARQUEE_TEST_ETCD=host:port,host:port,host:port, which the Rust tests'
# TestServer reads to put each server's store on that cluster.
#
#   scripts/on-etcd.sh cargo test -p marquee --test rest
set -euo pipefail

command -v etcd >/dev/null || { echo "on-etcd.sh: etcd is not installed (Debian: etcd-server)" >&2; exit 1; }
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/marquee-etcd.XXXXXX")
pids=()
stop() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap stop EXIT

# Nine ports nobody listens on, picked by binding to port 0 (the kernel's
# choice), held until all are picked so none repeats.
read -r -a ports < <(node -e '
const net = require("net");
const held = [];
for (let i = 0; i < 9; i++) {
  const server = net.createServer();
  server.listen(0, "127.0.0.1", () => {
    held.push(server);
    if (held.length === 9) {
      console.log(held.map((s) => s.address().port).join(" "));
      held.forEach((s) => s.close());
    }
  });
}')

cluster=""
for i in 0 1 2; do
    cluster+="${cluster:+,}m$i=http://127.0.0.1:${ports[$((3 * i + 1))]}"
done
endpoints=""
for i in 0 1 2; do
    client=${ports[$((3 * i))]} peer=${ports[$((3 * i + 1))]} metrics=${ports[$((3 * i + 2))]}
    endpoints+="${endpoints:+,}127.0.0.1:$client"
    etcd --name "m$i" --data-dir "$dir/m$i" \
        --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --listen-metrics-urls "http://127.0.0.1:$metrics" \
        --initial-cluster "$cluster" --initial-cluster-token "marquee-$$" --initial-cluster-state new \
        --logger zap --log-outputs "$dir/m$i.log" &
    pids+=($!)
done

# Ready when every member answers /health with a leader elected (bash's own
# /dev/tcp: nothing else to install).
healthy() {
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    grep -q '"health":"true"' <&3
    local ok=$?
    exec 3<&-
    return $ok
}
for i in 0 1 2; do
    for _ in $(seq 100); do
        healthy "${ports[$((3 * i))]}" 2>/dev/null && break
        sleep 0.1
    done
done
echo "on-etcd.sh: three etcd members at $endpoints" >&2

MARQUEE_TEST_ETCD=$endpoints "$@"
