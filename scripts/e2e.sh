#!/usr/bin/env bash
# Starts the release build of Marquee on a free loopback port with a fresh
# data directory, runs the Playwright tests against it, and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

data=$(mktemp -d)
out=$(mktemp)
./target/release/marquee --data-dir "$data/data" --http 127.0.0.1:0 --mqtt 127.0.0.1:0 >"$out" 2>"$data/server.log" &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$data" "$out"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  url=$(grep -o 'http://[0-9.:]*' "$out" || true)
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$data/server.log"; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "marquee did not start"; cat "$data/server.log"; exit 1; }
mqtt=$(grep -o 'mqtt://[0-9.:]*' "$out" | head -1)
echo "Browser tests against $url (MQTT at $mqtt)"

cd end2end
MARQUEE_URL="$url" MARQUEE_MQTT="${mqtt#mqtt://}" npx playwright test || { echo "--- server log ---"; tail -50 "$data/server.log"; exit 1; }
