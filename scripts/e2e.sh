#!/usr/bin/env bash
# Starts the release build of Marquee on a free loopback port with a fresh
# data directory, runs the Playwright tests against it, and stops it.
#
# A fresh Marquee has no admin and prints a first-run setup link; the tests'
# `setup` project opens it (MARQUEE_SETUP_URL) to make the admin. With
# MARQUEE_ADMIN_PASSWORD set, the server makes that admin itself and the
# `setup` project signs in instead.
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
  # The first URL: the setup link's line has one too, and may come first.
  url=$(grep -o 'http://[0-9.:]*' "$out" | head -1 || true)
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$data/server.log"; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "marquee did not start"; cat "$data/server.log"; exit 1; }
mqtt=$(grep -o 'mqtt://[0-9.:]*' "$out" | head -1)
echo "Browser tests against $url (MQTT at $mqtt)"

setup_url=""
if [ -z "${MARQUEE_ADMIN_PASSWORD:-}" ]; then
  # Printed at start while no admin exists; the token is the #fragment.
  for _ in $(seq 1 50); do
    setup_url=$(grep -o 'http://[0-9.:]*/setup#[^[:space:]"]*' "$out" | head -1 || true)
    [ -n "$setup_url" ] && break
    sleep 0.1
  done
  [ -n "$setup_url" ] || { echo "marquee printed no setup link"; cat "$out"; exit 1; }
  echo "First-run setup link: ${setup_url%%#*}#…"
fi

cd end2end
rm -rf .auth
MARQUEE_URL="$url" MARQUEE_MQTT="${mqtt#mqtt://}" MARQUEE_SETUP_URL="$setup_url" npx playwright test || { echo "--- server log ---"; tail -50 "$data/server.log"; exit 1; }
