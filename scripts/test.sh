#!/usr/bin/env bash
# Run every test, after installing what the tests need when it is missing: redis-server (every black-box
# test starts its own on free ports), etcd (the etcd route source's tests) and Chromium with its WebDriver
# (the dashboard's browser test). Installing needs root and apt-get; without them, a missing tool is named
# and the script stops. Extra arguments go to `cargo test` (e.g. `bash scripts/test.sh --test hardening`).
set -euo pipefail
cd "$(dirname "$0")/.."

# command  package
needs=(
  "redis-server redis-server"
  "redis-cli redis-tools"
  "etcd etcd-server"
  "chromium chromium"
  "chromedriver chromium-driver"
  "prlimit util-linux"
)
missing=()
for need in "${needs[@]}"; do
  read -r cmd pkg <<<"$need"
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: missing ${missing[*]}; install them (apt-get install -y ${missing[*]}) or run as root" >&2
    exit 1
  fi
  echo "--- installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo test --locked "$@"
